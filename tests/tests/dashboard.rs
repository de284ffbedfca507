//! `orca dashboard` end to end, driven in tmux (send-keys, capture-pane) against the real
//! coordinator and workers: workers appear and go, a job's progress and a task's live output
//! show, a cancel from the dashboard cancels, a coordinator restart is survived.
//!
//! Needs tmux: `scripts/dashboard-check.sh` installs it and runs this test (it is ignored by a
//! plain `cargo test`, whose machine may have no tmux).

use std::path::Path;
use std::process::Command;

use orca_e2e::workers::*;
use orca_e2e::*;
use orca_proto::pb;

/// One tmux server of its own (`-L`), so nothing else's sessions are touched.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn cmd(&self, args: &[&str]) -> std::process::Output {
        Command::new("tmux").arg("-L").arg(&self.socket).args(args).output().expect("tmux runs")
    }

    fn start(dir: &Path, url: &str) -> Tmux {
        let t = Tmux { socket: format!("orca-dash-{}", std::process::id()) };
        let line = format!(
            "ORCA_COORDINATOR={url} exec {} dashboard 2>{}",
            binary("orca").display(),
            dir.join("dashboard.err").display()
        );
        let out = t.cmd(&["new-session", "-d", "-s", "dash", "-x", "100", "-y", "30", &line]);
        assert!(out.status.success(), "tmux new-session: {}", String::from_utf8_lossy(&out.stderr));
        t
    }

    fn screen(&self) -> String {
        String::from_utf8_lossy(&self.cmd(&["capture-pane", "-p", "-t", "dash"]).stdout).to_string()
    }

    fn keys(&self, keys: &[&str]) {
        for k in keys {
            assert!(self.cmd(&["send-keys", "-t", "dash", k]).status.success());
        }
    }

    /// Waits until the screen shows all of `texts`.
    async fn shows(&self, texts: &[&str]) -> String {
        let what = format!("the dashboard to show {texts:?}");
        let mut last = String::new();
        let found = tokio::time::timeout(WAIT, async {
            loop {
                last = self.screen();
                if texts.iter().all(|t| last.contains(t)) {
                    return last.clone();
                }
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        })
        .await;
        found.unwrap_or_else(|_| panic!("timed out waiting for {what}; screen:\n{last}"))
    }

    fn running(&self) -> bool {
        self.cmd(&["has-session", "-t", "dash"]).status.success()
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.cmd(&["kill-server"]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs tmux: run by scripts/dashboard-check.sh"]
async fn the_dashboard_follows_the_fleet_acts_on_it_and_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut coord = Coordinator::start(d, &[]);
    let mut c = coord.client().await;
    let release = d.join("release");
    let agent = script(
        d,
        "agent.sh",
        &format!(
            "case \"$ORCA_PROMPT\" in\n  *HOLD*) i=0; while [ ! -e {r} ]; do i=$((i+1)); echo \"tick $i\"; sleep 0.2; done;;\n  *FOREVER*) while true; do sleep 0.2; done;;\nesac\necho \"done $ORCA_TASK_ID\"",
            r = release.display()
        ),
    );
    let args = ["--agent", "command", "--agent-command", agent.to_str().unwrap(), "--slots", "3"];
    let tmux = Tmux::start(d, &coord.url());
    tmux.shows(&["1 Fleet", "connected to"]).await;

    // Workers appear, and one that dies shows as gone.
    let _a = WorkerProc::start(&coord.url(), d, "dash-a", &args);
    let mut b = WorkerProc::start(&coord.url(), d, "dash-b", &args);
    tmux.shows(&["dash-a", "dash-b", "Workers (2)"]).await;
    b.kill();
    let s = tmux.shows(&["gone"]).await;
    assert!(s.lines().any(|l| l.contains("dash-b") && l.contains("gone")), "{s}");

    // A job's progress, then a task's live output.
    let job = create_job(&mut c, "dash").await;
    let ids = add(&mut c, &job, vec![spec("HOLD the line"), spec("quick")]).await;
    tmux.keys(&["2"]);
    tmux.shows(&["Jobs (1, newest first)", &job[..13]]).await;
    tmux.keys(&["Enter"]);
    tmux.shows(&["Tasks (2)", "1/2 final"]).await;
    tmux.keys(&["Enter"]);
    tmux.shows(&[&format!("Task {}", ids[0]), "tick "]).await;
    std::fs::write(&release, "").unwrap();
    tmux.shows(&["completed", &format!("done {}", ids[0])]).await;

    // Cancel a job from the dashboard, with a confirmation.
    let job2 = create_job(&mut c, "dash 2").await;
    add(&mut c, &job2, vec![spec("FOREVER")]).await;
    tmux.keys(&["Escape", "Escape", "2"]);
    tmux.shows(&["Jobs (2, newest first)"]).await;
    tmux.keys(&["k", "c"]);
    tmux.shows(&[&format!("Cancel job {job2}")]).await;
    tmux.keys(&["y"]);
    tmux.shows(&[&format!("job {job2} cancelled")]).await;
    let j = c.get_job(pb::GetJobRequest { job_id: job2.clone() }).await.unwrap().into_inner();
    assert_eq!(j.state, pb::JobState::Cancelled as i32);

    // A coordinator restart: said on screen, then connected again with the fleet back.
    tmux.keys(&["1"]);
    assert!(coord.terminate().success());
    tmux.shows(&["disconnected"]).await;
    coord.restart_same_port();
    tmux.shows(&["connected to", "dash-a"]).await;

    tmux.keys(&["q"]);
    until("the dashboard to quit", || !tmux.running()).await;
    let err = std::fs::read_to_string(d.join("dashboard.err")).unwrap_or_default();
    assert!(err.trim().is_empty(), "the dashboard wrote to stderr: {err}");
}
