//! End to end with the real `orca-coordinator` and real `orca-worker` processes running
//! small `sh` agent scripts (and a fake `claude` printing the real CLI's output shapes).
//! Agents record what they do in files of the test's directory; the tests wait on those files
//! and on the coordinator's job events, never on a sleep.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use orca_e2e::workers::*;
use orca_e2e::*;
use orca_proto::pb;

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

fn labels(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// Writes `contents` to `name` atomically (a reader never sees half of it).
fn atomic_write(dir: &Path, name: &str, contents: &str) -> String {
    format!("printf '%s\\n' \"{contents}\" > \"{d}/{name}.tmp\" && mv \"{d}/{name}.tmp\" \"{d}/{name}\"", d = p(dir))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hundred_tasks_complete_across_three_workers() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let coord = Coordinator::start(d, &[]);
    let mut c = coord.client().await;
    std::fs::create_dir(d.join("runs")).unwrap();
    let agent = script(
        d,
        "agent.sh",
        &format!(
            "echo \"$ORCA_TASK_ID $ORCA_ATTEMPT\" >> \"{}/runs/$WORKER_NAME\"\nprintf 'done %s' \"$ORCA_TASK_ID\"",
            p(d)
        ),
    );
    let names = ["w1", "w2", "w3"];
    let _workers: Vec<WorkerProc> = names
        .iter()
        .map(|n| {
            let label = format!("node={n}");
            WorkerProc::start(
                &coord.url(),
                d,
                n,
                &["--agent", "command", "--agent-command", p(&agent), "--slots", "4", "--label", &label],
            )
        })
        .collect();
    probe(&mut c, &names).await;
    for n in names {
        std::fs::remove_file(d.join("runs").join(n)).unwrap();
    }

    let job = create_job(&mut c, "three hundred").await;
    let started = std::time::Instant::now();
    let ids = add(&mut c, &job, (0..300).map(|i| spec(&format!("task {i}"))).collect()).await;
    let status = wait_idle(&mut c, &job).await;
    let elapsed = started.elapsed();
    eprintln!(
        "300 command-agent tasks across 3 workers (4 slots each): {elapsed:?}, {:.1} tasks/s",
        300.0 / elapsed.as_secs_f64()
    );
    assert_eq!(status.completed, 300, "{status:?}");

    let mut seen = HashSet::new();
    let mut per = HashMap::new();
    for n in names {
        let runs = lines(&d.join("runs").join(n));
        per.insert(n, runs.len());
        for r in runs {
            let (task, attempt) = r.split_once(' ').unwrap();
            assert_eq!(attempt, "1", "no retry was needed: {r}");
            assert!(seen.insert(task.parse::<i64>().unwrap()), "task {task} ran twice");
        }
    }
    eprintln!("tasks per worker: {per:?}");
    assert!(per.values().all(|n| *n > 0), "every worker ran some: {per:?}");
    assert_eq!(seen, ids.iter().copied().collect());
    let t = task(&mut c, ids[7]).await;
    assert_eq!(t.result.unwrap().output, format!("done {}", ids[7]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_worker_task_runs_again_elsewhere_and_leaves_no_process() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let coord = Coordinator::start(d, &["--lease-seconds", "2"]);
    let mut c = coord.client().await;
    let agent = script(
        d,
        "agent.sh",
        &format!(
            "if [ \"$ORCA_ATTEMPT\" = 1 ]; then\n  sleep 1000 &\n  {}\n  {}\n  {}\n  sleep 1000\nfi\n{}\necho rerun",
            atomic_write(d, "grandchild.pid", "$!"),
            atomic_write(d, "agent.pid", "$$"),
            atomic_write(d, "first", "$WORKER_NAME"),
            atomic_write(d, "second", "$WORKER_NAME"),
        ),
    );
    let args = ["--agent", "command", "--agent-command", p(&agent), "--slots", "1"];
    let mut workers: HashMap<String, WorkerProc> =
        ["a", "b"].iter().map(|n| (n.to_string(), WorkerProc::start(&coord.url(), d, n, &args))).collect();
    let job = create_job(&mut c, "kill a worker").await;
    let id = add(&mut c, &job, vec![spec("survive")]).await[0];

    until("the first attempt to start", || d.join("first").exists()).await;
    let first = lines(&d.join("first"))[0].clone();
    let (agent_pid, grandchild) = (read_pid(&d.join("agent.pid")), read_pid(&d.join("grandchild.pid")));
    assert!(!gone(agent_pid) && !gone(grandchild));
    workers.get_mut(&first).unwrap().kill();

    let status = wait_idle(&mut c, &job).await;
    assert_eq!(status.completed, 1, "{status:?}");
    let t = task(&mut c, id).await;
    assert_eq!(t.attempts, 2);
    // The history names the lost attempt and the worker it was lost on.
    let outcomes: Vec<&str> = t.history.iter().map(|a| a.outcome.as_str()).collect();
    assert_eq!(outcomes, ["lost", "completed"], "{:?}", t.history);
    assert_ne!(t.history[0].worker_id, t.history[1].worker_id);
    assert_eq!(t.result.unwrap().output, "rerun\n");
    let second = lines(&d.join("second"))[0].clone();
    assert_ne!(first, second, "the task ran again on the other worker");
    // The killed worker's supervisor took its agent and the agent's child down with it.
    until_gone(&[agent_pid, grandchild]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coordinator_killed_and_restarted_every_task_completes_once() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut coord = Coordinator::start(d, &["--lease-seconds", "15"]);
    let mut c = coord.client().await;
    let agent = script(
        d,
        "agent.sh",
        &format!(
            "echo \"$ORCA_TASK_ID\" >> \"{d}/started\"\nwhile [ ! -f \"{d}/go\" ]; do sleep 0.05; done\necho \"$ORCA_TASK_ID\" >> \"{d}/completed\"\nprintf ok",
            d = p(d)
        ),
    );
    let args = ["--agent", "command", "--agent-command", p(&agent), "--slots", "2"];
    let workers: Vec<WorkerProc> =
        ["a", "b", "c"].iter().map(|n| WorkerProc::start(&coord.url(), d, n, &args)).collect();
    let job = create_job(&mut c, "restart").await;
    let ids = add(&mut c, &job, (0..30).map(|i| spec(&format!("t{i}"))).collect()).await;

    until("every slot to be busy", || lines(&d.join("started")).len() >= 6).await;
    coord.kill();
    // The running agents finish while the coordinator is down: their reports wait.
    std::fs::write(d.join("go"), "").unwrap();
    until("the running tasks to finish", || lines(&d.join("completed")).len() >= 6).await;
    // Each worker lost its stream and failed to reconnect at least once.
    for w in &workers {
        let what = format!("worker {} to retry", w.name);
        until(&what, || w.logs().matches("no link to the coordinator").count() >= 2).await;
    }
    // Same address, so that the workers reconnect to it.
    coord.restart_same_port();

    let mut c = coord.client().await;
    let status = wait_idle(&mut c, &job).await;
    assert_eq!(status.completed, 30, "{status:?}");
    let completed = lines(&d.join("completed"));
    let unique: HashSet<i64> = completed.iter().map(|l| l.parse().unwrap()).collect();
    assert_eq!(completed.len(), 30, "no task completed twice: {completed:?}");
    assert_eq!(unique, ids.iter().copied().collect());
    for id in &ids[..3] {
        let t = task(&mut c, *id).await;
        assert_eq!((t.state, t.result.unwrap().output), (pb::TaskState::Completed as i32, "ok".to_string()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timed_out_task_is_killed_with_its_children_and_retried() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let coord = Coordinator::start(d, &[]);
    let mut c = coord.client().await;
    let agent = script(
        d,
        "agent.sh",
        &format!(
            "sleep 1000 &\n{}\n{}\nsleep 1000",
            atomic_write(d, "gc-$ORCA_ATTEMPT", "$!"),
            atomic_write(d, "agent-$ORCA_ATTEMPT", "$$")
        ),
    );
    let _w = WorkerProc::start(&coord.url(), d, "w", &["--agent", "command", "--agent-command", p(&agent)]);
    let job = create_job(&mut c, "timeouts").await;
    let policy = pb::RetryPolicy { initial_backoff_ms: 100, multiplier: 2.0, max_backoff_ms: 100 };
    let id = add(
        &mut c,
        &job,
        vec![pb::TaskSpec { timeout_seconds: 1, max_retries: Some(1), retry_policy: Some(policy), ..spec("hang") }],
    )
    .await[0];
    let status = wait_idle(&mut c, &job).await;
    assert_eq!(status.failed, 1, "{status:?}");
    let t = task(&mut c, id).await;
    assert_eq!(t.attempts, 2, "one try and one retry");
    assert!(t.reason.contains("timed out after 1 s"), "{}", t.reason);
    let pids: Vec<i32> = ["gc-1", "agent-1", "gc-2", "agent-2"].iter().map(|f| read_pid(&d.join(f))).collect();
    until_gone(&pids).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_job_kills_its_running_agents() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let coord = Coordinator::start(d, &[]);
    let mut c = coord.client().await;
    let agent = script(
        d,
        "agent.sh",
        &format!(
            "case \"$ORCA_PROMPT\" in quick) echo quick; exit 0;; esac\nsleep 1000 &\n{}\n{}\nsleep 1000",
            atomic_write(d, "gc-$ORCA_TASK_ID", "$!"),
            atomic_write(d, "agent-$ORCA_TASK_ID", "$$")
        ),
    );
    let _w =
        WorkerProc::start(&coord.url(), d, "w", &["--agent", "command", "--agent-command", p(&agent), "--slots", "3"]);
    let job = create_job(&mut c, "to cancel").await;
    let ids = add(&mut c, &job, (0..3).map(|i| spec(&format!("long {i}"))).collect()).await;
    let files: Vec<String> = ids.iter().flat_map(|i| [format!("gc-{i}"), format!("agent-{i}")]).collect();
    until("every agent to start", || files.iter().all(|f| d.join(f).exists())).await;
    let pids: Vec<i32> = files.iter().map(|f| read_pid(&d.join(f))).collect();

    c.cancel_job(pb::CancelJobRequest { job_id: job.clone(), reason: "changed my mind".into() }).await.unwrap();
    until_gone(&pids).await;
    let status = job_status(&mut c, &job).await;
    assert_eq!(status.cancelled, 3, "{status:?}");

    // The worker keeps serving, with its slots free again.
    let next = create_job(&mut c, "after cancel").await;
    add(&mut c, &next, (0..3).map(|_| spec("quick")).collect()).await;
    assert_eq!(wait_idle(&mut c, &next).await.completed, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn context_files_in_expected_outputs_out_and_a_missing_output_fails() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let shared = d.join("shared");
    std::fs::create_dir_all(shared.join("project")).unwrap();
    let coord = Coordinator::start(d, &[]);
    let mut c = coord.client().await;
    let agent = script(
        d,
        "agent.sh",
        &format!(
            "cat > \"{d}/prompt-$ORCA_TASK_ID\"\ncase \"$ORCA_PROMPT\" in\n  *produce*) mkdir -p out && cat input.txt > out/copy.txt && echo note > note.md;;\n  *in-place*) pwd > made-here;;\nesac\necho finished",
            d = p(d)
        ),
    );
    let w = WorkerProc::start(
        &coord.url(),
        d,
        "w",
        &["--agent", "command", "--agent-command", p(&agent), "--allow-dir", p(&shared)],
    );
    let job = create_job(&mut c, "files").await;
    for (scope, key, value) in [("", "style", "terse"), (job.as_str(), "goal", "copy files")] {
        c.set_context(pb::SetContextRequest { job_id: scope.into(), key: key.into(), value: value.into() })
            .await
            .unwrap();
    }
    let ids = add(
        &mut c,
        &job,
        vec![
            pb::TaskSpec {
                context_files: vec![pb::ContextFile {
                    path: "input.txt".into(),
                    contents: b"from the caller".to_vec(),
                }],
                expected_outputs: vec!["out/copy.txt".into(), "note.md".into()],
                ..spec("produce the copy")
            },
            pb::TaskSpec { expected_outputs: vec!["missing.txt".into()], ..spec("forget it") },
            pb::TaskSpec { working_dir: p(&shared.join("project")).into(), ..spec("work in-place") },
        ],
    )
    .await;
    let status = wait_idle(&mut c, &job).await;
    assert_eq!((status.completed, status.failed), (2, 1), "{status:?}");

    let done = task(&mut c, ids[0]).await;
    let result = done.result.unwrap();
    let arts: Vec<(String, Vec<u8>)> = result.artifacts.into_iter().map(|a| (a.path, a.contents)).collect();
    assert_eq!(
        arts,
        vec![("out/copy.txt".to_string(), b"from the caller".to_vec()), ("note.md".to_string(), b"note\n".to_vec())]
    );
    let prompt = std::fs::read_to_string(d.join(format!("prompt-{}", ids[0]))).unwrap();
    assert_eq!(
        prompt,
        "## Shared context\n- global.style: terse\n- job.goal: copy files\n\n## Context files\nThese files are in your working directory:\n- input.txt (15 bytes)\n\n## Expected outputs\nCreate these files, relative to your working directory:\n- out/copy.txt\n- note.md\n\n## Task\nproduce the copy"
    );
    // A completed attempt's fresh workspace is removed; a failed one is kept for inspection.
    assert!(!w.work_dir.join(&job).join(format!("{}-1", ids[0])).exists());
    assert!(w.work_dir.join(&job).join(format!("{}-1", ids[1])).exists());

    let failed = task(&mut c, ids[1]).await;
    assert_eq!(failed.reason, "expected outputs missing: missing.txt");

    // A working directory under an --allow-dir root is used in place, and kept.
    let made = std::fs::read_to_string(shared.join("project").join("made-here")).unwrap();
    assert_eq!(made.trim(), p(&shared.join("project").canonicalize().unwrap()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verification_hooks_pass_and_fail_as_configured() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let coord = Coordinator::start(d, &[]);
    let mut c = coord.client().await;
    let agent = script(d, "agent.sh", "echo content > result.txt");
    let _w = WorkerProc::start(&coord.url(), d, "w", &["--agent", "command", "--agent-command", p(&agent)]);
    let job = create_job(&mut c, "verification").await;
    let hook = |command: &str, description: &str, fail_on_error: bool, timeout_seconds: u32| pb::VerificationHook {
        command: command.into(),
        description: description.into(),
        timeout_seconds,
        fail_on_error,
    };
    let ids = add(
        &mut c,
        &job,
        vec![
            pb::TaskSpec {
                verification: vec![
                    hook("test -f result.txt", "result exists", true, 0),
                    hook("echo advisory; exit 4", "lint", false, 0),
                ],
                ..spec("passes")
            },
            pb::TaskSpec {
                verification: vec![hook("grep -q nope result.txt", "must say nope", true, 0)],
                ..spec("fails")
            },
            pb::TaskSpec { verification: vec![hook("sleep 1000", "slow check", true, 1)], ..spec("hangs") },
        ],
    )
    .await;
    let status = wait_idle(&mut c, &job).await;
    assert_eq!((status.completed, status.failed), (1, 2), "{status:?}");

    let ok = task(&mut c, ids[0]).await.result.unwrap().verification;
    assert_eq!(ok.len(), 2);
    assert!(ok[0].passed && ok[0].exit_code == 0);
    assert_eq!((ok[1].passed, ok[1].exit_code, ok[1].output.as_str()), (false, 4, "advisory\n"));
    assert_eq!(ok[1].description, "lint");

    let bad = task(&mut c, ids[1]).await;
    assert!(bad.reason.starts_with("verification failed: must say nope (exit code 1)"), "{}", bad.reason);
    assert!(!bad.result.unwrap().verification[0].passed);

    let slow = task(&mut c, ids[2]).await;
    let v = &slow.result.unwrap().verification[0];
    assert!(!v.passed && v.output.contains("timed out after 1 s"), "{v:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_running_tasks_and_takes_no_new_work() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let coord = Coordinator::start(d, &[]);
    let mut c = coord.client().await;
    let agent = script(
        d,
        "agent.sh",
        &format!(
            "echo \"$ORCA_TASK_ID $WORKER_NAME\" >> \"{d}/started\"\nwhile [ ! -f \"{d}/go\" ]; do sleep 0.05; done\necho drained",
            d = p(d)
        ),
    );
    let args = ["--agent", "command", "--agent-command", p(&agent), "--slots", "2", "--grace-seconds", "120"];
    let mut first = WorkerProc::start(&coord.url(), d, "first", &args);
    let job = create_job(&mut c, "drain").await;
    let ids = add(&mut c, &job, (0..4).map(|i| spec(&format!("t{i}"))).collect()).await;
    until("both slots to be busy", || lines(&d.join("started")).len() == 2).await;

    first.terminate();
    first.wait_log("draining: taking no new work").await;
    std::fs::write(d.join("go"), "").unwrap();
    let status = first.wait();
    assert_eq!(status.code(), Some(0), "drained worker exits 0");
    let ran: Vec<String> = lines(&d.join("started"));
    assert_eq!(ran.len(), 2, "no new task started while draining: {ran:?}");
    let s = job_status(&mut c, &job).await;
    assert_eq!((s.completed, s.pending, s.in_progress), (2, 2, 0), "{s:?}");

    // The rest runs on the next worker, each task once.
    let _second = WorkerProc::start(&coord.url(), d, "second", &args);
    assert_eq!(wait_idle(&mut c, &job).await.completed, 4);
    let tasks: HashSet<String> =
        lines(&d.join("started")).iter().map(|l| l.split(' ').next().unwrap().to_string()).collect();
    assert_eq!(tasks, ids.iter().map(|i| i.to_string()).collect());
    assert_eq!(lines(&d.join("started")).len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_sigterm_kills_at_once_and_hands_back() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let coord = Coordinator::start(d, &[]);
    let mut c = coord.client().await;
    let agent = script(
        d,
        "agent.sh",
        &format!(
            "trap '' TERM\nsleep 1000 &\n{}\n{}\nwait",
            atomic_write(d, "gc", "$!"),
            atomic_write(d, "agent", "$$")
        ),
    );
    let args = ["--agent", "command", "--agent-command", p(&agent), "--grace-seconds", "600"];
    let mut w = WorkerProc::start(&coord.url(), d, "w", &args);
    let job = create_job(&mut c, "impatient").await;
    let id = add(&mut c, &job, vec![spec("stubborn")]).await[0];
    until("the agent to start", || d.join("agent").exists()).await;
    let pids = [read_pid(&d.join("gc")), read_pid(&d.join("agent"))];

    w.terminate();
    w.wait_log("draining: taking no new work").await;
    w.terminate();
    assert_eq!(w.wait().code(), Some(0));
    until_gone(&pids).await;
    let t = task(&mut c, id).await;
    assert_eq!(t.state, pb::TaskState::Pending as i32, "handed back: {}", t.reason);
    assert!(t.reason.contains("handed back: worker shutting down"), "{}", t.reason);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claude_agent_results_carry_cost_usage_session_and_errors() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let coord = Coordinator::start(d, &[]);
    let mut c = coord.client().await;
    let init = r#"{"type":"system","subtype":"init","cwd":"/w","session_id":"sess-1","tools":["Read","Bash"],"mcp_servers":[],"model":"claude-test","permissionMode":"acceptEdits","apiKeySource":"none","uuid":"u0"}"#;
    let text = r#"{"type":"assistant","message":{"id":"msg_1","type":"message","role":"assistant","model":"claude-test","content":[{"type":"text","text":"Reading the notes now."}],"stop_reason":null,"usage":{"input_tokens":3,"output_tokens":5}},"parent_tool_use_id":null,"session_id":"sess-1","uuid":"u1"}"#;
    let tool = r#"{"type":"assistant","message":{"id":"msg_1","type":"message","role":"assistant","model":"claude-test","content":[{"type":"tool_use","id":"toolu_1","name":"Read","input":{"file_path":"notes.txt"}}],"stop_reason":null,"usage":{"input_tokens":3,"output_tokens":9}},"parent_tool_use_id":null,"session_id":"sess-1","uuid":"u2"}"#;
    let ok = r#"{"type":"result","subtype":"success","is_error":false,"duration_ms":1234,"duration_api_ms":1100,"num_turns":4,"result":"All done.","session_id":"sess-1","total_cost_usd":0.0421,"usage":{"input_tokens":120,"cache_creation_input_tokens":800,"cache_read_input_tokens":15000,"output_tokens":340,"server_tool_use":{"web_search_requests":0},"service_tier":"standard"},"permission_denials":[],"uuid":"u3"}"#;
    let err = r#"{"type":"result","subtype":"error_during_execution","is_error":true,"duration_ms":50,"num_turns":1,"result":"the tool crashed","session_id":"sess-2","total_cost_usd":0.003,"usage":{"input_tokens":10,"output_tokens":2}}"#;
    let claude = script(
        d,
        "claude",
        &format!(
            "echo \"$@\" > \"{d}/args-$ORCA_TASK_ID\"\nprompt=$(cat)\ncase \"$prompt\" in\n  *fail*) printf '%s\\n' '{init}' '{err}'; exit 1;;\n  *json*) printf '{{\\n  \"type\": \"result\",\\n  \"subtype\": \"success\",\\n  \"is_error\": false,\\n  \"result\": \"from json\",\\n  \"session_id\": \"sess-3\",\\n  \"total_cost_usd\": 0.5,\\n  \"num_turns\": 1,\\n  \"usage\": {{\"input_tokens\": 1, \"output_tokens\": 2}}\\n}}\\n';;\n  *) printf '%s\\n' '{init}' '{text}' '{tool}' '{ok}';;\nesac",
            d = p(d)
        ),
    );
    let _good = WorkerProc::start(
        &coord.url(),
        d,
        "good",
        &["--agent", "claude", "--agent-command", p(&claude), "--label", "kind=good"],
    );
    let job = create_job(&mut c, "claude").await;
    let mut watch = follow(&mut c, &job).await;
    let good = labels(&[("kind", "good")]);
    let options = pb::AgentOptions {
        model: "claude-test".into(),
        max_turns: 7,
        allowed_tools: vec!["Read".into(), "Bash(ls:*)".into()],
        permission_mode: "acceptEdits".into(),
        max_budget_usd: 0.5,
    };
    let ids = add(
        &mut c,
        &job,
        vec![
            pb::TaskSpec { agent: Some(options), required_labels: good.clone(), ..spec("summarize the notes") },
            pb::TaskSpec { required_labels: good.clone(), ..spec("please fail") },
            pb::TaskSpec { required_labels: good, ..spec("answer in json") },
        ],
    )
    .await;
    let evs = until_final(&mut watch, 3).await;
    let last = evs.last().unwrap().status.clone().unwrap();
    assert_eq!((last.completed, last.failed), (2, 1), "{last:?}");

    let args = std::fs::read_to_string(d.join(format!("args-{}", ids[0]))).unwrap();
    assert_eq!(
        args.trim(),
        "-p --output-format stream-json --verbose --permission-mode acceptEdits --model claude-test --max-turns 7 --max-budget-usd 0.5 --allowedTools Read,Bash(ls:*)"
    );
    let r = task(&mut c, ids[0]).await.result.unwrap();
    assert_eq!((r.output.as_str(), r.session_id.as_str(), r.num_turns, r.cost_usd), ("All done.", "sess-1", 4, 0.0421));
    assert_eq!(
        r.usage.unwrap(),
        pb::Usage {
            input_tokens: 120,
            output_tokens: 340,
            cache_read_input_tokens: 15000,
            cache_creation_input_tokens: 800
        }
    );
    let progress: Vec<&str> = evs
        .iter()
        .filter(|e| e.kind == pb::JobEventKind::TaskProgress as i32 && e.task_id == ids[0])
        .map(|e| e.message.as_str())
        .collect();
    // Lines waiting to be sent join one report: how they are split depends on timing.
    assert_eq!(progress.join("\n"), "Reading the notes now.\n[tool] Read");

    let failed = task(&mut c, ids[1]).await;
    assert_eq!(failed.state, pb::TaskState::Failed as i32);
    assert_eq!(failed.reason, "the tool crashed");
    let r = failed.result.unwrap();
    assert_eq!((r.session_id.as_str(), r.cost_usd, r.exit_code), ("sess-2", 0.003, 1));

    let r = task(&mut c, ids[2]).await.result.unwrap();
    assert_eq!((r.output.as_str(), r.session_id.as_str(), r.cost_usd), ("from json", "sess-3", 0.5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_prompt_quotes_the_previous_attempts_error() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let coord = Coordinator::start(d, &[]);
    let mut c = coord.client().await;
    // Every first attempt fails with a message on stderr; later ones succeed.
    let agent = script(
        d,
        "agent.sh",
        &format!(
            "cat > \"{d}/prompt-$ORCA_TASK_ID-$ORCA_ATTEMPT\"\nif [ \"$ORCA_ATTEMPT\" = 1 ]; then echo 'disk on fire' >&2; exit 3; fi\necho ok",
            d = p(d)
        ),
    );
    let _w = WorkerProc::start(&coord.url(), d, "w", &["--agent", "command", "--agent-command", p(&agent)]);
    let job = create_job(&mut c, "retry prompts").await;
    let fast = pb::RetryPolicy { initial_backoff_ms: 10, multiplier: 1.0, max_backoff_ms: 10 };
    let ids = add(
        &mut c,
        &job,
        vec![
            pb::TaskSpec { max_retries: Some(1), retry_policy: Some(fast), ..spec("retried by the coordinator") },
            spec("retried by the caller"),
        ],
    )
    .await;
    let s = wait_idle(&mut c, &job).await;
    assert_eq!((s.completed, s.failed), (1, 1), "{s:?}");
    c.retry_tasks(pb::RetryTasksRequest { job_id: job.clone(), task_ids: vec![] }).await.unwrap();
    assert_eq!(wait_idle(&mut c, &job).await.completed, 2);
    for id in ids {
        let first = std::fs::read_to_string(d.join(format!("prompt-{id}-1"))).unwrap();
        assert!(!first.contains("## Previous attempt"), "{first}");
        let second = std::fs::read_to_string(d.join(format!("prompt-{id}-2"))).unwrap();
        assert!(second.starts_with("## Previous attempt\nThe previous attempt failed with: "), "{second}");
        assert!(second.contains("disk on fire"), "{second}");
        assert!(second.contains("\n\n## Task\nretried by the"), "{second}");
        // Both attempts are in the task's history.
        let t = task(&mut c, id).await;
        let h: Vec<(u32, &str, i32, &str)> =
            t.history.iter().map(|a| (a.attempt, a.outcome.as_str(), a.exit_code, a.output_tail.trim())).collect();
        assert_eq!(h, vec![(1, "failed", 3, ""), (2, "completed", 0, "ok")], "{:?}", t.history);
        assert!(t.history.iter().all(|a| !a.worker_id.is_empty() && a.ended_ms >= a.started_ms));
    }
}
