//! The `orca` CLI against the real coordinator: the JSON shapes and exit codes of docs/contract.md.

use std::io::Write;
use std::process::{Command, Stdio};

use orca_e2e::*;
use orca_proto::pb;
use tokio::sync::mpsc;

fn orca(coord: &Coordinator, args: &[&str], stdin: Option<&str>) -> (i32, serde_json::Value, String) {
    let mut child = Command::new(binary("orca"))
        .env("ORCA_COORDINATOR", coord.url())
        .args(args)
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(input) = stdin {
        child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let json = serde_json::from_str(&stdout).unwrap_or(serde_json::Value::Null);
    (out.status.code().unwrap_or(-1), json, String::from_utf8_lossy(&out.stderr).to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_status_and_wait_follow_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    let coord = Coordinator::start(dir.path(), &[]);
    // Prompts on stdin, one per line, without --job: a job is created.
    let (code, sub, err) = orca(&coord, &["submit", "--json"], Some("first\nsecond\n\nthird\n"));
    assert_eq!(code, 0, "{err}");
    let job = sub["job_id"].as_str().unwrap().to_string();
    assert_eq!(sub["task_ids"].as_array().unwrap().len(), 3);
    let (code, st, _) = orca(&coord, &["status", &job, "--json"], None);
    assert_eq!(code, 0);
    let keys: Vec<&str> = st.as_object().unwrap().keys().map(String::as_str).collect();
    for k in [
        "job_id",
        "total_tasks",
        "waiting",
        "pending",
        "in_progress",
        "completed",
        "failed",
        "cancelled",
        "progress_pct",
    ] {
        assert!(keys.contains(&k), "{k} in {st}");
    }
    assert_eq!(st["total_tasks"], 3);
    assert_eq!(st["pending"], 3);
    assert_eq!(st["progress_pct"], 0.0);
    // Nobody works: wait times out with a non-zero exit.
    let (code, w, _) = orca(&coord, &["wait", &job, "--timeout", "0.3", "--json"], None);
    assert_ne!(code, 0);
    assert_eq!(w["timed_out"], true);
    assert_eq!(w["unfinished"].as_array().unwrap().len(), 3);

    let fail_second = WorkerOpts::new("w", 2).behavior(|a| {
        if a.spec.as_ref().unwrap().prompt == "second" {
            Action::Fail { error: "boom".into(), retryable: false }
        } else {
            Action::Complete("ok".into())
        }
    });
    let (tx, _rx) = mpsc::unbounded_channel();
    let _w = TestWorker::start(&coord.url(), fail_second, tx).await;
    let (code, w, _) = orca(&coord, &["wait", &job, "--json"], None);
    assert_eq!(code, 1, "a failed task makes wait exit non-zero");
    assert_eq!(w["completed"], 2);
    assert_eq!(w["failed"], 1);

    // Prompts as arguments into an existing job; all complete, so wait exits 0.
    let (code, sub2, _) = orca(&coord, &["submit", "--json", "--job", "no-such-job", "x"], None);
    assert_eq!((code, sub2), (2, serde_json::Value::Null), "unknown job is an error");
    let job2 = orca(&coord, &["submit", "--json", "a", "b"], None).1["job_id"].as_str().unwrap().to_string();
    let (code, w, _) = orca(&coord, &["wait", &job2, "--json"], None);
    assert_eq!(code, 0, "{w}");
    assert_eq!(w["progress_pct"], 100.0);
    assert_eq!(w["tasks"][0]["output"], "ok");
}

#[test]
fn a_config_file_sets_each_binarys_flags_and_flags_and_unknown_keys_behave() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let addr_file = d.join("addr");
    let coordinator_toml = d.join("coordinator.toml");
    std::fs::write(
        &coordinator_toml,
        format!(
            "[coordinator]\nlisten = \"127.0.0.1:0\"\ndb = {:?}\naddr_file = {:?}\nlease_seconds = 5\n",
            d.join("orca.db"),
            addr_file
        ),
    )
    .unwrap();
    let mut coord = Command::new(binary("orca-coordinator"))
        .env("ORCA_CONFIG", &coordinator_toml)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // The file's listen address and addr_file were used: the address appears there.
    let addr = wait_for_file(&addr_file, &mut coord);
    let client_toml = d.join("client.toml");
    std::fs::write(&client_toml, format!("[client]\ncoordinator = \"http://{addr}\"\n")).unwrap();
    let cli = |extra: &[&str]| {
        let mut args = vec!["--config", client_toml.to_str().unwrap()];
        args.extend_from_slice(extra);
        Command::new(binary("orca")).env_remove("ORCA_COORDINATOR").args(args).output().unwrap()
    };
    let out = cli(&["jobs", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // A flag beats the file.
    let out = cli(&["--coordinator", "http://127.0.0.1:1", "jobs"]);
    assert!(!out.status.success());
    signal(coord.id(), libc::SIGTERM);
    assert!(wait_exit(&mut coord).success());
    // An unknown key is refused, naming the key and the file.
    let bad = d.join("bad.toml");
    std::fs::write(&bad, "[coordinator]\nlease_secs = 5\n").unwrap();
    let out = Command::new(binary("orca-coordinator")).arg("--config").arg(&bad).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("lease_secs") && err.contains(bad.to_str().unwrap()), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collect_writes_outputs_into_working_dirs_or_an_out_dir_and_leaves_in_place_tasks_alone() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (project, shared) = (d.join("project"), d.join("shared"));
    std::fs::create_dir_all(&project).unwrap();
    std::fs::create_dir_all(&shared).unwrap();
    let coord = Coordinator::start(d, &[]);
    let mut c = coord.client().await;
    // The worker shares `shared` with the caller (--allow-dir) but not `project`.
    let agent = workers::script(d, "agent.sh", "mkdir -p src && echo \"made by $ORCA_TASK_ID\" > src/out.txt");
    let args =
        ["--agent", "command", "--agent-command", agent.to_str().unwrap(), "--allow-dir", shared.to_str().unwrap()];
    let _w = workers::WorkerProc::start(&coord.url(), d, "w", &args);
    let job = create_job(&mut c, "collect").await;
    let task_in = |wd: &std::path::Path| pb::TaskSpec {
        working_dir: wd.to_str().unwrap().into(),
        expected_outputs: vec!["src/out.txt".into()],
        ..spec("write src/out.txt")
    };
    let ids = add(&mut c, &job, vec![task_in(&project), task_in(&shared)]).await;
    assert_eq!(wait_idle(&mut c, &job).await.completed, 2);
    assert!(!task(&mut c, ids[0]).await.result.unwrap().in_place, "project is not shared");
    assert!(task(&mut c, ids[1]).await.result.unwrap().in_place, "shared is used in place");
    assert!(!project.join("src/out.txt").exists(), "nothing lands before collect");

    let (code, got, err) = orca(&coord, &["collect", &job, "--json"], None);
    assert_eq!(code, 0, "{err}");
    assert_eq!(got["files"], 1, "{got}");
    let made = std::fs::read_to_string(project.join("src/out.txt")).unwrap();
    assert_eq!(made.trim(), format!("made by {}", ids[0]));
    let skipped = got["tasks"].as_array().unwrap().iter().find(|t| t["task_id"] == ids[1]).unwrap();
    assert!(skipped["skipped"][0]["reason"].as_str().unwrap().contains("ran in its working directory"), "{got}");

    // With --out every task's files go to OUT/<task_id>/<path>, in place or not.
    let out = d.join("out");
    let (code, got, err) = orca(&coord, &["collect", &job, "--out", out.to_str().unwrap(), "--json"], None);
    assert_eq!(code, 0, "{err}");
    assert_eq!(got["files"], 2, "{got}");
    for id in &ids {
        let f = std::fs::read_to_string(out.join(id.to_string()).join("src/out.txt")).unwrap();
        assert_eq!(f.trim(), format!("made by {id}"));
    }
    let (code, _, err) = orca(&coord, &["collect", "no-such-job"], None);
    assert_eq!(code, 2);
    assert!(err.contains("not found"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_and_fleet_commands_follow_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let http_file = d.join("http.addr");
    let mut coord =
        Coordinator::start(d, &["--http-listen", "127.0.0.1:0", "--http-addr-file", http_file.to_str().unwrap()]);
    let http = wait_for_file(&http_file, &mut coord.child);
    let release = d.join("release");
    // A HOLD task prints nothing until the test releases it, so `logs -f` sees every line.
    let agent = workers::script(
        d,
        "agent.sh",
        &format!(
            "case \"$ORCA_PROMPT\" in *HOLD*) while [ ! -e {r} ]; do sleep 0.02; done;; esac\necho \"starting $ORCA_TASK_ID\"\necho \"finished $ORCA_TASK_ID\"",
            r = release.display()
        ),
    );
    let args = ["--agent", "command", "--agent-command", agent.to_str().unwrap(), "--label", "zone=a", "--slots", "2"];
    let _w = workers::WorkerProc::start(&coord.url(), d, "fleet-w", &args);
    let mut worker_id = String::new();
    workers::until_async("the worker is listed as connected", || {
        let (code, v, _) = orca(&coord, &["workers", "--json"], None);
        let w = v["workers"][0].clone();
        if code == 0 && w["connected"] == true {
            worker_id = w["worker_id"].as_str().unwrap().to_string();
        }
        async move { code == 0 && w["connected"] == true && w["labels"]["zone"] == "a" && w["slots"] == 2 }
    })
    .await;

    // Tasks from a JSON file, a dependency by name.
    let file = d.join("tasks.json");
    std::fs::write(&file, r#"{"tasks": [{"name": "a", "prompt": "first HOLD", "priority": 9}, {"name": "b", "prompt": "second", "depends_on": ["a"]}]}"#).unwrap();
    let (code, sub, err) = orca(&coord, &["submit", "--file", file.to_str().unwrap(), "--json"], None);
    assert_eq!(code, 0, "{err}");
    let job = sub["job_id"].as_str().unwrap().to_string();
    let a = sub["task_ids"][0].as_i64().unwrap();
    // `logs -f` follows task a live from before its first line.
    let follow = Command::new(binary("orca"))
        .env("ORCA_COORDINATOR", coord.url())
        .args(["logs", "-f", &a.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    workers::until("logs -f is watching", || {
        workers::http_get(&http, "/metrics", None).1.lines().any(|l| l == "orca_watch_streams 1")
    })
    .await;
    std::fs::write(&release, "").unwrap();
    let out = follow.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), format!("starting {a}\nfinished {a}\n"));
    let (code, _, _) = orca(&coord, &["wait", &job], None);
    assert_eq!(code, 0);

    let (_, show, _) = orca(&coord, &["show", &a.to_string(), "--json"], None);
    assert_eq!(
        (show["name"].clone(), show["state"].clone(), show["attempts"].clone()),
        ("a".into(), "completed".into(), 1.into())
    );
    assert_eq!(show["worker_id"], worker_id.as_str());
    let (_, alias, _) = orca(&coord, &["task", &a.to_string(), "--json"], None);
    assert_eq!(alias["task_id"], a);

    let (_, list, _) = orca(&coord, &["list", "--job", &job, "--json"], None);
    assert_eq!(list["tasks"].as_array().unwrap().len(), 2);
    assert_eq!(list["next_page_token"], "");
    let (_, mine, _) = orca(&coord, &["list", "--state", "completed", "--worker", &worker_id, "--json"], None);
    assert_eq!(mine["tasks"].as_array().unwrap().len(), 2);
    let (_, page, _) = orca(&coord, &["list", "--limit", "1", "--json"], None);
    let token = page["next_page_token"].as_str().unwrap().to_string();
    assert_eq!((page["tasks"][0]["task_id"].clone(), token.is_empty()), (a.into(), false));
    let (_, next, _) = orca(&coord, &["list", "--limit", "1", "--page-token", &token, "--json"], None);
    assert_ne!(next["tasks"][0]["task_id"], a);
    let (code, _, err) = orca(&coord, &["list", "--state", "done"], None);
    assert!(code == 2 && err.contains("--state \"done\": not a state"), "{err}");

    let (_, stats, _) = orca(&coord, &["stats", "--json"], None);
    assert_eq!(stats["tasks"]["completed"], 2, "{stats}");
    assert_eq!((stats["workers_connected"].clone(), stats["slots"].clone()), (1.into(), 2.into()));
    let buckets = stats["throughput"].as_array().unwrap();
    assert_eq!(buckets.len(), 60);
    assert_eq!(buckets.iter().map(|b| b["completed"].as_u64().unwrap()).sum::<u64>(), 2);

    // Drained, the worker's slots are not free; resumed, it takes work again.
    let (code, drained, err) = orca(&coord, &["workers", "drain", &worker_id, "--json"], None);
    assert_eq!((code, drained["draining"].clone()), (0, true.into()), "{err}");
    let (_, stats, _) = orca(&coord, &["stats", "--json"], None);
    assert_eq!(stats["slots_free"], 0);
    let (_, listed, _) = orca(&coord, &["workers", "--json"], None);
    assert_eq!(listed["workers"][0]["draining"], true);
    let (code, _, err) = orca(&coord, &["workers", "drain", "no-such-worker"], None);
    assert!(code == 2 && err.contains("not found"), "{err}");
    let (code, resumed, _) = orca(&coord, &["workers", "resume", &worker_id, "--json"], None);
    assert_eq!((code, resumed["draining"].clone()), (0, false.into()));
    let (code, _, _) = orca(&coord, &["submit", "--wait", "--job", &job, "third"], None);
    assert_eq!(code, 0);

    // Shared context.
    assert_eq!(orca(&coord, &["context", "set", "style", "terse", "--job", &job], None).0, 0);
    let (_, ctx, _) = orca(&coord, &["context", "get", "--job", &job, "--json"], None);
    assert_eq!(ctx["values"]["style"], "terse");
    assert_eq!(orca(&coord, &["context", "rm", "style", "--job", &job], None).0, 0);
    let (_, ctx, _) = orca(&coord, &["context", "get", "--job", &job, "--json"], None);
    assert_eq!(ctx["values"], serde_json::json!({}));

    let (_, jobs, _) = orca(&coord, &["jobs", "--json"], None);
    assert_eq!(jobs["jobs"][0]["job_id"], job.as_str());
    let bad = d.join("bad.json");
    std::fs::write(&bad, r#"[{"prompt": "x", "depends_on": ["nope"]}]"#).unwrap();
    let (code, _, err) = orca(&coord, &["submit", "--file", bad.to_str().unwrap()], None);
    assert!(code == 2 && err.contains("tasks[0].depends_on[0]: no task of the file is named \"nope\""), "{err}");
    let comp = Command::new(binary("orca")).args(["completions", "bash"]).output().unwrap();
    assert!(comp.status.success() && String::from_utf8_lossy(&comp.stdout).contains("_orca"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduling_commands_set_controls_delays_and_schedules() {
    let dir = tempfile::tempdir().unwrap();
    let coord = Coordinator::start(dir.path(), &[]);
    let args =
        ["submit", "--json", "--weight", "2", "--max-running", "1", "--budget", "3.5", "--delay", "1h", "a", "b"];
    let (code, sub, err) = orca(&coord, &args, None);
    assert_eq!(code, 0, "{err}");
    let job = sub["job_id"].as_str().unwrap().to_string();
    let (_, st, _) = orca(&coord, &["status", &job, "--json"], None);
    assert_eq!(
        (st["weight"].as_u64(), st["max_running"].as_u64(), st["budget_usd"].as_f64()),
        (Some(2), Some(1), Some(3.5))
    );
    assert_eq!((st["waiting"].as_u64(), st["cost_usd"].as_f64()), (Some(2), Some(0.0)), "delayed tasks wait: {st}");
    let mut c = coord.client().await;
    let id = sub["task_ids"][0].as_i64().unwrap();
    let t = c.get_task(pb::GetTaskRequest { task_id: id }).await.unwrap().into_inner();
    let hour_ahead = t.not_before_ms - t.created_at_ms;
    assert!((3_590_000..=3_610_000).contains(&hour_ahead), "not_before is an hour ahead: {hour_ahead}");

    let (code, p, _) = orca(&coord, &["pause", &job, "--json"], None);
    assert_eq!((code, p["paused"].as_bool(), p["blocked_reason"].as_str()), (0, Some(true), Some("paused")));
    let (code, r, _) = orca(&coord, &["resume", &job, "--json"], None);
    assert_eq!((code, r["paused"].as_bool()), (0, Some(false)));
    let (code, u, _) = orca(&coord, &["update", &job, "--weight", "5", "--max-running", "0", "--json"], None);
    assert_eq!((code, u["weight"].as_u64(), u["max_running"].as_u64()), (0, Some(5), Some(0)));
    let (code, _, err) = orca(&coord, &["update", &job, "--weight", "0"], None);
    assert_eq!(code, 2);
    assert!(err.contains("weight"), "{err}");
    let (code, _, err) = orca(&coord, &["submit", "--job", &job, "--weight", "2", "x"], None);
    assert_eq!(code, 2);
    assert!(err.contains("orca update"), "{err}");

    let (code, s, err) =
        orca(&coord, &["schedule", "add", "nightly", "--cron", "0 3 * * *", "--json", "do it", "then this"], None);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        (s["name"].as_str(), s["tasks"].as_u64(), s["description"].as_str()),
        (Some("nightly"), Some(2), Some("nightly"))
    );
    let (code, _, err) = orca(&coord, &["schedule", "add", "nightly", "--cron", "0 3 * * *", "again"], None);
    assert_eq!(code, 2);
    assert!(err.contains("already exists"), "{err}");
    let (_, l, _) = orca(&coord, &["schedule", "list", "--json"], None);
    let next = l["schedules"][0]["next_run_ms"].as_i64().unwrap();
    assert_eq!(next % 86_400_000, 3 * 3_600_000, "the next tick is at 03:00 UTC");
    let (code, _, _) = orca(&coord, &["schedule", "rm", "nightly"], None);
    assert_eq!(code, 0);
    let (_, l, _) = orca(&coord, &["schedule", "list", "--json"], None);
    assert_eq!(l["schedules"].as_array().unwrap().len(), 0);
}
