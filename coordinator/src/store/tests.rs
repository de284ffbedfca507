//! The store's behaviour suite: every test runs on SQLite and on Postgres.
//!
//! Postgres comes from `ORCA_TEST_POSTGRES`, a URL of a server where the user may create
//! databases (`scripts/postgres.sh` starts a throwaway one; `scripts/test.sh` sets it). Each
//! test gets a database of its own. Without it the Postgres half is skipped with a message,
//! except under `CI=true`, where that fails.

use std::sync::atomic::{AtomicU32, Ordering};

use super::*;
use crate::queue::Counts;

/// The backends to run a test on: a fresh SQLite file, and a fresh Postgres database.
fn backends(dir: &Path) -> Vec<Target> {
    let mut out = vec![Target::Sqlite(dir.join("orca.db"))];
    match std::env::var("ORCA_TEST_POSTGRES") {
        Ok(url) if !url.is_empty() => {
            let advertise = "http://first:50051".into();
            out.push(Target::Postgres(postgres::Settings {
                url: fresh_database(&url),
                advertise,
                ..Default::default()
            }))
        }
        _ if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("CI=true but ORCA_TEST_POSTGRES is not set: the store suite must run on Postgres too")
        }
        _ => eprintln!("ORCA_TEST_POSTGRES is not set: Postgres half skipped (scripts/test.sh sets it)"),
    }
    out
}

/// `url` with its database replaced by a new name (the store creates it on open).
fn fresh_database(url: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let name = format!("orca_store_{}_{}_{n}", std::process::id(), now_nanos() % 1_000_000_000);
    orca_harness::coordinator::postgres_database(url, &name)
}

/// Opens `target` as its leader.
async fn open_leader(target: &Target, durability: Durability) -> (Store, Writer, Loaded) {
    match open(target, durability).await.unwrap() {
        (store, Opened::Leader(writer, loaded)) => (store, writer, loaded),
        (_, Opened::Standby(leader)) => panic!("{target:?}: a standby (the leader is {leader:?})"),
    }
}

fn now_nanos() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
}

fn row(task_id: i64, state: State) -> TaskRow {
    TaskRow {
        task_id,
        state,
        attempt: 2,
        retries_used: 1,
        lost_leases: 0,
        worker_id: Some("w".into()),
        not_before_ms: 0,
        cancel_cause: None,
        reason: String::new(),
    }
}

fn job(id: &str) -> JobInsert {
    JobInsert {
        job_id: id.into(),
        description: format!("job {id}"),
        metadata: None,
        owner: None,
        controls: Default::default(),
    }
}

fn task(id: i64, job: &str, state: State) -> TaskInsert {
    TaskInsert { row: row(id, state), job_id: job.into(), priority: 5, spec: vec![id as u8, 1, 2] }
}

#[tokio::test]
async fn attempts_are_kept_in_order_and_purged_with_their_job() {
    let dir = tempfile::tempdir().unwrap();
    for target in backends(dir.path()) {
        let (store, mut writer, _) = open_leader(&target, Durability::Normal).await;
        let attempt = |n: u32, outcome| AttemptRecord {
            task_id: 1,
            attempt: n,
            worker_id: Some("w".into()),
            started_ms: 10 * n as i64,
            ended_ms: 10 * n as i64 + 5,
            outcome,
            exit_code: Some(n as i32),
            cost_usd: Some(0.25),
            duration_ms: Some(5),
            output_tail: format!("out {n}"),
            ..Default::default()
        };
        let batch = WriteBatch {
            jobs: vec![job("j")],
            tasks: vec![task(1, "j", State::Completed)],
            // The same attempt twice in one batch: the last is kept (an upsert on both).
            attempts: vec![attempt(2, "failed"), attempt(2, "completed"), attempt(1, "failed")],
            ..Default::default()
        };
        writer.commit(&batch, 1).await.unwrap();
        let got = store.attempts(1).await.unwrap();
        assert_eq!(got, vec![attempt(1, "failed"), attempt(2, "completed")], "{target:?}");

        writer.commit(&WriteBatch { delete_jobs: vec!["j".into()], ..Default::default() }, 2).await.unwrap();
        while !matches!(writer.purge_step(1).await.unwrap(), Purge::Job(_)) {}
        assert!(store.attempts(1).await.unwrap().is_empty());
        assert!(store.job("j").await.unwrap().is_none());
        // Ids are never reused: the highest purged one is remembered.
        drop(writer);
        let (_, loaded) = reopen(&target, Durability::Normal).await.unwrap();
        assert_eq!(loaded.max_task_id, 1, "{target:?}");
        assert!(!loaded.purge_pending);
    }
}

/// A batch of every kind of row, written, then read back through the reads and the load.
#[tokio::test]
async fn a_batch_reads_back_the_same_and_loads_after_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    for target in backends(dir.path()) {
        let (store, mut writer, loaded) = open_leader(&target, Durability::Full).await;
        assert!(loaded.jobs.is_empty() && loaded.max_task_id == 0);
        let mut j = job("a");
        j.metadata = Some(vec![9, 9]);
        j.owner = Some("alice".into());
        j.controls = Controls { weight: 3, max_running: 2, budget_usd: 1.5, paused: true };
        let mut waiting = task(2, "a", State::Waiting);
        waiting.row.reason = "x".repeat(300);
        let schedule = ScheduleRow {
            name: "nightly".into(),
            cron: "0 3 * * *".into(),
            template: vec![1],
            next_run_ms: 100,
            last_run_ms: 0,
            last_job_id: String::new(),
            owner: None,
            created_at_ms: 1,
        };
        let batch = WriteBatch {
            jobs: vec![j, job("b")],
            tasks: vec![
                task(1, "a", State::Pending),
                waiting,
                task(3, "b", State::Failed),
                task(4, "b", State::Cancelled),
            ],
            deps: vec![(2, 1)],
            context: vec![("a".into(), "k".into(), Some("v".into())), ("".into(), "g".into(), Some("1".into()))],
            requests: vec![RequestRecord {
                key: RequestKey { caller: "c".into(), method: "AddTasks", job_id: "a".into(), request_id: "r1".into() },
                digest: vec![1, 2],
                response: vec![3, 4],
            }],
            schedule_puts: vec![schedule.clone()],
            notices: vec![Notice { job_id: "b".into(), seq: 7, body: "{}".into(), created_at_ms: 5 }],
            ..Default::default()
        };
        writer.commit(&batch, 10).await.unwrap();
        let mut cancelled = row(4, State::Cancelled);
        cancelled.cancel_cause = Some(3);
        let counts = Counts { waiting: 1, pending: 1, ..Default::default() };
        let spend = Spend { cost_usd: 0.5, input_tokens: 10, output_tokens: 20 };
        let update = WriteBatch {
            updates: vec![(row(1, State::InProgress), None), (cancelled, Some(vec![7]))],
            job_updates: vec![JobUpdate {
                job_id: "a".into(),
                counts,
                cancelled: false,
                last_seq: 42,
                controls: Controls { weight: 3, max_running: 2, budget_usd: 1.5, paused: false },
                spend,
            }],
            context: vec![("a".into(), "k".into(), Some("w".into()))],
            schedule_puts: vec![ScheduleRow { next_run_ms: 200, last_job_id: "a".into(), ..schedule.clone() }],
            ..Default::default()
        };
        writer.commit(&update, 20).await.unwrap();

        let a = store.job("a").await.unwrap().unwrap();
        assert_eq!((a.last_seq, a.counts, a.spend.cost_usd, a.spend.output_tokens), (42, counts, 0.5, 20));
        assert_eq!((a.controls.weight, a.controls.paused, a.owner.as_deref()), (3, false, Some("alice")));
        assert_eq!((a.metadata, a.created_at_ms, a.updated_at_ms), (Some(vec![9, 9]), 10, 20));
        let jobs = store.jobs("", 10, None).await.unwrap();
        assert_eq!(jobs.iter().map(|j| j.job_id.as_str()).collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(store.jobs("", 10, Some("alice")).await.unwrap().len(), 1);
        let t = store.task(4).await.unwrap().unwrap();
        assert_eq!((t.row.cancel_cause, t.result, t.spec), (Some(3), Some(vec![7]), Some(vec![4, 1, 2])));
        assert_eq!(store.context("a").await.unwrap(), vec![("k".into(), "w".into())]);
        let q = TaskQuery { job_id: Some("b"), limit: 1, max_bytes: 1 << 20, ..Default::default() };
        let (page, more) = store.tasks(&q).await.unwrap();
        assert_eq!((page.len(), page[0].row.task_id, more), (1, 3, true));
        let q = TaskQuery { states: vec![State::Cancelled], limit: 10, max_bytes: 1 << 20, ..Default::default() };
        assert_eq!(store.tasks(&q).await.unwrap().0.len(), 1);
        let (rec, tasks) = store.snapshot_page("a", 0, 10).await.unwrap().unwrap();
        assert_eq!((rec.last_seq, tasks.len()), (42, 2));
        assert_eq!(tasks[1].row.reason.chars().count(), SUMMARY_REASON_CHARS);
        assert_eq!(store.notices(10).await.unwrap()[0].seq, 7);

        assert_eq!(writer.specs(&[1, 3, 99]).await.unwrap().len(), 2);
        let key = RequestKey { caller: "c".into(), method: "AddTasks", job_id: "a".into(), request_id: "r1".into() };
        assert_eq!(writer.request(&key).await.unwrap(), Some((vec![1, 2], vec![3, 4])));
        assert_eq!(writer.tasks_by_id(&[3]).await.unwrap()[0].0, "b");
        let revived = writer.revivable(Some("b"), &[]).await.unwrap();
        assert_eq!(revived.iter().map(|t| t.row.task_id).collect::<Vec<_>>(), [3, 4], "{target:?}");
        let page = writer.live_page("a", State::Waiting, 0, 10).await.unwrap();
        assert_eq!((page.len(), page[0].spec.clone(), page[0].row.reason.len()), (1, vec![2, 1, 2], 300));
        assert_eq!(writer.live_deps("a").await.unwrap().get(&2), Some(&vec![1]));
        assert!(writer.expired_jobs(i64::MAX, 10).await.unwrap().contains(&"b".to_string()));

        drop(writer);
        let (_, loaded) = reopen(&target, Durability::Full).await.unwrap();
        assert_eq!((loaded.jobs.len(), loaded.max_task_id, loaded.context.len()), (2, 4, 2));
        assert_eq!(loaded.schedules, vec![ScheduleRow { next_run_ms: 200, last_job_id: "a".into(), ..schedule }]);
        store.close().await;
    }
}

/// A batch that fails part-way writes nothing: the whole batch is one transaction.
#[tokio::test]
async fn a_failed_batch_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    for target in backends(dir.path()) {
        let (store, mut writer, _) = open_leader(&target, Durability::Full).await;
        writer.commit(&WriteBatch { jobs: vec![job("a")], ..Default::default() }, 1).await.unwrap();
        // A new job, then a task whose id collides with... itself: the insert fails.
        let bad = WriteBatch {
            jobs: vec![job("b")],
            tasks: vec![task(1, "b", State::Pending), task(1, "b", State::Pending)],
            ..Default::default()
        };
        assert!(writer.commit(&bad, 2).await.is_err(), "{target:?}");
        assert!(store.job("b").await.unwrap().is_none(), "{target:?}");
        // The writer goes on after a failed batch.
        writer.commit(&WriteBatch { jobs: vec![job("c")], ..Default::default() }, 3).await.unwrap();
        assert!(store.job("c").await.unwrap().is_some());
    }
}

/// A database whose schema is newer than this binary is refused, naming both versions.
#[tokio::test]
async fn a_newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    for target in backends(dir.path()) {
        let (store, writer, _) = open_leader(&target, Durability::Full).await;
        let bump = match &target {
            Target::Sqlite(_) => "PRAGMA user_version = 999",
            Target::Postgres(_) => "UPDATE orca_schema SET version = 999",
        };
        match writer {
            Writer::Sqlite(mut w) => {
                sqlx::raw_sql(bump).execute(w.conn()).await.unwrap();
            }
            Writer::Postgres(mut w) => {
                sqlx::raw_sql(bump).execute(w.conn()).await.unwrap();
            }
        }
        store.close().await;
        // (The writer was consumed above; on Postgres its session, and the leader lock, end
        // when it is dropped.)
        let err = loop {
            match reopen(&target, Durability::Full).await {
                Err(Error::NotLeader(_)) => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
                r => break r.unwrap_err().to_string(),
            }
        };
        assert!(err.contains("999") && err.contains("newer"), "{err}");
    }
}

/// `--db-ssl-mode verify-full` with `--db-ssl-root-cert`: the connections are TLS, and a
/// server whose certificate the given CA did not sign is refused. (`scripts/postgres.sh`
/// serves TLS with a CA of its own, `ORCA_TEST_PG_CA`.)
#[tokio::test]
async fn postgres_over_tls_verifies_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let Some(Target::Postgres(plain)) = backends(dir.path()).pop() else { return };
    let ca = std::env::var("ORCA_TEST_PG_CA").expect("ORCA_TEST_PG_CA (set by scripts/postgres.sh start)");
    let ca = std::path::PathBuf::from(ca);
    let verified = postgres::Settings {
        ssl_mode: Some(sqlx::postgres::PgSslMode::VerifyFull),
        ssl_root_cert: Some(ca.clone()),
        ..plain.clone()
    };
    let (store, opened) = postgres::open(&verified, Durability::Full).await.unwrap();
    let (mut writer, _) = opened.unwrap();
    let tls: bool = sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .fetch_one(writer.conn())
        .await
        .unwrap();
    assert!(tls, "the writer's connection is not TLS");
    store.close().await;
    // As the root, a certificate that did not sign the server's (the server's own, not a CA).
    let wrong = postgres::Settings { ssl_root_cert: Some(ca.with_file_name("server.pem")), ..verified };
    let err = postgres::open(&wrong, Durability::Full).await.unwrap_err().to_string();
    assert!(err.to_lowercase().contains("certificate"), "{err}");
}

/// Fencing: a leader that lost its lock (a pause, a partition) while another coordinator
/// took over cannot commit anything afterwards; the second coordinator was a standby naming
/// the first until then.
#[tokio::test]
async fn a_stale_leaders_late_write_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let Some(Target::Postgres(first)) = backends(dir.path()).pop() else { return };
    let (store, mut old, _) = open_leader(&Target::Postgres(first.clone()), Durability::Full).await;
    let second = Target::Postgres(postgres::Settings { advertise: "http://second:50051".into(), ..first });
    match open(&second, Durability::Full).await.unwrap().1 {
        Opened::Standby(leader) => assert_eq!(leader, "http://first:50051"),
        Opened::Leader(..) => panic!("two leaders"),
    }
    // The old leader's lock session ends (as when Postgres gives up on a cut-off peer).
    let Writer::Postgres(w) = &mut old else { unreachable!() };
    let (old_epoch, pid) = (w.epoch(), w.lock_pid().await);
    let mut admin = plain_conn(&second).await;
    sqlx::query("SELECT pg_terminate_backend($1)").bind(pid).execute(&mut admin).await.unwrap();
    let (mut new, _) = loop {
        match reopen(&second, Durability::Full).await {
            Err(Error::NotLeader(_)) => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
            r => break r.unwrap(),
        }
    };
    let Writer::Postgres(n) = &new else { unreachable!() };
    assert_eq!(n.epoch(), old_epoch + 1);
    assert!(matches!(old.check_leader().await, Err(Error::Fenced)));
    // Its late batch is refused, and nothing of it is written.
    let late = WriteBatch { jobs: vec![job("late")], ..Default::default() };
    assert!(matches!(old.commit(&late, 5).await, Err(Error::Fenced)));
    assert!(matches!(old.purge_step(10).await, Ok(Purge::Idle) | Err(Error::Fenced)));
    assert!(store.job("late").await.unwrap().is_none());
    new.commit(&WriteBatch { jobs: vec![job("new")], ..Default::default() }, 6).await.unwrap();
    assert!(store.job("new").await.unwrap().is_some());
}

/// A plain connection to `target`'s database.
async fn plain_conn(target: &Target) -> sqlx::PgConnection {
    use sqlx::Connection;
    let Target::Postgres(s) = target else { unreachable!() };
    sqlx::PgConnection::connect(&s.url).await.unwrap()
}
