//! `orca up`: a coordinator and local workers in one process. The demo runs to its report;
//! a plain `orca up` serves other commands, stops cleanly on SIGINT in the middle of a job,
//! and a restart on the same database finds every acknowledged task and finishes them.

use std::process::{Command, Stdio};

use orca_e2e::workers::*;
use orca_e2e::*;
use orca_proto::pb;

#[test]
fn up_demo_runs_the_sample_job_to_its_report_and_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(binary("orca"))
        .args(["up", "--demo", "--work-dir", dir.path().to_str().unwrap()])
        .env("TMPDIR", dir.path())
        // Whatever this machine has, the demo agent is used when claude is not on PATH.
        .env("PATH", "/usr/bin:/bin")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.starts_with("Orca is up at http://127.0.0.1:"), "{stdout}");
    assert!(stdout.contains("agent demo: claude is not on PATH"), "{stdout}");
    assert!(stdout.contains("# Results: 5 tasks, 5 completed, 0 failed, 0 cancelled"), "{stdout}");
    assert!(stdout.contains("## Synthesis (task 6, completed)\nReviewed 5 task results"), "{stdout}");
    assert!(stdout.trim_end().ends_with("Demo finished."), "{stdout}");
    // The files came back into the demo's project directory.
    let project = stdout.lines().find_map(|l| l.strip_prefix("Files in ")).unwrap().trim_end_matches(':');
    for f in ["server.js", "routes/list.js", "routes/create.js", "routes/delete.js", "tests/tasks.test.js"] {
        let text = std::fs::read_to_string(std::path::Path::new(project).join(f)).unwrap();
        assert!(text.contains("written by Orca's demo agent"), "{f}: {text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_stops_cleanly_on_sigint_and_a_restart_finishes_every_acknowledged_task() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (db, addr_file) = (d.join("orca.db"), d.join("addr"));
    // Tasks take a while, so SIGINT comes in the middle of the job.
    let agent = script(d, "agent.sh", "sleep 0.3; echo \"did $ORCA_TASK_ID\"");
    let start = |extra: &[&str]| {
        let _ = std::fs::remove_file(&addr_file);
        Command::new(binary("orca"))
            .args(extra)
            .args(["--listen", "127.0.0.1:0", "--workers", "2", "--slots", "2", "--agent", "command"])
            .args(["--agent-command", agent.to_str().unwrap(), "--work-dir", d.join("work").to_str().unwrap()])
            .arg("--db")
            .arg(&db)
            .arg("--addr-file")
            .arg(&addr_file)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let mut up = start(&["up"]);
    let addr = wait_for_file(&addr_file, &mut up);
    let url = format!("http://{addr}");
    let mut c = pb::orchestrator_client::OrchestratorClient::connect(url.clone()).await.unwrap();
    let job = create_job(&mut c, "up").await;
    let ids = add(&mut c, &job, (0..40).map(|i| spec(&format!("task {i}"))).collect()).await;
    let mut events = follow(&mut c, &job).await;
    // Some tasks finished, the rest not yet: stop it now.
    loop {
        let ev = events.message().await.unwrap().unwrap();
        if ev.status.is_some_and(|s| s.completed >= 4) {
            break;
        }
    }
    signal(up.id(), libc::SIGINT);
    let out = up.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.starts_with(&format!("Orca is up at {url} (database {}", db.display())), "{stdout}");

    // Restarted on the same database (with the dashboard): every task is there and
    // completes exactly once.
    let mut up = start(&["up", "--http-listen", "127.0.0.1:0"]);
    let addr = wait_for_file(&addr_file, &mut up);
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(up.stdout.take().unwrap()));
    let dashboard = lines
        .find_map(|l| l.ok()?.strip_prefix("Dashboard: http://").map(|a| a.trim_end_matches('/').to_string()))
        .expect("orca up prints the dashboard's address");
    let (status, page) = orca_e2e::workers::http_get(&dashboard, "/", None);
    assert!(status == 200 && page.contains("/assets/app.js"), "{status} {page}");
    let mut c = pb::orchestrator_client::OrchestratorClient::connect(format!("http://{addr}")).await.unwrap();
    let s = wait_idle(&mut c, &job).await;
    assert_eq!((s.total_tasks, s.completed), (40, 40), "{s:?}");
    for id in ids {
        assert_eq!(task(&mut c, id).await.state, pb::TaskState::Completed as i32);
    }
    signal(up.id(), libc::SIGTERM);
    assert!(wait_exit(&mut up).success());
}
