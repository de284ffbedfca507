//! Hostile kinds 6, 8 and 9, held streams and connections: WatchJob followers of a big job
//! that never read (each on its own HTTP/2 connection) and a few that read slowly; a second
//! Listen for a worker id that already listens (ids registered here, never the real
//! workers'); and raw TCP connections that never speak.
//!
//! What stays true here: everything is held until the phase's deadline and dropped when the
//! kind returns. The listeners here act as workers: every assignment they receive is
//! reported completed at once, so the tasks they take do not wait for a lease to expire.

use std::sync::Arc;
use std::time::Duration;

use orca_proto::contract::limits::MAX_BATCH;
use orca_proto::pb;
use pb::worker_gateway_client::WorkerGatewayClient;
use tonic::Streaming;
use tonic::transport::Channel;

use super::{Ctx, OK, spec};
use crate::soak::conn;
use crate::soak::tally::{CALL_TIMEOUT, code_name};

/// Watchers that read one message every [`SLOW_READ_EVERY`].
const SLOW_READERS: usize = 4;
const SLOW_READ_EVERY: Duration = Duration::from_millis(500);
/// Tasks added to the watched job every 5 s, so that its events keep flowing.
const TRICKLE: usize = 1_000;
/// Bound on the replaced Listen stream's end after the second Listen.
const REPLACED_WITHIN: Duration = Duration::from_secs(5);

/// 6: a job of `--watch-job-tasks` tasks (run by the noop workers), `--watchers` followers
/// that never read, [`SLOW_READERS`] slow ones, and a trickle of new tasks.
pub async fn watchers(ctx: Arc<Ctx>) {
    const K: &str = "6 watchers";
    let Ok(mut c) = ctx.orchestrator() else { return };
    let Some(job) = ctx.job(&mut c, K).await else { return };
    let mut added = 0;
    while added < ctx.args.watch_job_tasks && ctx.running() {
        let n = MAX_BATCH.min(ctx.args.watch_job_tasks - added);
        let tasks = (0..n).map(|i| spec(format!("watched {} ", added + i), vec![])).collect();
        if ctx.add(&mut c, K, &job, tasks).await.is_none() {
            break;
        }
        added += n;
    }
    let mut held = Vec::new();
    for _ in 0..ctx.args.watchers {
        let Ok(mut wc) = ctx.orchestrator() else { break };
        let req = pb::WatchJobRequest { job_id: job.clone(), after_seq: 0, follow: true };
        if let Ok(s) = ctx.tally.call(K, "WatchJob (never read)", OK, wc.watch_job(req)).await {
            held.push((wc, s));
        }
    }
    let slow: Vec<_> = (0..SLOW_READERS).map(|_| tokio::spawn(slow_reader(ctx.clone(), job.clone()))).collect();
    let mut n = 0;
    while ctx.pause(Duration::from_secs(5)).await {
        let tasks = (0..TRICKLE).map(|i| spec(format!("trickle {n} {i}"), vec![])).collect();
        ctx.add(&mut c, K, &job, tasks).await;
        n += 1;
    }
    drop(held);
    for h in slow {
        let _ = h.await;
    }
}

/// Reads one message every [`SLOW_READ_EVERY`]; the stream must last the phase, and its
/// first message (the snapshot) must come within it.
async fn slow_reader(ctx: Arc<Ctx>, job: String) {
    const K: &str = "6 watchers";
    let Ok(mut c) = ctx.orchestrator() else { return };
    let req = pb::WatchJobRequest { job_id: job, after_seq: 0, follow: true };
    let opened = std::time::Instant::now();
    let Ok(mut s) = ctx.tally.call(K, "WatchJob (slow reader)", OK, c.watch_job(req)).await else { return };
    let mut read = 0u64;
    while ctx.pause(SLOW_READ_EVERY).await {
        let Ok(m) = tokio::time::timeout_at(ctx.deadline.into(), s.message()).await else { break };
        match m {
            Ok(Some(ev)) => {
                read += 1;
                ctx.tally.add("6 watchers: messages read by slow readers", 1);
                if ev.kind == pb::JobEventKind::Snapshot as i32 && !ev.snapshot_more {
                    ctx.tally.add("6 watchers: snapshots seen by slow readers", 1);
                }
            }
            Ok(None) => return ctx.tally.record(K, "slow stream's end", "END", false, || "before the phase".into()),
            Err(st) => {
                let msg = st.message().to_string();
                return ctx.tally.record(K, "slow stream's end", code_name(st.code()), false, || msg);
            }
        }
    }
    if read == 0 {
        let waited = opened.elapsed().as_secs_f64();
        ctx.tally.finding(K, format!("a slow reader got no message, not even its snapshot, in {waited:.0} s"));
    }
}

fn listen_req(id: &str) -> pb::ListenRequest {
    pb::ListenRequest { worker_id: id.to_string(), context_by_stream: true }
}

/// 8: a fresh id registers and Listens, then Listens again: the second stream must be
/// accepted and the first must end with ABORTED within [`REPLACED_WITHIN`].
pub async fn second_listen(ctx: Arc<Ctx>) {
    const K: &str = "8 listen";
    let Ok(mut gw) = conn::gateway(&ctx.url) else { return };
    let mut n = 0;
    while ctx.running() {
        let id = format!("soak-listen-{n}");
        n += 1;
        let req = pb::RegisterRequest { worker_id: id.clone(), name: id.clone(), slots: 1, ..Default::default() };
        if ctx.tally.call(K, "Register", OK, gw.register(req)).await.is_err() {
            ctx.pause(Duration::from_secs(1)).await;
            continue;
        }
        let Ok(first) = ctx.tally.call(K, "Listen", OK, gw.listen(listen_req(&id))).await else { continue };
        let first = tokio::spawn(serve(ctx.clone(), gw.clone(), id.clone(), first));
        let abort_first = first.abort_handle();
        let second = ctx.tally.call(K, "Listen (second)", OK, gw.listen(listen_req(&id))).await;
        match tokio::time::timeout(REPLACED_WITHIN, first).await {
            Ok(Ok(end)) => {
                ctx.tally.record(K, "first stream's end", &end, end == "ABORTED", || "expected ABORTED".into())
            }
            Ok(Err(e)) => ctx.tally.finding(K, format!("the first stream's reader failed: {e}")),
            Err(_) => {
                abort_first.abort();
                let after = format!("{REPLACED_WITHIN:?} after the second Listen");
                ctx.tally.record(K, "first stream's end", "STILL_OPEN", false, || after);
            }
        }
        if let Ok(s) = second {
            let h = tokio::spawn(serve(ctx.clone(), gw.clone(), id, s));
            ctx.pause(Duration::from_secs(1)).await;
            h.abort();
        }
    }
}

/// Completes every assignment of the stream at once; how the stream ended (a code name,
/// or `END`).
async fn serve(
    ctx: Arc<Ctx>,
    mut gw: WorkerGatewayClient<Channel>,
    id: String,
    mut s: Streaming<pb::ListenResponse>,
) -> String {
    loop {
        match s.message().await {
            Ok(Some(m)) if !m.assignments.is_empty() => {
                let done = || Some(pb::report::Body::Completed(pb::Completed::default()));
                let reports = m
                    .assignments
                    .iter()
                    .map(|a| pb::Report { task_id: a.task_id, attempt: a.attempt, body: done(), ..Default::default() })
                    .collect();
                let req = pb::ReportRequest { worker_id: id.clone(), reports };
                if let Ok(r) = ctx.tally.call("8 listen", "Report", OK, gw.report(req)).await {
                    let refused = r.acks.iter().filter(|a| !a.accepted).count() as u64;
                    ctx.tally.add("8 listen: tasks completed", r.acks.len() as u64 - refused);
                    ctx.tally.add("8 listen: reports refused", refused);
                }
            }
            Ok(Some(_)) => {}
            Ok(None) => return "END".into(),
            Err(st) => return code_name(st.code()).into(),
        }
    }
}

/// 9: `--idle-connections` raw TCP connections that never send a byte, held all phase;
/// how many the coordinator closed is noted (closing them is its right, not a failure).
pub async fn idle_tcp(ctx: Arc<Ctx>) {
    const K: &str = "9 idle tcp";
    let mut held = Vec::new();
    for _ in 0..ctx.args.idle_connections {
        match tokio::time::timeout(CALL_TIMEOUT, tokio::net::TcpStream::connect(&ctx.addr)).await {
            Ok(Ok(s)) => {
                ctx.tally.record(K, "connect", "OK", true, String::new);
                held.push(s);
            }
            Ok(Err(e)) => ctx.tally.record(K, "connect", "ERROR", false, || e.to_string()),
            Err(_) => ctx.tally.record(K, "connect", "TIMEOUT", false, || "no connection".into()),
        }
    }
    while ctx.pause(Duration::from_secs(3_600)).await {}
    let closed = held.iter().filter(|s| closed_by_peer(s)).count();
    ctx.tally.note("9 idle tcp: closed by the coordinator during the phase", closed);
}

/// Whether the peer closed `s`: reads what it sent (its HTTP/2 settings) up to EOF or
/// would-block.
fn closed_by_peer(s: &tokio::net::TcpStream) -> bool {
    let mut buf = [0u8; 4_096];
    loop {
        match s.try_read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
            Err(_) => return true,
        }
    }
}
