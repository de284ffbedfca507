//! Orca's coordinator: the authoritative task queue in SQLite or Postgres, the scheduler, and the gRPC
//! services (`orca.v1.Orchestrator`, `orca.v1.WorkerGateway`, health, reflection).
//!
//! # Layout, along the data path
//!
//! - [`config`]: flags and `ORCA_*` variables.
//! - [`service`]: thin gRPC handlers; [`validate`] checks every input first; [`watch`] feeds
//!   WatchJob streams.
//! - [`listener`]: the TCP accept loop (connection cap, silent connections closed).
//! - [`dispatch`]: the one actor that owns the scheduler and the database writer; it applies
//!   commands in batches, commits each batch once, then answers, assigns and publishes.
//! - [`queue`]: the pure state machine and scheduler (no tokio, sqlx or tonic).
//! - [`store`]: SQLite or Postgres through sqlx: migrations, batched writes, reads.
//!
//! [`run`] wires them together and serves until the shutdown token is cancelled.

pub mod auth;
pub mod backup;
pub mod config;
pub mod convert;
pub mod dispatch;
mod error;
pub mod fleet_watch;
pub mod idempotency;
pub mod listener;
pub mod metrics;
pub mod notify;
pub mod queue;
pub mod schedule;
pub mod service;
pub mod serving;
pub mod store;
pub mod tls;
pub mod validate;
pub mod watch;
pub mod web;
pub mod webhook;

pub use config::Config;
pub use error::Error;

use std::net::SocketAddr;

use orca_proto::contract::limits;
use orca_proto::pb;
use tokio_util::sync::CancellationToken;

/// Calls and streams open at once on one connection (HTTP/2 concurrent streams); a client
/// that wants more opens another connection, which counts against `--max-connections`.
pub const MAX_STREAMS_PER_CONNECTION: u32 = 1_024;

/// A message over the size limit is RESOURCE_EXHAUSTED (the caller sent too much), where
/// tonic's framing says OUT_OF_RANGE. No handler of ours answers OUT_OF_RANGE, so the code
/// alone identifies it. (Undecodable input is INVALID_ARGUMENT through `orca_proto::codec`.)
fn too_large_is_resource_exhausted<B>(mut res: http::Response<B>) -> http::Response<B> {
    let headers = res.headers_mut();
    if headers.get("grpc-status").is_some_and(|v| v.as_bytes() == b"11") {
        headers.insert("grpc-status", http::HeaderValue::from_static("8"));
    }
    res
}

/// Why the coordinator could not start, or stopped on its own. Not a gRPC category: these
/// end the process with a message for the operator.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("database: {0}")]
    Store(#[source] Error),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("--auth-file: {0}")]
    Auth(String),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("--job-webhook: {0}")]
    Webhook(String),
    #[error("cannot listen on {addr} (--http-listen): {source}")]
    HttpBind { addr: SocketAddr, source: std::io::Error },
    #[error("HTTP server: {0}")]
    Http(#[source] std::io::Error),
    #[error("cannot write {path}: {source}")]
    AddrFile { path: String, source: std::io::Error },
    #[error("reflection service: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("server: {0}")]
    Serve(#[from] tonic::transport::Error),
    #[error("the dispatcher stopped: {0}")]
    Dispatcher(#[source] Error),
    #[error("the dispatcher panicked: {0}")]
    DispatcherPanicked(#[from] tokio::task::JoinError),
}

/// Opens the database, starts the dispatcher and serves gRPC until `shutdown` is cancelled;
/// then stops accepting, ends the streams, flushes and returns.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), StartError> {
    run_with_ready(config, shutdown, None).await
}

/// [`run`], sending the bound address on `ready` once it serves (for a process that runs the
/// coordinator beside other things, `orca up`).
pub async fn run_with_ready(
    config: Config,
    shutdown: CancellationToken,
    ready: Option<tokio::sync::oneshot::Sender<SocketAddr>>,
) -> Result<(), StartError> {
    let started = std::time::Instant::now();
    let (auth, tls) = security(&config)?;
    if config.http_listen.is_some() {
        // Without a /metrics to serve, no recorder: every metric call is then a no-op.
        metrics::install();
    }
    // Bound first: the address a leader advertises to the others is the bound one.
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| StartError::Bind { addr: config.listen, source })?;
    let addr = listener.local_addr().map_err(|source| StartError::Bind { addr: config.listen, source })?;
    notify::status("loading the database");
    let advertise = config.advertise_addr.clone().unwrap_or_else(|| default_advertise(addr, tls.is_some()));
    let Database { store, dispatcher, handle, serving_rx, checkpointer, wake, standby } =
        open_database(&config, &advertise, started, &shutdown).await?;
    warn_if_exposed(addr, &auth, &tls);
    tokio::spawn(reload_on_sighup(auth.clone(), tls.clone(), shutdown.clone()));

    // A failed commit does not stop the dispatcher (it reports NOT_SERVING and reloads from
    // the database once it answers); if it stops on its own anyway, the server stops too: the
    // process exits non-zero and its supervisor restarts it.
    let on_exit = shutdown.clone();
    let token = shutdown.clone();
    let dispatcher_task = tokio::spawn(async move {
        let r = dispatcher.run(token).await;
        on_exit.cancel();
        r
    });
    let watchdog = tokio::spawn(notify::watchdog(handle.clone(), shutdown.clone()));
    if let (Some(url), Some(wake)) = (&config.job_webhook, wake) {
        let target = webhook::Target::parse(url).map_err(StartError::Webhook)?;
        let serving = serving_rx.clone();
        tokio::spawn(webhook::run(target, store.clone(), handle.clone(), wake, serving, shutdown.clone()));
    }
    let svc = service::Services {
        handle,
        store: store.clone(),
        shutdown: shutdown.clone(),
        auth: auth.clone(),
        workers: Default::default(),
        fleet: Default::default(),
        serving: serving_rx.clone(),
    };
    let http = start_http(&config, &svc, &tls, &shutdown).await?;
    if let Some(path) = &config.addr_file {
        write_addr_file(path, addr)?;
    }
    tracing::info!(%addr, standby, "serving");
    metrics::set_up(!standby);
    notify::ready();
    if let Some(tx) = ready {
        let _ = tx.send(addr);
    }
    let served = serve(&config, svc, listener, tls, serving_rx, shutdown.clone()).await;
    metrics::set_up(false);
    notify::stopping();
    shutdown.cancel();
    let _ = watchdog.await;
    let dispatched = dispatcher_task.await?;
    if let Some(h) = http {
        h.await?.map_err(StartError::Http)?;
    }
    if let Some(c) = checkpointer {
        let _ = c.await;
    }
    store.close().await;
    served?;
    dispatched.map_err(StartError::Dispatcher)?;
    tracing::info!("stopped");
    Ok(())
}

/// What opening the database starts.
struct Database {
    store: store::Store,
    dispatcher: dispatch::Dispatcher,
    handle: dispatch::Handle,
    serving_rx: tokio::sync::watch::Receiver<serving::Serving>,
    /// SQLite's WAL checkpointer.
    checkpointer: Option<tokio::task::JoinHandle<()>>,
    /// Wakes the webhook deliverer (with `--job-webhook`).
    wake: Option<std::sync::Arc<tokio::sync::Notify>>,
    /// Another coordinator leads (Postgres): this one starts as a standby.
    standby: bool,
}

/// Opens and migrates the database, loads it when this coordinator leads, and builds the
/// dispatcher (a standby's waits to lead).
async fn open_database(
    config: &Config,
    advertise: &str,
    started: std::time::Instant,
    shutdown: &CancellationToken,
) -> Result<Database, StartError> {
    let target = config.target(advertise);
    let (store, opened) = store::open(&target, config.durability()).await.map_err(StartError::Store)?;
    let (jobs, serving) = match &opened {
        store::Opened::Leader(_, loaded) => (loaded.jobs.len(), serving::Serving::Yes),
        store::Opened::Standby(leader) => (0, serving::Serving::No(Error::NotLeader(leader.clone()).to_string())),
    };
    let checkpointer = match &target {
        store::Target::Sqlite(path) => {
            Some(tokio::spawn(store::checkpointer(path.clone(), config.durability(), shutdown.clone())))
        }
        store::Target::Postgres(_) => None,
    };
    let standby = matches!(serving, serving::Serving::No(_));
    let (serving, serving_rx) = tokio::sync::watch::channel(serving);
    let settings = settings(config, target.clone(), serving);
    let wake = settings.notices.clone();
    let (dispatcher, handle) = dispatch::Dispatcher::new(opened, settings).await.map_err(StartError::Store)?;
    let live_tasks = dispatcher.live_tasks();
    let elapsed_ms = started.elapsed().as_millis() as u64;
    tracing::info!(db = %target.describe(), jobs, live_tasks, elapsed_ms, standby, %advertise, "database loaded");
    Ok(Database { store, dispatcher, handle, serving_rx, checkpointer, wake, standby })
}

/// Warns when a non-loopback address is served without authentication or without TLS.
fn warn_if_exposed(addr: SocketAddr, auth: &auth::Auth, tls: &Option<tls::Tls>) {
    if !addr.ip().is_loopback() && !auth.enabled() {
        tracing::warn!(%addr, "serving without authentication on a non-loopback address (see --auth-file)");
    }
    if !addr.ip().is_loopback() && tls.is_none() {
        tracing::warn!(%addr, "serving plaintext on a non-loopback address (see --tls-cert)");
    }
}

/// The HTTP listener (`/metrics`, `/healthz`, the dashboard) with `--http-listen`, serving on
/// its own task.
async fn start_http(
    config: &Config,
    svc: &service::Services,
    tls: &Option<tls::Tls>,
    shutdown: &CancellationToken,
) -> Result<Option<tokio::task::JoinHandle<Result<(), std::io::Error>>>, StartError> {
    let Some(at) = config.http_listen else { return Ok(None) };
    let (l, bound) = web::bind(at).await.map_err(|source| StartError::HttpBind { addr: at, source })?;
    if let Some(path) = &config.http_addr_file {
        write_addr_file(path, bound)?;
    }
    tracing::info!(addr = %bound, "serving /metrics, /healthz and the dashboard");
    let (tls, stop) = (tls.clone(), shutdown.clone());
    Ok(Some(tokio::spawn(web::serve(l, svc.clone(), tls, stop))))
}

/// SIGHUP reads the auth file again: tokens added, changed or revoked take effect for the
/// next call; a broken file is logged and the previous tokens stay.
async fn reload_on_sighup(auth: auth::Auth, tls: Option<tls::Tls>, shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hup) = signal(SignalKind::hangup()) else { return };
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            got = hup.recv() => if got.is_none() { return },
        }
        match auth.reload() {
            Ok(n) if auth.enabled() => tracing::info!(tokens = n, "SIGHUP: auth file reloaded"),
            Ok(_) => tracing::info!("SIGHUP: no auth file to reload"),
            Err(e) => tracing::error!(error = %e, "SIGHUP: auth file not reloaded; the previous tokens stay"),
        }
        match tls.as_ref().map(tls::Tls::reload) {
            Some(Ok(())) => tracing::info!("SIGHUP: TLS certificates reloaded (new connections use them)"),
            Some(Err(e)) => tracing::error!(error = %e, "SIGHUP: TLS not reloaded; the previous certificates stay"),
            None => {}
        }
    }
}

/// The auth file and the TLS files, read before anything is opened or bound.
fn security(config: &Config) -> Result<(auth::Auth, Option<tls::Tls>), StartError> {
    let auth = match &config.auth_file {
        Some(path) => auth::Auth::load(path).map_err(StartError::Auth)?,
        None => auth::Auth::off(),
    };
    let tls = match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => Some(
            tls::Tls::load(tls::TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                client_ca: config.tls_client_ca.clone(),
            })
            .map_err(StartError::Tls)?,
        ),
        _ => None,
    };
    Ok((auth, tls))
}

/// `--advertise-addr` when not set: the bound address (`http://`, or `https://` with TLS),
/// with the host name in place of an unspecified IP (0.0.0.0 or ::).
fn default_advertise(addr: SocketAddr, tls: bool) -> String {
    let scheme = if tls { "https" } else { "http" };
    if addr.ip().is_unspecified() {
        let host = orca_proto::contract::hostname();
        return format!("{scheme}://{host}:{}", addr.port());
    }
    format!("{scheme}://{addr}")
}

fn settings(
    config: &Config,
    target: store::Target,
    serving: tokio::sync::watch::Sender<serving::Serving>,
) -> dispatch::Settings {
    dispatch::Settings {
        limits: queue::Limits {
            lease_ms: config.lease_seconds as u64 * 1_000,
            max_lease_losses: config.max_lease_losses,
            forget_worker_ms: queue::FORGET_WORKER_MS,
            payload_cache_bytes: (config.payload_cache_mb as usize) << 20,
        },
        heartbeat_seconds: config.heartbeat_seconds(),
        retain_ms: config.retain_ms(),
        label_limits: config.label_limits.clone(),
        notices: config.job_webhook.as_ref().map(|_| std::sync::Arc::new(tokio::sync::Notify::new())),
        commit_timeout: target.is_postgres().then_some(dispatch::PG_COMMIT_TIMEOUT),
        target,
        durability: config.durability(),
        serving: std::sync::Arc::new(serving),
    }
}

/// Writes the bound address, then renames, so a reader never sees a partial line.
fn write_addr_file(path: &std::path::Path, addr: SocketAddr) -> Result<(), StartError> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, format!("{addr}\n"))
        .and_then(|_| std::fs::rename(&tmp, path))
        .map_err(|source| StartError::AddrFile { path: format!("address file {}", path.display()), source })
}

/// Sets both services' health from `serving` (the dispatcher clears it while the database
/// cannot commit) until `shutdown`.
async fn follow_health(
    health: tonic_health::server::HealthReporter,
    mut serving: tokio::sync::watch::Receiver<serving::Serving>,
    shutdown: CancellationToken,
) {
    use pb::orchestrator_server::OrchestratorServer;
    use pb::worker_gateway_server::WorkerGatewayServer;
    loop {
        let up = *serving.borrow_and_update() == serving::Serving::Yes;
        if shutdown.is_cancelled() {
            return;
        }
        if up {
            health.set_serving::<OrchestratorServer<service::Services>>().await;
            health.set_serving::<WorkerGatewayServer<service::Services>>().await;
        } else {
            health.set_not_serving::<OrchestratorServer<service::Services>>().await;
            health.set_not_serving::<WorkerGatewayServer<service::Services>>().await;
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            changed = serving.changed() => if changed.is_err() { return },
        }
    }
}

/// Serves the services, health and reflection on the listener until `shutdown`.
async fn serve(
    config: &Config,
    svc: service::Services,
    listener: tokio::net::TcpListener,
    tls: Option<tls::Tls>,
    serving: tokio::sync::watch::Receiver<serving::Serving>,
    shutdown: CancellationToken,
) -> Result<(), StartError> {
    let (health, health_svc) = tonic_health::server::health_reporter();
    tokio::spawn(follow_health(health.clone(), serving.clone(), shutdown.clone()));
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(orca_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let max_connections = listener::max_connections(config.max_connections.map(|n| n as usize));
    tracing::info!(
        max_connections,
        tls = tls.is_some(),
        mutual = tls.as_ref().is_some_and(tls::Tls::mutual),
        "accepting connections"
    );
    let incoming = listener::incoming(listener, max_connections, tls, shutdown.clone());
    // HTTP/2 pings find connections that died without a FIN (a cut network): the worker's
    // Listen stream then closes and it counts as disconnected.
    let ping = std::time::Duration::from_secs(config.heartbeat_seconds() as u64);
    let on_stop = async move {
        shutdown.cancelled().await;
        health.set_not_serving::<pb::orchestrator_server::OrchestratorServer<service::Services>>().await;
        tracing::info!("shutting down: no new calls accepted");
    };
    tonic::transport::Server::builder()
        .layer(metrics::RpcLayer)
        .layer(tower::util::MapResponseLayer::new(too_large_is_resource_exhausted))
        .layer(serving::ServingLayer(serving))
        .layer(auth::AuthLayer(svc.auth.clone()))
        .max_concurrent_streams(Some(MAX_STREAMS_PER_CONNECTION))
        .http2_keepalive_interval(Some(ping))
        .http2_keepalive_timeout(Some(ping.min(std::time::Duration::from_secs(20))))
        .add_service(
            pb::orchestrator_server::OrchestratorServer::new(svc.clone())
                .max_decoding_message_size(limits::MAX_MESSAGE_BYTES)
                .max_encoding_message_size(limits::MAX_MESSAGE_BYTES),
        )
        .add_service(
            pb::worker_gateway_server::WorkerGatewayServer::new(svc)
                .max_decoding_message_size(limits::MAX_MESSAGE_BYTES)
                .max_encoding_message_size(limits::MAX_MESSAGE_BYTES),
        )
        .add_service(health_svc)
        .add_service(reflection().build_v1()?)
        .add_service(reflection().build_v1alpha()?)
        .serve_with_incoming_shutdown(incoming, on_stop)
        .await?;
    Ok(())
}
