//! The web dashboard, served by the coordinator on `--http-listen`: its JSON API and live
//! events with and without tokens (plain HTTP), then the pages in a real headless Chromium
//! (ignored by default: `scripts/web-check.sh` installs chromium and chromium-driver and runs
//! them). Screenshots and the page's figures go to `target/web-screenshots/`.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use orca_e2e::webdriver::Browser;
use orca_e2e::workers::{WorkerProc, script};
use orca_e2e::*;
use orca_proto::pb;
use serde_json::{Value, json};

/// One HTTP/1.1 exchange: (status, lowercase headers, body).
fn http(addr: &str, method: &str, path: &str, token: Option<&str>, headers: &[(&str, &str)]) -> (u16, String, String) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(t) = token {
        req.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    let body = if method == "POST" { "{}" } else { "" };
    req.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, head.to_ascii_lowercase(), body.to_string())
}

fn api(addr: &str, path: &str, token: Option<&str>) -> (u16, Value) {
    let (status, _, body) = http(addr, "GET", path, token, &[]);
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

fn act(addr: &str, path: &str, token: Option<&str>) -> (u16, Value) {
    let (status, _, body) = http(addr, "POST", path, token, &[("Content-Type", "application/json")]);
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

/// A server-sent events stream, read one event at a time.
struct Sse {
    s: std::net::TcpStream,
    buf: String,
}

impl Sse {
    fn open(addr: &str, path: &str, token: Option<&str>) -> Sse {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(WAIT)).unwrap();
        let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
        write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}\r\n").unwrap();
        Sse { s, buf: String::new() }
    }

    /// The next event: (name, data).
    fn next(&mut self) -> (String, Value) {
        let mut chunk = [0u8; 4096];
        loop {
            while let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let (mut name, mut data) = (String::new(), String::new());
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        name = v.trim().to_string();
                    }
                    if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim_start());
                    }
                }
                if !name.is_empty() {
                    return (name, serde_json::from_str(&data).unwrap_or(Value::Null));
                }
            }
            let k = self.s.read(&mut chunk).unwrap();
            assert!(k > 0, "the stream ended");
            self.buf.push_str(&String::from_utf8_lossy(&chunk[..k]));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_serves_the_grpc_reads_and_actions_with_the_pages_headers() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (coord, addr) = Coordinator::start_with_http(d, &[]);
    let mut c = coord.client().await;
    let job = create_job(&mut c, "web api").await;
    let ids = add(&mut c, &job, vec![spec("one"), spec("two")]).await;

    // Pages: one HTML for every dashboard path, with the strict headers.
    for path in ["/", "/jobs", &format!("/jobs/{job}"), &format!("/tasks/{}", ids[0]), "/workers"] {
        let (status, head, body) = http(&addr, "GET", path, None, &[]);
        assert_eq!(status, 200, "{path}");
        assert!(body.contains("/assets/app.js"), "{path}");
        assert!(head.contains("content-security-policy: default-src 'none'; script-src 'self'"), "{head}");
        assert!(head.contains("x-content-type-options: nosniff") && head.contains("x-frame-options: deny"));
    }
    let (status, head, _) = http(&addr, "GET", "/assets/app.js", None, &[]);
    assert!(status == 200 && head.contains("content-type: text/javascript"), "{head}");

    let (_, s) = api(&addr, "/api/session", None);
    assert_eq!(s["auth"], false);
    let (status, j) = api(&addr, &format!("/api/jobs/{job}"), None);
    assert_eq!((status, j["total_tasks"].as_u64(), j["state"].as_str()), (200, Some(2), Some("active")), "{j}");
    let (_, page) = api(&addr, &format!("/api/jobs/{job}/tasks?page_size=1"), None);
    assert_eq!(page["tasks"][0]["task_id"], ids[0]);
    assert_eq!(page["tasks"][0]["state"], "pending");
    let token = page["next_page_token"].as_str().unwrap().to_string();
    let (_, page) = api(&addr, &format!("/api/jobs/{job}/tasks?page_size=1&page_token={token}"), None);
    assert_eq!(page["tasks"][0]["task_id"], ids[1]);
    let (_, t) = api(&addr, &format!("/api/tasks/{}", ids[0]), None);
    assert_eq!((t["prompt"].as_str(), t["job_id"].as_str()), (Some("one"), Some(job.as_str())));
    let (_, stats) = api(&addr, "/api/stats", None);
    assert_eq!(stats["tasks"]["pending"], 2, "{stats}");

    // Refusals carry the gRPC code and the field.
    let (status, e) = api(&addr, "/api/jobs/nope", None);
    assert_eq!((status, e["code"].as_str()), (404, Some("NOT_FOUND")), "{e}");
    let (status, e) = api(&addr, &format!("/api/jobs/{job}/tasks?state=done"), None);
    assert!(status == 400 && e["error"].as_str().unwrap().starts_with("state:"), "{e}");
    let (status, _) = api(&addr, "/api/nothing", None);
    assert_eq!(status, 404);

    // Actions: JSON only, same origin only; a cancelled task leaves the job's other task.
    let path = format!("/api/tasks/{}/cancel", ids[0]);
    let (status, _, _) = http(&addr, "POST", &path, None, &[("Content-Type", "text/plain")]);
    assert_eq!(status, 400, "a form's post");
    let origin = [("Content-Type", "application/json"), ("Origin", "https://evil.example")];
    let (status, _, _) = http(&addr, "POST", &path, None, &origin);
    assert_eq!(status, 403, "another site's page");
    assert_eq!(task(&mut c, ids[0]).await.state, pb::TaskState::Pending as i32, "nothing changed");
    let (status, t) = act(&addr, &path, None);
    assert_eq!((status, t["state"].as_str()), (200, Some("cancelled")), "{t}");
    let (status, r) = act(&addr, &format!("/api/tasks/{}/retry", ids[0]), None);
    assert_eq!((status, r["task_ids"].clone()), (200, json!([ids[0]])), "{r}");
    let (status, e) = act(&addr, &format!("/api/tasks/{}/retry", ids[1]), None);
    assert_eq!((status, e["code"].as_str()), (409, Some("FAILED_PRECONDITION")), "a pending task: {e}");

    // Live: the job's stream starts with its status (no task list), then its changes.
    let mut stream = Sse::open(&addr, &format!("/api/events?job={job}"), None);
    let (name, first) = stream.next();
    assert_eq!((name.as_str(), first["kind"].as_str()), ("job", Some("snapshot")), "{first}");
    assert!(first.get("tasks").is_none() && first["status"]["total_tasks"] == 2, "{first}");
    let (status, _) = act(&addr, &format!("/api/tasks/{}/cancel", ids[1]), None);
    assert_eq!(status, 200);
    let (_, next) = stream.next();
    assert_eq!(
        (next["kind"].as_str(), next["task_id"].as_i64(), next["state"].as_str()),
        (Some("task_state"), Some(ids[1]), Some("cancelled")),
        "{next}"
    );
    let (name, fleet) = Sse::open(&addr, "/api/events", None).next();
    assert_eq!((name.as_str(), fleet["kind"].as_str()), ("fleet", Some("snapshot")), "{fleet}");
    assert!(fleet["stats"]["tasks"].is_object());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_tokens_the_api_allows_what_the_grpc_call_allows() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut file = String::new();
    for (name, role, token) in [
        ("root", "admin", "a-token"),
        ("ci", "submitter", "s-token"),
        ("other", "submitter", "o-token"),
        ("dash", "reader", "r-token"),
    ] {
        file.push_str(&format!(
            "[[tokens]]\nname = \"{name}\"\nrole = \"{role}\"\nsha256 = \"{}\"\n\n",
            token_digest(token)
        ));
    }
    let auth = d.join("auth.toml");
    std::fs::write(&auth, file).unwrap();
    let (coord, addr) = Coordinator::start_with_http(d, &["--auth-file", auth.to_str().unwrap()]);
    let mut c = coord.client().await;
    let mut req = tonic::Request::new(pb::CreateJobRequest { description: "ci's".into(), ..Default::default() });
    req.metadata_mut().insert("authorization", "Bearer s-token".parse().unwrap());
    let job = c.create_job(req).await.unwrap().into_inner().job_id;

    // The page itself is public (it asks for a token); the data is not.
    assert_eq!(http(&addr, "GET", "/", None, &[]).0, 200);
    let (status, e) = api(&addr, "/api/stats", None);
    assert_eq!((status, e["code"].as_str()), (401, Some("UNAUTHENTICATED")), "{e}");
    assert_eq!(api(&addr, "/api/stats", Some("wrong")).0, 401);
    assert_eq!(api(&addr, "/api/session", Some("r-token")).1, json!({"auth": true, "name": "dash", "role": "reader"}));
    // A reader reads everything and changes nothing.
    assert_eq!(api(&addr, &format!("/api/jobs/{job}"), Some("r-token")).0, 200);
    let (status, e) = act(&addr, &format!("/api/jobs/{job}/cancel"), Some("r-token"));
    assert_eq!((status, e["code"].as_str()), (403, Some("PERMISSION_DENIED")), "{e}");
    // A submitter acts on its own jobs only; an admin on all.
    let (status, e) = act(&addr, &format!("/api/jobs/{job}/cancel"), Some("o-token"));
    assert_eq!(status, 403, "{e}");
    assert!(e["error"].as_str().unwrap().contains("does not belong to token \"other\""), "{e}");
    assert_eq!(api(&addr, &format!("/api/jobs/{job}"), Some("o-token")).0, 403);
    assert_eq!(act(&addr, &format!("/api/jobs/{job}/cancel"), Some("s-token")).0, 200);
    let mut req = tonic::Request::new(pb::CreateJobRequest { description: "ci's second".into(), ..Default::default() });
    req.metadata_mut().insert("authorization", "Bearer s-token".parse().unwrap());
    let second = c.create_job(req).await.unwrap().into_inner().job_id;
    assert_eq!(act(&addr, &format!("/api/jobs/{second}/cancel"), Some("a-token")).0, 200, "an admin acts on any job");
    // Live events need a reader too.
    let (status, _, _) = http(&addr, "GET", "/api/events", None, &[]);
    assert_eq!(status, 401);
    let (_, fleet) = Sse::open(&addr, "/api/events", Some("r-token")).next();
    assert_eq!(fleet["kind"], "snapshot");
}

// ---- in a real browser ------------------------------------------------------------------

/// Where the tests put screenshots and figures: `<workspace>/target/web-screenshots`.
fn shots() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/web-screenshots")
}

/// A worker whose agent prints `started TASK`, then waits for the file `gate-TASK` (or
/// forever, for a task to cancel), then prints `finished` and exits.
fn gated_worker(url: &str, d: &Path) -> WorkerProc {
    let agent = script(
        d,
        "agent.sh",
        &format!(
            "cat >/dev/null\necho \"started $ORCA_TASK_ID\"\nwhile [ ! -e \"{}/gate-$ORCA_TASK_ID\" ]; do sleep 0.05; done\necho finished",
            d.display()
        ),
    );
    WorkerProc::start(url, d, "w", &["--agent", "command", "--agent-command", agent.to_str().unwrap(), "--slots", "4"])
}

fn open_gate(d: &Path, id: i64) {
    std::fs::write(d.join(format!("gate-{id}")), b"").unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs chromium and chromium-driver: scripts/web-check.sh"]
async fn the_pages_follow_a_job_live_in_a_browser_and_act_on_it() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (coord, addr) = Coordinator::start_with_http(d, &[]);
    let mut c = coord.client().await;
    let _w = gated_worker(&coord.url(), d);
    let job = create_job(&mut c, "build the parser").await;
    let xss = "<script>window.__xss = 1</script><b>bold</b> & \"quotes\"";
    let ids = add(&mut c, &job, vec![spec("lexer"), spec("parser"), spec(xss), spec("docs")]).await;
    let b = Browser::start(&d.join("chromedriver.log"));
    let base = format!("http://{addr}");

    // Overview: the running job, its progress moving without a reload.
    let started = Instant::now();
    b.goto(&format!("{base}/"));
    let first = started.elapsed();
    b.until(
        "the job on the overview",
        &format!("return document.querySelector('#active-jobs [data-job-id=\"{job}\"] .progress')?.textContent"),
    );
    let to_data = started.elapsed();
    b.eval("window.__still = 'this page';", json!([]));
    open_gate(d, ids[0]);
    let progress = format!(
        "return document.querySelector('#active-jobs [data-job-id=\"{job}\"] .progress')?.textContent.startsWith('1/4')"
    );
    b.until("1/4 on the overview", &progress);
    assert_eq!(b.eval("return window.__still;", json!([])), "this page", "the page was reloaded");
    b.until(
        "4 running on the overview",
        "return document.querySelector('#counts [data-state=\"in_progress\"] .n')?.textContent.trim() === '3'",
    );
    b.screenshot(&shots().join("overview.png"));
    let timing = b.eval(
        "const n = performance.getEntriesByType('navigation')[0]; const p = performance.getEntriesByType('paint').find(e => e.name === 'first-contentful-paint'); return {response_end_ms: n.responseEnd, dom_content_loaded_ms: n.domContentLoadedEventEnd, first_contentful_paint_ms: p ? p.startTime : null, transfer_bytes: performance.getEntriesByType('resource').reduce((s, r) => s + r.transferSize, n.transferSize)};",
        json!([]),
    );

    // A task's live output, and a prompt with markup shown as text.
    b.goto(&format!("{base}/tasks/{}", ids[2]));
    b.until("the live output", "return document.querySelector('#task-output')?.textContent.includes('started')");
    assert_eq!(b.text("#task-prompt"), xss);
    assert_eq!(b.eval("return document.querySelectorAll('#task-prompt b, #task-prompt script').length;", json!([])), 0);
    assert!(b.eval("return window.__xss === undefined;", json!([])) == true, "the prompt ran as a script");
    b.screenshot(&shots().join("task.png"));
    open_gate(d, ids[2]);
    b.until(
        "the task completed on its page",
        "return document.querySelector('#task-state')?.textContent.includes('completed')",
    );
    b.until("its final output", "return document.querySelector('#task-output')?.textContent.includes('finished')");

    // Jobs and workers.
    b.goto(&format!("{base}/jobs"));
    b.until("the job in the list", &format!("return !!document.querySelector('#jobs tr[data-job-id=\"{job}\"]')"));
    b.screenshot(&shots().join("jobs.png"));
    b.goto(&format!("{base}/workers"));
    b.until(
        "the worker in the list",
        "return document.querySelectorAll('#workers tbody tr[data-worker-id]').length === 1",
    );
    b.screenshot(&shots().join("workers.png"));

    // The job's page: its tasks, and cancel (confirmed) cancels the job.
    b.goto(&format!("{base}/jobs/{job}"));
    b.until("four rows", "return document.querySelectorAll('#tasks tbody tr[data-task-id]').length === 4");
    b.until("the dependency view", "return !!document.querySelector('#graph svg, svg#graph')");
    b.screenshot(&shots().join("job.png"));
    b.click("#cancel-job");
    let asked = b.accept_dialog();
    assert!(asked.contains(&job) || asked.to_lowercase().contains("cancel"), "{asked}");
    b.until(
        "the job cancelled on its page",
        "return document.querySelector('#job-state')?.textContent.includes('cancelled')",
    );
    let j = c.get_job(pb::GetJobRequest { job_id: job.clone() }).await.unwrap().into_inner();
    assert_eq!(j.state, pb::JobState::Cancelled as i32);

    let figures = json!({
        "page_bytes": orca_coordinator::web::pages::page_weight(),
        "goto_returned_ms": first.as_millis() as u64,
        "overview_with_data_ms": to_data.as_millis() as u64,
        "browser": timing,
    });
    println!("dashboard figures: {figures}");
    std::fs::write(shots().join("figures.json"), serde_json::to_string_pretty(&figures).unwrap()).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs chromium and chromium-driver: scripts/web-check.sh"]
async fn a_job_of_100000_tasks_is_paged_not_all_in_the_page() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (coord, addr) = Coordinator::start_with_http(d, &[]);
    let mut c = coord.client().await;
    let job = create_job(&mut c, "big").await;
    for _ in 0..10 {
        add(&mut c, &job, (0..10_000).map(|i| spec(&format!("task {i}"))).collect()).await;
    }
    let b = Browser::start(&d.join("chromedriver.log"));
    let started = Instant::now();
    b.goto(&format!("http://{addr}/jobs/{job}"));
    b.until("the first page", "return document.querySelectorAll('#tasks tbody tr[data-task-id]').length === 50");
    let first_page = started.elapsed();
    let total = b.text("#job-progress");
    assert!(total.contains("100,000") || total.contains("100000"), "{total}");
    assert_eq!(
        b.eval("return document.querySelectorAll('#graph svg, svg#graph').length;", json!([])),
        0,
        "no graph for big jobs"
    );
    let first_id = b.eval("return +document.querySelector('#tasks tbody tr').dataset.taskId;", json!([]));
    let t = Instant::now();
    b.click("#tasks-next");
    b.until(
        "the second page",
        &format!("const r = document.querySelector('#tasks tbody tr'); return r && +r.dataset.taskId === {} && document.querySelectorAll('#tasks tbody tr').length === 50", first_id.as_i64().unwrap() + 50),
    );
    let next_page = t.elapsed();
    let nodes = b.eval("return document.getElementsByTagName('*').length;", json!([]));
    assert!(nodes.as_u64().unwrap() < 5_000, "{nodes} elements in the page");
    b.screenshot(&shots().join("job-100k.png"));
    let figures = json!({"first_page_ms": first_page.as_millis() as u64, "next_page_ms": next_page.as_millis() as u64, "elements": nodes});
    println!("100,000-task job: {figures}");
    std::fs::create_dir_all(shots()).unwrap();
    std::fs::write(shots().join("figures-100k.json"), figures.to_string()).unwrap();
    drop(coord);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs chromium and chromium-driver: scripts/web-check.sh"]
async fn with_tokens_the_page_asks_for_one() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let digest = token_digest("r-token");
    let auth = d.join("auth.toml");
    std::fs::write(&auth, format!("[[tokens]]\nname = \"dash\"\nrole = \"reader\"\nsha256 = \"{digest}\"\n")).unwrap();
    let (_coord, addr) = Coordinator::start_with_http(d, &["--auth-file", auth.to_str().unwrap()]);
    let b = Browser::start(&d.join("chromedriver.log"));
    b.goto(&format!("http://{addr}/"));
    b.until("the login form", "return !!document.querySelector('#login #token')");
    b.type_into("#token", "r-token");
    b.click("#login-submit");
    b.until("the overview", "return !!document.querySelector('#counts [data-state=\"completed\"] .n')");
    assert!(
        b.text("#auth-note").is_empty()
            || b.eval("return document.querySelector('#auth-note').hidden;", json!([])) == true
    );
}
