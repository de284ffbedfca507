//! `--job-webhook`: delivers job-completion notices. The dispatcher writes a notice in the
//! batch that makes a job idle (see `dispatch/schedules.rs`); this task reads the notices
//! from the database, POSTs each one's JSON document to the URL, and on a 2xx answer tells the
//! dispatcher to delete it. A failed delivery is retried with backoff (1 s doubling to 5 min)
//! for as long as the notice exists, across restarts; delivery is at least once (a crash
//! between the answer and the delete sends it again). It runs beside the dispatcher and never
//! holds it up: a slow or dead receiver only delays its own notices.
//!
//! The client is a small HTTP/1.1 one (one request per connection, `Connection: close`), over
//! TLS (the system's roots) for https:// URLs.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio_rustls::rustls;
use tokio_util::sync::CancellationToken;

use crate::dispatch::Handle;
use crate::queue::RetryPolicy;
use crate::serving::Serving;
use crate::store::{Notice, Store};

/// One delivery attempt, connection to answer.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
const FIRST_BACKOFF_MS: u32 = 1_000;
/// Retries of a notice: 1 s doubling to 5 min.
const BACKOFF: RetryPolicy = RetryPolicy { initial_ms: FIRST_BACKOFF_MS, multiplier: 2.0, max_ms: 300_000 };
/// Notices read per pass.
const PAGE: u32 = 100;

/// Where notices go.
#[derive(Clone, Debug)]
pub struct Target {
    tls: bool,
    host: String,
    port: u16,
    path: String,
}

impl Target {
    /// Parses an http:// or https:// URL.
    pub fn parse(url: &str) -> Result<Target, String> {
        let uri: http::Uri = url.parse().map_err(|e| format!("{url:?}: {e}"))?;
        let tls = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => return Err(format!("{url:?} is not an http:// or https:// URL")),
        };
        let host = uri.host().filter(|h| !h.is_empty()).ok_or_else(|| format!("{url:?} has no host"))?;
        let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
        let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
        Ok(Target { tls, host: host.trim_start_matches('[').trim_end_matches(']').to_string(), port, path })
    }
}

/// Delivers notices until `shutdown`; `wake` is notified after a commit that wrote some.
/// Only while this coordinator serves: a standby (or one reloading from its database) waits,
/// so that one coordinator delivers.
pub async fn run(
    target: Target,
    store: Store,
    handle: Handle,
    wake: Arc<Notify>,
    mut serving: tokio::sync::watch::Receiver<Serving>,
    shutdown: CancellationToken,
) {
    let tls = target.tls.then(client_config);
    // (job, seq) -> (failures so far, next try in ms).
    let mut backoff: HashMap<(String, u64), (u32, u64)> = HashMap::new();
    loop {
        while *serving.borrow_and_update() != Serving::Yes {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                changed = serving.changed() => if changed.is_err() { return },
            }
        }
        let now = crate::dispatch::now_ms();
        let notices = match store.notices(PAGE).await {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(error = %e, "job webhook: could not read the notices; trying again");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_millis(FIRST_BACKOFF_MS.into())) => continue,
                }
            }
        };
        let key = |n: &Notice| (n.job_id.clone(), n.seq);
        backoff.retain(|k, _| notices.iter().any(|n| (&n.job_id, n.seq) == (&k.0, k.1)));
        for n in &notices {
            if backoff.get(&key(n)).is_some_and(|b| b.1 > now) {
                continue;
            }
            if shutdown.is_cancelled() {
                return;
            }
            let body = document(&store, n).await;
            match deliver(&target, tls.clone(), &body).await {
                Ok(()) => {
                    tracing::info!(job = %n.job_id, "job webhook delivered");
                    backoff.remove(&key(n));
                    if handle.notice_done(n.job_id.clone(), n.seq).await.is_err() {
                        // Not serving any more (or stopping): the notice stays, and is
                        // delivered again by whichever coordinator serves next.
                        break;
                    }
                }
                Err(e) => {
                    let b = backoff.entry(key(n)).or_insert((0, 0));
                    b.0 += 1;
                    let wait = BACKOFF.backoff_ms(b.0);
                    b.1 = crate::dispatch::now_ms() + wait;
                    tracing::warn!(job = %n.job_id, error = %e, failures = b.0, retry_in_ms = wait, "job webhook not delivered");
                }
            }
        }
        let delivered = notices.iter().filter(|n| !backoff.contains_key(&key(n))).count();
        let next = backoff.values().map(|b| b.1).min();
        let sleep = match (delivered, next) {
            // Delivered some and more may wait: read again at once.
            (d, _) if d > 0 => Duration::ZERO,
            (_, Some(at)) => Duration::from_millis(at.saturating_sub(crate::dispatch::now_ms())),
            (_, None) => Duration::from_secs(3_600),
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = wake.notified() => {}
            _ = tokio::time::sleep(sleep) => {}
        }
    }
}

/// The stored document (the job's status when it went idle, with `event` and `seq`), with
/// the job's description, owner and creation time added while the job still exists.
async fn document(store: &Store, n: &Notice) -> String {
    let Ok(mut v) = serde_json::from_str::<serde_json::Value>(&n.body) else { return n.body.clone() };
    if let Ok(Some(j)) = store.job(&n.job_id).await {
        v["description"] = serde_json::json!(j.description);
        v["owner"] = serde_json::json!(j.owner.unwrap_or_default());
        v["created_at_ms"] = serde_json::json!(j.created_at_ms);
    }
    v.to_string()
}

fn client_config() -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    let found = rustls_native_certs::load_native_certs();
    for e in &found.errors {
        tracing::warn!(error = %e, "job webhook: a system root certificate could not be loaded");
    }
    let (added, _) = roots.add_parsable_certificates(found.certs);
    tracing::debug!(roots = added, "job webhook: TLS roots loaded");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(config)
}

/// One POST; Ok on a 2xx answer.
async fn deliver(t: &Target, tls: Option<Arc<rustls::ClientConfig>>, body: &str) -> Result<(), String> {
    let attempt = async {
        let tcp = TcpStream::connect((t.host.as_str(), t.port)).await.map_err(|e| format!("connect: {e}"))?;
        match tls {
            None => post(tcp, t, body).await,
            Some(config) => {
                let name = rustls::pki_types::ServerName::try_from(t.host.clone()).map_err(|e| format!("host: {e}"))?;
                let stream = tokio_rustls::TlsConnector::from(config)
                    .connect(name, tcp)
                    .await
                    .map_err(|e| format!("TLS: {e}"))?;
                post(stream, t, body).await
            }
        }
    };
    tokio::time::timeout(ATTEMPT_TIMEOUT, attempt).await.map_err(|_| format!("no answer within {ATTEMPT_TIMEOUT:?}"))?
}

async fn post<S: AsyncRead + AsyncWrite + Unpin>(mut s: S, t: &Target, body: &str) -> Result<(), String> {
    let host = if t.host.contains(':') { format!("[{}]", t.host) } else { t.host.clone() };
    let head = format!(
        "POST {} HTTP/1.1\r\nHost: {host}:{}\r\nUser-Agent: orca-coordinator/{}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        t.path,
        t.port,
        orca_proto::contract::VERSION,
        body.len()
    );
    s.write_all(head.as_bytes()).await.map_err(|e| format!("send: {e}"))?;
    s.write_all(body.as_bytes()).await.map_err(|e| format!("send: {e}"))?;
    s.flush().await.map_err(|e| format!("send: {e}"))?;
    let mut answer = Vec::with_capacity(256);
    let mut buf = [0u8; 256];
    while !answer.contains(&b'\n') && answer.len() < 4_096 {
        let n = s.read(&mut buf).await.map_err(|e| format!("answer: {e}"))?;
        if n == 0 {
            break;
        }
        answer.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&answer);
    let code = line.split_whitespace().nth(1).and_then(|c| c.parse::<u16>().ok());
    match code {
        Some(c) if (200..300).contains(&c) => Ok(()),
        Some(c) => Err(format!("answered {c}")),
        None => Err(format!("no HTTP status line in {:?}", line.lines().next().unwrap_or(""))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_give_host_port_and_path() {
        let t = Target::parse("http://127.0.0.1:8080/hooks/orca?x=1").unwrap();
        assert_eq!((t.tls, t.host.as_str(), t.port, t.path.as_str()), (false, "127.0.0.1", 8080, "/hooks/orca?x=1"));
        let t = Target::parse("https://hooks.example.com").unwrap();
        assert_eq!((t.tls, t.host.as_str(), t.port, t.path.as_str()), (true, "hooks.example.com", 443, "/"));
        let t = Target::parse("http://[::1]:9/").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("::1", 9));
        assert!(Target::parse("ftp://x/").is_err());
        assert!(Target::parse("not a url").is_err());
    }
}
