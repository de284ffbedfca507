//! Bounded work on the worker, end to end with the real binaries: processes that leave their
//! agent's process group (setsid, double fork) end with their task and with their worker; a
//! worker that cannot run its agent takes no work (it refuses to start, or hands attempts
//! back and stops taking work); kept workspaces are removed by age and size; a worker low on
//! disk takes no work. Readiness is read from files the agents write and from the logs,
//! never from a sleep.

use std::path::Path;
use std::time::{Duration, SystemTime};

use orca_e2e::workers::*;
use orca_e2e::*;
use orca_proto::pb;

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// Script lines that start a process in a session of its own (as a `nohup`-style dev server
/// does), writing its pid to `DIR/NAME` once it runs, and wait for that file.
fn escape(dir: &Path, name: &str) -> String {
    let f = format!("{}/{name}", p(dir));
    format!(
        "setsid sh -c 'echo $$ > \"{f}.tmp\"; mv \"{f}.tmp\" \"{f}\"; exec sleep 600' &\nwhile [ ! -s \"{f}\" ]; do sleep 0.02; done\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn escaped_processes_end_with_their_task_completed_timed_out_or_cancelled() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let coord = Coordinator::start(d, &[]);
    let mut c = coord.client().await;
    // The escaped process of each task records its pid in esc-TASK; "complete" exits then.
    let agent = script(
        d,
        "agent.sh",
        &format!(
            "{}case \"$ORCA_PROMPT\" in complete) echo done; exit 0;; esac\nsleep 600",
            escape(d, "esc-$ORCA_TASK_ID")
        ),
    );
    let _w =
        WorkerProc::start(&coord.url(), d, "w", &["--agent", "command", "--agent-command", p(&agent), "--slots", "3"]);
    let job = create_job(&mut c, "escapes").await;
    let ids = add(
        &mut c,
        &job,
        vec![spec("complete"), pb::TaskSpec { timeout_seconds: 3, ..spec("hang") }, spec("cancel me")],
    )
    .await;
    let files: Vec<_> = ids.iter().map(|i| d.join(format!("esc-{i}"))).collect();
    until("every escaped process to run", || files.iter().all(|f| f.exists())).await;
    let pids: Vec<i32> = files.iter().map(|f| read_pid(f)).collect();
    c.cancel_task(pb::CancelTaskRequest { task_id: ids[2], reason: "enough".into() }).await.unwrap();

    let status = wait_idle(&mut c, &job).await;
    assert_eq!((status.completed, status.failed, status.cancelled), (1, 1, 1), "{status:?}");
    assert!(task(&mut c, ids[1]).await.reason.contains("timed out after 3 s"));
    until_gone(&pids).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn escaped_processes_end_when_the_worker_is_killed() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let coord = Coordinator::start(d, &[]);
    let mut c = coord.client().await;
    // A double fork: the subshell that starts the escaped process exits at once.
    let agent = script(
        d,
        "agent.sh",
        &format!(
            "( {} ) &\nwait $!\necho $$ > \"{d}/agent.tmp\"; mv \"{d}/agent.tmp\" \"{d}/agent\"\nsleep 600",
            escape(d, "esc"),
            d = p(d)
        ),
    );
    let mut w = WorkerProc::start(&coord.url(), d, "w", &["--agent", "command", "--agent-command", p(&agent)]);
    let job = create_job(&mut c, "kill the worker").await;
    add(&mut c, &job, vec![spec("outlive me")]).await;
    until("the agent to run", || d.join("agent").exists()).await;
    let pids = [read_pid(&d.join("esc")), read_pid(&d.join("agent"))];
    assert!(!gone(pids[0]) && !gone(pids[1]));
    // SIGKILL: the lifeline closes, the supervisor takes everything down.
    w.kill();
    until_gone(&pids).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_cannot_run_its_agent_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut w =
        WorkerProc::start("http://127.0.0.1:9", d, "w", &["--agent", "command", "--agent-command", "/nonexistent"]);
    assert_eq!(w.wait().code(), Some(2), "{}", w.logs());
    let logs = w.logs();
    assert!(logs.contains("--agent-command: the program of --agent-command \"/nonexistent\" is not found"), "{logs}");

    // The default agent on a machine without `claude`.
    let out = std::process::Command::new(binary("orca-worker"))
        .args(["--work-dir", p(d)])
        .env("PATH", p(&d.join("empty")))
        .env_remove("ORCA_AGENT")
        .env_remove("ORCA_AGENT_COMMAND")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--agent: the claude binary \"claude\" is not found"), "{stderr}");
    assert!(stderr.contains("--agent-command"), "the message names the fix: {stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_gone_after_start_is_handed_back_and_its_worker_stops_taking_work() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let coord = Coordinator::start(d, &[]);
    let mut c = coord.client().await;
    let agent = script(d, "agent.sh", "printf 'ran on %s' \"$WORKER_NAME\"");
    let mut broken =
        WorkerProc::start(&coord.url(), d, "broken", &["--agent", "command", "--agent-command", p(&agent)]);
    broken.wait_log("connected to the coordinator").await;
    std::fs::remove_file(&agent).unwrap();

    let job = create_job(&mut c, "black hole").await;
    // No retries: a hand-back must not count as one.
    let id = add(&mut c, &job, vec![pb::TaskSpec { max_retries: Some(0), ..spec("work") }]).await[0];
    broken.wait_log("taking no work: the agent could not be started 3 times in a row").await;
    broken.wait_log("stream closed while taking no work").await;
    // The last hand-back is delivered once the coordinator saw the stream close.
    let t = pending(&mut c, id).await;
    assert!(t.reason.starts_with("handed back: worker cannot start its agent:"), "{}", t.reason);
    assert_eq!(t.attempts, 3);

    // Another worker runs it; the paused one takes nothing meanwhile.
    std::fs::create_dir(d.join("good")).unwrap();
    let good = script(&d.join("good"), "agent.sh", "printf 'ran on %s' \"$WORKER_NAME\"");
    let _ok = WorkerProc::start(&coord.url(), d, "ok", &["--agent", "command", "--agent-command", p(&good)]);
    assert_eq!(wait_idle(&mut c, &job).await.completed, 1);
    let t = task(&mut c, id).await;
    assert_eq!(t.result.unwrap().output, "ran on ok");
    assert!(broken.wait_within(Duration::ZERO).unwrap().is_none(), "the paused worker keeps running");

    // The program is back: the worker takes work again.
    script(d, "agent.sh", "printf 'ran on %s' \"$WORKER_NAME\"");
    broken.wait_log("taking work again").await;
}

/// Polls (bounded) until the task is pending again; returns it.
async fn pending(c: &mut pb::orchestrator_client::OrchestratorClient<tonic::transport::Channel>, id: i64) -> pb::Task {
    let start = std::time::Instant::now();
    loop {
        let t = task(c, id).await;
        if t.state == pb::TaskState::Pending as i32 {
            return t;
        }
        assert!(start.elapsed() < WAIT, "task {id} is not pending: {t:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Makes `WORK/JOB/NAME` with a file of `bytes`, its time stamp `age` ago.
fn workspace(work: &Path, job: &str, name: &str, bytes: usize, age: Duration) -> std::path::PathBuf {
    let ws = work.join(job).join(name);
    std::fs::create_dir_all(&ws).unwrap();
    std::fs::write(ws.join("data"), vec![7u8; bytes]).unwrap();
    std::fs::File::open(&ws).unwrap().set_modified(SystemTime::now() - age).unwrap();
    ws
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kept_workspaces_are_removed_by_age_and_by_the_work_dirs_bound() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let coord = Coordinator::start(d, &[]);
    let mut c = coord.client().await;
    let work = d.join("work-w");
    let hour = Duration::from_secs(3600);
    let old = workspace(&work, "job-a", "1-1", 10_000, 48 * hour);
    let older = workspace(&work, "job-b", "2-1", 3_000_000, 3 * hour);
    let newer = workspace(&work, "job-b", "3-1", 3_000_000, hour);
    std::fs::write(work.join("notes.txt"), "not a workspace").unwrap();
    // Each failed attempt keeps 3 MB; 4.29 MB (0.004 GiB) in all are allowed.
    let agent = script(d, "agent.sh", "head -c 3000000 /dev/zero > big\nexit 1");
    let args = ["--agent", "command", "--agent-command", p(&agent), "--max-work-dir-gb", "0.004"];
    let w = WorkerProc::start(&coord.url(), d, "w", &args);

    // At start: the one past 24 h, then the oldest of the rest while over the bound.
    until("the sweep at start", || !old.exists() && !older.exists()).await;
    assert!(newer.exists() && work.join("notes.txt").exists());
    assert!(!work.join("job-a").exists(), "an emptied job directory goes too");
    assert!(w.logs().contains("kept workspace removed"));

    // A failed attempt keeps its workspace; the next sweep makes room under the bound.
    let job = create_job(&mut c, "fails").await;
    let id = add(&mut c, &job, vec![spec("fill the disk")]).await[0];
    assert_eq!(wait_idle(&mut c, &job).await.failed, 1);
    let kept = work.join(&job).join(format!("{id}-1"));
    until("the older kept workspace to go", || !newer.exists()).await;
    assert!(kept.join("big").exists(), "the newest kept workspace stays");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_low_on_disk_takes_no_work_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let coord = Coordinator::start(d, &[]);
    let mut c = coord.client().await;
    let agent = script(d, "agent.sh", &format!("echo \"$WORKER_NAME\" >> \"{}/ran\"", p(d)));
    let command = ["--agent", "command", "--agent-command", p(&agent)];
    // No filesystem has an exabyte free.
    let mut full =
        WorkerProc::start(&coord.url(), d, "full", &[&command[..], &["--min-free-disk-mb", "1000000000000"]].concat());
    full.wait_log("taking no work: low on disk").await;
    let _roomy = WorkerProc::start(&coord.url(), d, "roomy", &command);
    let job = create_job(&mut c, "disk").await;
    add(&mut c, &job, (0..8).map(|i| spec(&format!("t{i}"))).collect()).await;
    assert_eq!(wait_idle(&mut c, &job).await.completed, 8);
    assert_eq!(lines(&d.join("ran")), vec!["roomy"; 8], "every task ran on the worker with room");
    assert!(full.wait_within(Duration::ZERO).unwrap().is_none(), "a worker low on disk waits, it does not exit");
}
