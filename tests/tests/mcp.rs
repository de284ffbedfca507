//! `orca mcp` end to end: a scripted MCP client session over stdio (JSON-RPC, one message per
//! line) against a real coordinator and a real worker, started with the Claude Code
//! configuration entry documented in the README.

use std::process::Stdio;
use std::time::Duration;

use orca_e2e::workers::*;
use orca_e2e::*;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout};

/// One MCP session with an `orca mcp` process.
struct Session {
    child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
    next_id: u64,
    /// Notifications received so far.
    notes: Vec<Value>,
}

impl Session {
    async fn send(&mut self, msg: Value) {
        let mut line = serde_json::to_vec(&msg).unwrap();
        line.push(b'\n');
        self.stdin.write_all(&line).await.unwrap();
        self.stdin.flush().await.unwrap();
    }

    /// Sends a request and returns its response (result or error), keeping the notifications
    /// that come before it.
    async fn request(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        self.send(json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params})).await;
        loop {
            let line = tokio::time::timeout(WAIT, self.lines.next_line())
                .await
                .unwrap_or_else(|_| panic!("no reply to {method}"))
                .unwrap()
                .unwrap_or_else(|| panic!("orca mcp closed stdout during {method}"));
            let msg: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON-RPC: {line}: {e}"));
            if msg["id"] == json!(id) {
                return msg;
            }
            self.notes.push(msg);
        }
    }

    /// Calls a tool; returns (is_error, text of the first content block).
    async fn call(&mut self, tool: &str, args: Value) -> (bool, String) {
        let r = self.request("tools/call", json!({"name": tool, "arguments": args})).await;
        let res = &r["result"];
        assert!(res.is_object(), "{tool}: {r}");
        (res["isError"] == json!(true), res["content"][0]["text"].as_str().unwrap_or_default().to_string())
    }

    /// Calls a tool that must succeed and returns its JSON reply.
    async fn ok(&mut self, tool: &str, args: Value) -> Value {
        let (err, text) = self.call(tool, args).await;
        assert!(!err, "{tool} failed: {text}");
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    }
}

impl Session {
    /// Starts `orca mcp` with the README's configuration entry and initializes the session.
    async fn open(url: &str) -> Session {
        let entry = documented_entry();
        assert_eq!(entry["command"], "orca");
        let args: Vec<String> =
            entry["args"].as_array().unwrap().iter().map(|a| a.as_str().unwrap().to_string()).collect();
        let mut child = tokio::process::Command::new(binary("orca"))
            .args(&args)
            .env("ORCA_COORDINATOR", url)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut s = Session { child, stdin, lines, next_id: 0, notes: Vec::new() };

        let init = s
            .request(
                "initialize",
                json!({"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "e2e", "version": "1"}}),
            )
            .await;
        assert_eq!(init["result"]["serverInfo"]["name"], "orca", "{init}");
        assert!(init["result"]["capabilities"]["tools"].is_object(), "{init}");
        s.send(json!({"jsonrpc": "2.0", "method": "notifications/initialized"})).await;

        s
    }
}

/// The `mcpServers` entry of the README's "Agents (MCP)" section.
fn documented_entry() -> Value {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    let start = readme.find("```json\n{\n  \"mcpServers\"").expect("README has the MCP configuration entry");
    let body = &readme[start + 8..];
    let end = body.find("```").unwrap();
    let v: Value = serde_json::from_str(&body[..end]).expect("the documented entry is JSON");
    v["mcpServers"]["orca"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_runs_a_job_through_the_mcp_tools() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let coord = Coordinator::start(d, &[]);
    let agent = script(
        d,
        "agent.sh",
        r#"prompt=$(cat)
case "$prompt" in
  *SLOW*) exec sleep 600;;
  *FAIL*) echo "refusing: FAIL in the prompt" >&2; exit 1;;
esac
printf '%s\n' "$prompt" | awk '/^## Expected outputs$/ {f = 1; next} /^## / {f = 0} f && /^- / {print substr($0, 3)}' |
  while IFS= read -r p; do mkdir -p "$(dirname "$p")"; echo "made by task $ORCA_TASK_ID" > "$p"; done
echo "done $ORCA_TASK_ID""#,
    );
    let _w = WorkerProc::start(
        &coord.url(),
        d,
        "w",
        &["--agent", "command", "--agent-command", agent.to_str().unwrap(), "--slots", "3"],
    );

    let mut s = Session::open(&coord.url()).await;

    // Every tool is listed with a description and an object schema whose required fields exist.
    let listed = s.request("tools/list", json!({})).await;
    let tools = listed["result"]["tools"].as_array().unwrap();
    let mut names: Vec<&str> = tools.iter().map(|t| t["name"].as_str().unwrap()).collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "orca_add_tasks",
            "orca_apply_patches",
            "orca_cancel",
            "orca_create_job",
            "orca_get_artifact",
            "orca_get_results",
            "orca_job_status",
            "orca_retry",
            "orca_synthesize",
            "orca_wait"
        ]
    );
    for t in tools {
        assert!(t["description"].as_str().is_some_and(|d| d.len() > 30), "{t}");
        let schema = &t["inputSchema"];
        assert_eq!(schema["type"], "object", "{t}");
        let props = schema["properties"].as_object().unwrap();
        for r in schema["required"].as_array().into_iter().flatten() {
            assert!(props.contains_key(r.as_str().unwrap()), "{t}: required {r} is no property");
        }
    }

    // A job with a dependency, waited for with progress notifications.
    let job = s.ok("orca_create_job", json!({"description": "mcp e2e"})).await["job_id"].as_str().unwrap().to_string();
    let added = s
        .ok(
            "orca_add_tasks",
            json!({"job_id": job, "tasks": [
                {"prompt": "write the notes", "expected_outputs": ["notes/a.txt"], "priority": 9},
                {"prompt": "review the notes", "depends_on_index": [0]},
                {"prompt": "something independent", "name": "indie"}
            ]}),
        )
        .await;
    let ids: Vec<i64> = added["task_ids"].as_array().unwrap().iter().map(|v| v.as_i64().unwrap()).collect();
    assert_eq!(ids.len(), 3);
    let waited = s
        .request(
            "tools/call",
            json!({"name": "orca_wait", "arguments": {"job_id": job, "timeout_seconds": 120}, "_meta": {"progressToken": "w1"}}),
        )
        .await;
    let w: Value = serde_json::from_str(waited["result"]["content"][0]["text"].as_str().unwrap()).unwrap();
    assert_eq!((w["done"].clone(), w["completed"].clone()), (json!(true), json!(3)), "{w}");
    assert!(
        s.notes.iter().any(|n| n["method"] == "notifications/progress" && n["params"]["progressToken"] == "w1"),
        "progress notifications: {:?}",
        s.notes
    );
    let status = s.ok("orca_job_status", json!({"job_id": job})).await;
    assert_eq!((status["state"].clone(), status["progress_pct"].clone()), (json!("completed"), json!(100.0)));

    let results = s.ok("orca_get_results", json!({"job_id": job, "states": ["completed"]})).await;
    let tasks = results["tasks"].as_array().unwrap();
    assert_eq!(tasks.len(), 3);
    let first = tasks.iter().find(|t| t["task_id"] == ids[0]).unwrap();
    assert_eq!(first["artifacts"][0]["path"], "notes/a.txt");
    assert_eq!(first["output"].as_str().unwrap().trim(), format!("done {}", ids[0]));
    let (err, text) = s.call("orca_get_artifact", json!({"task_id": ids[0], "path": "notes/a.txt"})).await;
    assert!(!err, "{text}");
    assert_eq!(text.trim(), format!("made by task {}", ids[0]));
    let (_, report) = s.call("orca_synthesize", json!({"job_id": job, "prompt": "Summarize the notes"})).await;
    assert!(
        report.starts_with("# Synthesis request\nSummarize the notes\n\n# Results: 3 tasks, 3 completed"),
        "{report}"
    );

    // A second job: cancel a running task, retry a failed one, cancel the job.
    let job2 = s.ok("orca_create_job", json!({"description": "mcp e2e 2", "max_running": 4, "budget_usd": 9.5})).await
        ["job_id"]
        .as_str()
        .unwrap()
        .to_string();
    let st = s.ok("orca_job_status", json!({"job_id": job2})).await;
    assert_eq!((st["max_running"].as_u64(), st["budget_usd"].as_f64()), (Some(4), Some(9.5)), "{st}");
    let added =
        s.ok("orca_add_tasks", json!({"job_id": job2, "tasks": [{"prompt": "SLOW"}, {"prompt": "FAIL"}]})).await;
    let (slow, fail) = (added["task_ids"][0].as_i64().unwrap(), added["task_ids"][1].as_i64().unwrap());
    let short = s.ok("orca_wait", json!({"job_id": job2, "timeout_seconds": 0.5})).await;
    assert_eq!(short["done"], false, "the SLOW task runs for minutes: {short}");
    let c = s.ok("orca_cancel", json!({"task_id": slow, "reason": "too slow"})).await;
    assert_eq!(c["state"], "cancelled");
    let w = s.ok("orca_wait", json!({"job_id": job2, "timeout_seconds": 120})).await;
    assert_eq!((w["done"].clone(), w["failed"].clone(), w["cancelled"].clone()), (json!(true), json!(1), json!(1)));
    let failed = s.ok("orca_get_results", json!({"job_id": job2, "states": ["failed"]})).await;
    assert!(failed["tasks"][0]["error"].as_str().unwrap().contains("refusing"), "{failed}");
    let r = s.ok("orca_retry", json!({"job_id": job2})).await;
    assert_eq!(r["task_ids"], json!([fail]));
    let c = s.ok("orca_cancel", json!({"job_id": job2})).await;
    assert_eq!(c["state"], "cancelled", "{c}");

    // Refusals are tool errors carrying the coordinator's (or the server's) message.
    let (err, text) = s.call("orca_add_tasks", json!({"job_id": job, "tasks": [{"prompt": ""}]})).await;
    assert!(err && text.contains("prompt"), "{text}");
    let (err, text) = s.call("orca_job_status", json!({"job_id": "no-such-job"})).await;
    assert!(err && text.contains("not found"), "{text}");
    let (err, text) =
        s.call("orca_add_tasks", json!({"job_id": job, "tasks": [{"prompt": "x", "depends_on_index": [3]}]})).await;
    assert!(err && text.contains("tasks[0].depends_on_index"), "{text}");
    let (err, text) = s.call("orca_cancel", json!({})).await;
    assert!(err && text.contains("exactly one of job_id and task_id"), "{text}");
    let (err, text) = s.call("orca_get_artifact", json!({"task_id": ids[0], "path": "nope.txt"})).await;
    assert!(err && text.contains("notes/a.txt"), "{text}");
    // Arguments that do not fit the schema are a tool error too, naming the field.
    let (err, text) = s.call("orca_add_tasks", json!({"job_id": job, "taks": []})).await;
    assert!(err && text.contains("unknown field `taks`"), "{text}");

    // Closing stdin ends the session cleanly.
    drop(s.stdin);
    let status = tokio::time::timeout(Duration::from_secs(30), s.child.wait()).await.unwrap().unwrap();
    assert!(status.success(), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_delegates_git_work_and_applies_the_patches() {
    use orca_e2e::gitrepo::{git, git_worker, remote};
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let remote = remote(d);
    let coord = Coordinator::start(d, &[]);
    let _w = git_worker(&coord.url(), d, &remote, "w", &[]);
    let caller = d.join("caller");
    git(d, &["clone", "--quiet", remote.to_str().unwrap(), caller.to_str().unwrap()]);
    let checkout = caller.to_str().unwrap();
    let mut s = Session::open(&coord.url()).await;

    let job =
        s.ok("orca_create_job", json!({"description": "git via mcp"})).await["job_id"].as_str().unwrap().to_string();
    let tasks = json!([
        {"prompt": "echo one >> a.txt", "git_checkout": checkout},
        {"prompt": "grep -q one a.txt && echo two > n.txt", "git_checkout": checkout, "depends_on_index": [0]},
        {"prompt": "true", "git_checkout": checkout},
    ]);
    let added = s.ok("orca_add_tasks", json!({"job_id": job, "tasks": tasks})).await;
    let ids: Vec<i64> = added["task_ids"].as_array().unwrap().iter().map(|v| v.as_i64().unwrap()).collect();
    let waited = s.ok("orca_wait", json!({"job_id": job, "timeout_seconds": 120})).await;
    assert_eq!((waited["done"].as_bool(), waited["completed"].as_u64()), (Some(true), Some(3)), "{waited}");
    let results = s.ok("orca_get_results", json!({"job_id": job})).await;
    assert_eq!(results["tasks"][0]["git"]["files_changed"], 1, "{results}");
    assert_eq!(results["tasks"][2]["git"]["empty"], true, "{results}");

    // A shipped flag without a checkout, and a path that is no checkout, are refused by name.
    let (err, text) =
        s.call("orca_add_tasks", json!({"job_id": job, "tasks": [{"prompt": "x", "ship_changes": true}]})).await;
    assert!(err && text.contains("tasks[0].ship_changes"), "{text}");
    let nowhere = d.join("nowhere");
    std::fs::create_dir_all(&nowhere).unwrap();
    let (err, text) =
        s.call("orca_add_tasks", json!({"job_id": job, "tasks": [{"prompt": "x", "git_checkout": nowhere}]})).await;
    assert!(err && text.contains("tasks[0].git_checkout: git:"), "{text}");

    let applied = s.ok("orca_apply_patches", json!({"job_id": job, "checkout": checkout})).await;
    assert_eq!(applied["applied"], json!([ids[0], ids[1]]), "{applied}");
    assert_eq!(applied["empty"], json!([ids[2]]));
    assert_eq!(std::fs::read_to_string(caller.join("a.txt")).unwrap(), "a\none\n");
    assert_eq!(std::fs::read_to_string(caller.join("n.txt")).unwrap(), "two\n");
    // A checkout where a.txt changed otherwise: the first patch conflicts; a clear refusal
    // naming the task, and the checkout left as it was.
    let other = d.join("other");
    git(d, &["clone", "--quiet", remote.to_str().unwrap(), other.to_str().unwrap()]);
    std::fs::write(other.join("a.txt"), "a\nmine\n").unwrap();
    git(&other, &["commit", "--quiet", "-am", "mine"]);
    let (err, text) = s.call("orca_apply_patches", json!({"job_id": job, "checkout": other})).await;
    assert!(err && text.contains(&format!("the patch of task {} does not apply", ids[0])), "{text}");
    assert!(text.contains("no patch was applied before it"), "{text}");
    assert_eq!(git(&other, &["status", "--porcelain"]), "");
    assert_eq!(std::fs::read_to_string(other.join("a.txt")).unwrap(), "a\nmine\n");
}
