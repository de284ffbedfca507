//! The agent the workers run (`--agent command`, a small sh script) and its records. Each
//! run appends `start TASK ATTEMPT PID UPTIME` to `records.log` before doing anything and
//! `end TASK ATTEMPT PID UPTIME ok|fail` when it finishes, so a run killed midway has a start
//! and no end. On success it prints `ok task=T attempt=A pid=P`, which becomes the stored
//! result: the database then says which attempt produced it.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use orca_harness::shell::{shell_quote, write_script};

const AGENT: &str = r#"# orca-chaos agent: records each attempt ("start TASK ATTEMPT PID UPTIME", "end ... ok|fail"),
# sleeps a little, fails on purpose when the prompt says so, prints its attempt on success.
R=__RECORDS__
t=$ORCA_TASK_ID
a=$ORCA_ATTEMPT
read up _ < /proc/uptime
echo "start $t $a $$ $up" >> "$R"
case "$ORCA_PROMPT" in
  *kind=slow*) sleep 1 ;;
  *) case $(( (t * 7 + a) % 4 )) in 1) sleep 0.01 ;; 2) sleep 0.03 ;; 3) sleep 0.05 ;; esac ;;
esac
res=ok
case "$ORCA_PROMPT" in
  *kind=fail*) res=fail ;;
  *kind=flaky*) if [ "$a" = 1 ]; then res=fail; fi ;;
esac
read up _ < /proc/uptime
echo "end $t $a $$ $up $res" >> "$R"
if [ "$res" = ok ]; then
  echo "ok task=$t attempt=$a pid=$$"
  exit 0
fi
echo "failing on purpose: task=$t attempt=$a" >&2
exit 1"#;

/// The agent's files in the run directory.
pub struct AgentFiles {
    /// `records.log`.
    pub records: PathBuf,
    /// The workers' `--agent-command`.
    pub command: String,
}

/// Writes `agent.sh` and an empty `records.log` into `dir`.
pub fn write(dir: &Path) -> Result<AgentFiles> {
    let records = dir.join("records.log");
    std::fs::write(&records, "").with_context(|| format!("create {}", records.display()))?;
    let body = AGENT.replace("__RECORDS__", &shell_quote(&records.to_string_lossy()));
    let script = write_script(dir, "agent.sh", &body).context("write agent.sh")?;
    Ok(AgentFiles { records, command: format!("sh {}", shell_quote(&script.to_string_lossy())) })
}

/// One agent run from the records.
pub struct AgentRun {
    pub attempt: u32,
    /// Uptime at its start, in seconds.
    pub start: f64,
    /// Uptime at its end and whether it succeeded; None when it was killed midway.
    pub end: Option<(f64, bool)>,
}

impl AgentRun {
    pub fn succeeded(&self) -> bool {
        self.end.is_some_and(|e| e.1)
    }

    pub fn failed(&self) -> bool {
        self.end.is_some_and(|e| !e.1)
    }
}

/// Every task's runs, in record order, and how many lines did not parse or match a start.
pub struct Records {
    pub runs: HashMap<i64, Vec<AgentRun>>,
    pub malformed: usize,
}

pub fn read_records(path: &Path) -> Result<Records> {
    let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    let mut runs: HashMap<i64, Vec<AgentRun>> = HashMap::new();
    let malformed = text.lines().filter(|line| record(&mut runs, line).is_none()).count();
    Ok(Records { runs, malformed })
}

/// Adds one line to `runs`; None when it is malformed or an end without its start.
fn record(runs: &mut HashMap<i64, Vec<AgentRun>>, line: &str) -> Option<()> {
    let f: Vec<&str> = line.split(' ').collect();
    let t: i64 = f.get(1)?.parse().ok()?;
    let a: u32 = f.get(2)?.parse().ok()?;
    let up: f64 = f.get(4)?.parse().ok()?;
    match *f.first()? {
        "start" if f.len() == 5 => runs.entry(t).or_default().push(AgentRun { attempt: a, start: up, end: None }),
        "end" if f.len() == 6 => {
            let r = runs.get_mut(&t)?.iter_mut().rev().find(|r| r.attempt == a && r.end.is_none())?;
            r.end = Some((up, f[5] == "ok"));
        }
        _ => return None,
    }
    Some(())
}

/// The (pid, task) of every recorded agent start, each once.
pub fn recorded_pids(path: &Path) -> Vec<(i32, String)> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut seen = HashSet::new();
    text.lines()
        .filter_map(|line| {
            let v: Vec<&str> = line.split(' ').collect();
            (v.len() >= 4 && v[0] == "start").then_some(())?;
            Some((v[3].parse::<i32>().ok()?, v[1].to_string()))
        })
        .filter(|p| seen.insert(p.clone()))
        .collect()
}
