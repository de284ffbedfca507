//! Git sources end to end: a bare repository made here is the remote; three workers with
//! separate work dirs (no shared disk) run tasks in worktrees of their own and hand back
//! patches; a chain builds on its parent across workers; push mode puts branches in the
//! remote; `orca submit --git` and `orca collect --apply` work on a caller's clone.

use std::path::Path;
use std::process::Command;

use orca_e2e::gitrepo::{IDENTITY, git, git_worker, remote};
use orca_e2e::workers::WorkerProc;
use orca_e2e::*;
use orca_proto::pb;

/// Three workers that run each prompt as a shell script, each with a label of its own.
fn workers(url: &str, d: &Path, remote: &Path) -> Vec<WorkerProc> {
    (1..=3)
        .map(|i| {
            let name = format!("w{i}");
            let label = format!("at={name}");
            git_worker(url, d, remote, &name, &["--label", &label])
        })
        .collect()
}

fn git_task(remote: &Path, prompt: &str) -> pb::TaskSpec {
    pb::TaskSpec {
        git: Some(pb::GitSource { repo: remote.display().to_string(), base: "main".into(), ..Default::default() }),
        ..spec(prompt)
    }
}

fn on(worker: &str, t: pb::TaskSpec) -> pb::TaskSpec {
    pb::TaskSpec { required_labels: [("at".to_string(), worker.to_string())].into(), ..t }
}

fn result(t: &pb::Task) -> pb::GitResult {
    *t.result.clone().and_then(|r| r.git).unwrap_or_else(|| panic!("task {} has no git result: {t:?}", t.task_id))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn git_tasks_come_back_as_patches_that_apply_in_order_across_workers() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let remote = remote(d);
    let coord = Coordinator::start(d, &[]);
    let mut c = coord.client().await;
    let _w = workers(&coord.url(), d, &remote);
    let job = create_job(&mut c, "git").await;
    let mut push = git_task(&remote, "echo pushed > e.txt");
    push.git.as_mut().unwrap().push = true;
    push.git.as_mut().unwrap().branch = "feature/e".into();
    let mut push_default = git_task(&remote, "echo default > f.txt");
    push_default.git.as_mut().unwrap().push = true;
    let mut missing = git_task(&remote, &format!("touch {}/ran-missing", d.display()));
    missing.git.as_mut().unwrap().base = "no-such-branch".into();
    let mut tag = git_task(&remote, "test -f a.txt && echo tagged > g.txt");
    tag.git.as_mut().unwrap().base = "v1".into();
    let not_allowed = pb::TaskSpec {
        git: Some(pb::GitSource { repo: d.join("other.git").display().to_string(), ..Default::default() }),
        ..spec(&format!("touch {}/ran-other", d.display()))
    };
    let tasks = vec![
        on("w1", git_task(&remote, "echo A1 >> a.txt")),
        git_task(&remote, "echo B1 >> b.txt"),
        git_task(&remote, "echo c > c.txt"),
        git_task(&remote, "true"),
        // A chain over three workers: each step needs its parent's change.
        on("w2", pb::TaskSpec { depends_on: vec![-1], ..git_task(&remote, "grep -q A1 a.txt && echo after >> a.txt") }),
        on("w3", pb::TaskSpec { depends_on: vec![-5], ..git_task(&remote, "grep -q after a.txt && echo d > d.txt") }),
        push,
        push_default,
        missing,
        tag,
        not_allowed,
    ];
    let ids = add(&mut c, &job, tasks).await;
    let s = wait_idle(&mut c, &job).await;
    assert_eq!((s.completed, s.failed), (9, 2), "{s:?}");

    // Patches with their stats; the task that changed nothing says so.
    let a1 = result(&task(&mut c, ids[0]).await);
    assert!(!a1.empty && a1.commit.len() == 40 && a1.base_commit.len() == 40, "{a1:?}");
    assert_eq!((a1.files_changed, a1.insertions, a1.deletions), (1, 1, 0));
    let patch = String::from_utf8(a1.patch.clone()).unwrap();
    assert!(patch.starts_with("From ") && patch.contains("+A1"), "{patch}");
    let nothing = result(&task(&mut c, ids[3]).await);
    assert!(nothing.empty && nothing.patch.is_empty() && nothing.commit.is_empty(), "{nothing:?}");

    // The chain: each child built on its parent (its patch holds only its own change), on
    // three different workers.
    let (child, grandchild) = (task(&mut c, ids[4]).await, task(&mut c, ids[5]).await);
    assert_eq!(child.spec.as_ref().unwrap().git.as_ref().unwrap().builds_on, ids[0]);
    assert_eq!(grandchild.spec.as_ref().unwrap().git.as_ref().unwrap().builds_on, ids[4]);
    let ran_on = [task(&mut c, ids[0]).await.worker_id, child.worker_id.clone(), grandchild.worker_id.clone()];
    assert!(ran_on[0] != ran_on[1] && ran_on[1] != ran_on[2] && ran_on[0] != ran_on[2], "{ran_on:?}");
    let child_patch = String::from_utf8(result(&child).patch).unwrap();
    assert!(child_patch.contains("+after") && !child_patch.contains("+A1"), "{child_patch}");
    assert_eq!(result(&child).base_commit, a1.base_commit, "the chain keeps its base");

    // Push mode: the branches are in the remote, at the tasks' commits.
    let pushed = result(&task(&mut c, ids[6]).await);
    assert!(pushed.pushed && pushed.branch == "feature/e", "{pushed:?}");
    assert_eq!(git(&remote, &["rev-parse", "refs/heads/feature/e"]), pushed.commit);
    let default = result(&task(&mut c, ids[7]).await);
    assert_eq!(default.branch, format!("orca/{job}/{}", ids[7]));
    assert_eq!(git(&remote, &["rev-parse", &format!("refs/heads/{}", default.branch)]), default.commit);
    assert!(!result(&task(&mut c, ids[0]).await).pushed, "patch-only by default");

    // A missing revision and a repository the workers may not use fail before the agent runs.
    let m = task(&mut c, ids[8]).await;
    assert!(m.reason.contains("revision no-such-branch not found"), "{}", m.reason);
    assert_eq!(m.attempts, 1, "not retried");
    let o = task(&mut c, ids[10]).await;
    assert!(o.reason.starts_with("worker policy: ") && o.reason.contains("--allow-repo"), "{}", o.reason);
    assert!(!d.join("ran-missing").exists() && !d.join("ran-other").exists(), "an agent ran");

    // Worktrees are cleaned up: no workspace of this job is left in any work dir.
    for w in ["w1", "w2", "w3"] {
        let jobs = d.join(format!("work-{w}"));
        let left: Vec<_> =
            std::fs::read_dir(jobs.join(&job)).map(|r| r.flatten().map(|e| e.path()).collect()).unwrap_or_default();
        assert!(left.is_empty(), "{w} kept {left:?}");
    }

    // The caller applies every patch, in dependency order, to a clone of the remote.
    let caller = d.join("caller");
    git(d, &["clone", "--quiet", remote.to_str().unwrap(), caller.to_str().unwrap()]);
    let out = Command::new(binary("orca"))
        .current_dir(&caller)
        .envs(IDENTITY)
        .env("ORCA_COORDINATOR", coord.url())
        .args(["collect", &job, "--apply", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let applied: Vec<i64> = doc["applied"].as_array().unwrap().iter().map(|v| v.as_i64().unwrap()).collect();
    assert_eq!(applied, vec![ids[0], ids[1], ids[2], ids[4], ids[5], ids[6], ids[7], ids[9]], "{doc}");
    assert_eq!(doc["empty"], serde_json::json!([ids[3]]));
    assert_eq!(std::fs::read_to_string(caller.join("a.txt")).unwrap(), "a\nA1\nafter\n");
    for f in ["b.txt", "c.txt", "d.txt", "e.txt", "f.txt", "g.txt"] {
        assert!(caller.join(f).exists(), "{f}");
    }
    assert_eq!(git(&caller, &["rev-list", "--count", "HEAD"]), "9", "one commit per patch");
    assert!(git(&caller, &["log", "-1", "--format=%B"]).contains(&format!("Orca-Task: {}", ids[9])));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_git_task_builds_on_at_most_one_git_dependency() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let coord = Coordinator::start(d, &[]);
    let mut c = coord.client().await;
    let job = create_job(&mut c, "git deps").await;
    let repo = Path::new("/srv/repo.git");
    let other = pb::TaskSpec {
        git: Some(pb::GitSource { repo: "https://example.com/other.git".into(), ..Default::default() }),
        ..spec("other repo")
    };
    let both = pb::TaskSpec { depends_on: vec![-1, -2], ..git_task(repo, "merge") };
    let req = |tasks| pb::AddTasksRequest { job_id: job.clone(), tasks, ..Default::default() };
    let e = c.add_tasks(req(vec![git_task(repo, "a"), git_task(repo, "b"), both])).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e.message().starts_with("tasks[2].depends_on: builds on 2 git tasks"), "{}", e.message());
    // Existing tasks count the same (read from the store).
    let ids = add(&mut c, &job, vec![git_task(repo, "a"), git_task(repo, "b"), other, spec("plain")]).await;
    let both = pb::TaskSpec { depends_on: vec![ids[0], ids[1]], ..git_task(repo, "merge") };
    let e = c.add_tasks(req(vec![both])).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    // One of the same repository, others of another repository or without git: fine.
    let fine = pb::TaskSpec { depends_on: vec![ids[0], ids[2], ids[3]], ..git_task(repo, "next") };
    let id = add(&mut c, &job, vec![fine]).await[0];
    assert_eq!(task(&mut c, id).await.spec.unwrap().git.unwrap().builds_on, ids[0]);
    // A caller's builds_on is replaced; bad names are refused with the field named.
    let mut forged = git_task(repo, "forged");
    forged.git.as_mut().unwrap().builds_on = ids[1];
    let id = add(&mut c, &job, vec![forged]).await[0];
    assert_eq!(task(&mut c, id).await.spec.unwrap().git.unwrap().builds_on, 0);
    for (field, g) in [
        ("git.repo", pb::GitSource { repo: "-uhttps://x".into(), ..Default::default() }),
        ("git.repo", pb::GitSource { repo: "ext::sh -c x".into(), ..Default::default() }),
        ("git.base", pb::GitSource { repo: "/r".into(), base: "a..b".into(), ..Default::default() }),
        ("git.branch", pb::GitSource { repo: "/r".into(), branch: "-f".into(), ..Default::default() }),
        ("git.author", pb::GitSource { repo: "/r".into(), author: "nobody".into(), ..Default::default() }),
    ] {
        let t = pb::TaskSpec { git: Some(g), ..spec("x") };
        let e = c.add_tasks(req(vec![t])).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(e.message().starts_with(&format!("tasks[0].{field}")), "{}", e.message());
    }
}

fn orca(url: &str, cwd: &Path, args: &[&str]) -> (i32, serde_json::Value, String) {
    let out = Command::new(binary("orca"))
        .current_dir(cwd)
        .envs(IDENTITY)
        .env("ORCA_COORDINATOR", url)
        .args(args)
        .output()
        .unwrap();
    let json = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    (out.status.code().unwrap_or(-1), json, String::from_utf8_lossy(&out.stderr).to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_git_works_on_the_callers_checkout_and_ships_changes_only_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let remote = remote(d);
    let coord = Coordinator::start(d, &[]);
    let url = coord.url();
    let _w = git_worker(&url, d, &remote, "w", &[]);
    let caller = d.join("caller");
    git(d, &["clone", "--quiet", remote.to_str().unwrap(), caller.to_str().unwrap()]);
    std::fs::write(caller.join("a.txt"), "a\ndirty\n").unwrap();
    let prompt = "grep -q dirty a.txt && echo x >> b.txt";

    // Uncommitted changes: a clear error, nothing submitted.
    let (code, _, err) = orca(&url, &caller, &["submit", "--git", ".", "--json", prompt]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("uncommitted changes (M a.txt)") && err.contains("--ship-changes"), "{err}");

    // Shipped: the agent sees them; the task's patch holds only its own change.
    let (code, sub, err) = orca(&url, &caller, &["submit", "--git", ".", "--ship-changes", "--wait", "--json", prompt]);
    assert_eq!(code, 0, "{err} {sub}");
    let job = sub["job_id"].as_str().unwrap().to_string();
    let id = sub["tasks"][0]["task_id"].as_i64().unwrap();
    let (_, t, _) = orca(&url, &caller, &["show", &id.to_string(), "--json"]);
    assert_eq!(t["git_result"]["files_changed"], 1, "{t}");
    let mut c = coord.client().await;
    let patch = String::from_utf8(result(&task(&mut c, id).await).patch).unwrap();
    assert!(patch.contains("b.txt") && !patch.contains("a.txt |") && !patch.contains("+dirty"), "{patch}");

    // Applied to the (still dirty) checkout: the agent's commit lands, the caller's own change stays.
    let (code, doc, err) = orca(&url, &caller, &["collect", &job, "--apply", "--json"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(doc["applied"], serde_json::json!([id]));
    assert_eq!(std::fs::read_to_string(caller.join("b.txt")).unwrap(), "b\nx\n");
    assert_eq!(std::fs::read_to_string(caller.join("a.txt")).unwrap(), "a\ndirty\n");

    // Unpushed local commits are refused too unless shipped.
    git(&caller, &["checkout", "--quiet", "a.txt"]);
    std::fs::write(caller.join("h.txt"), "h\n").unwrap();
    git(&caller, &["add", "h.txt"]);
    git(&caller, &["commit", "--quiet", "-m", "local"]);
    git(&caller, &["reset", "--quiet", "--hard", "HEAD"]);
    let (code, _, err) = orca(&url, &caller, &["submit", "--git", ".", "true"]);
    assert_eq!(code, 2);
    assert!(err.contains("is not on remote origin"), "{err}");
    let (code, sub, err) = orca(
        &url,
        &caller,
        &["submit", "--git", ".", "--ship-changes", "--wait", "--json", "test -f h.txt && echo y > i.txt"],
    );
    assert_eq!(code, 0, "{err} {sub}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fetch_that_hangs_is_stopped_by_a_cancellation() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // A "git server" that accepts connections and never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let repo = format!("http://{}/stuck.git", silent.local_addr().unwrap());
    let coord = Coordinator::start(d, &[]);
    let mut c = coord.client().await;
    let args = ["--agent", "command", "--agent-command", "sh -s", "--allow-repo", "http://127.0.0.1:*", "--slots", "1"];
    let w = WorkerProc::start_with_env(&coord.url(), d, "w", &args, &IDENTITY);
    let job = create_job(&mut c, "stuck").await;
    let stuck = pb::TaskSpec { git: Some(pb::GitSource { repo, ..Default::default() }), ..spec("true") };
    let id = add(&mut c, &job, vec![stuck]).await[0];
    // The fetch has started once the connection is accepted.
    let accepted = tokio::time::timeout(WAIT, silent.accept()).await;
    let _conn = accepted.unwrap_or_else(|_| panic!("no fetch came; worker log:\n{}", w.logs())).unwrap();
    c.cancel_task(pb::CancelTaskRequest { task_id: id, reason: "stuck".into() }).await.unwrap();
    // The slot is free again: a plain task runs on the same (one-slot) worker.
    let next = add(&mut c, &job, vec![spec("echo next")]).await[0];
    let s = wait_idle(&mut c, &job).await;
    assert_eq!((s.cancelled, s.completed), (1, 1), "{s:?}");
    assert_eq!(task(&mut c, next).await.worker_id, task(&mut c, id).await.worker_id);
    // The attempt ended (its workspace is removed), though the server never answered.
    let work = d.join("work-w").join(&job);
    let left = || std::fs::read_dir(&work).map(|r| r.flatten().count()).unwrap_or(0);
    orca_e2e::workers::until("the stuck attempt's workspace removed", || left() == 0).await;
}
