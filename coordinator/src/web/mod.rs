//! The coordinator's HTTP side (`--http-listen`, off by default): `/metrics` (Prometheus
//! text exposition), `/healthz`, and the web dashboard: its page at `/`, `/jobs`,
//! `/jobs/{id}`, `/tasks/{id}` and `/workers` ([`pages`]), its JSON API under `/api/`
//! ([`api`]) and its live updates at `/api/events` ([`events`]). It runs beside gRPC on its
//! own listener (HTTPS with the coordinator's TLS settings) and stops with it.

pub mod api;
pub mod events;
pub mod pages;

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio_util::sync::CancellationToken;

use crate::auth;
use crate::service::Services;

/// How often histogram samples are folded into their buckets.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// How long a scrape or health check waits for the dispatcher's answer.
pub const STATS_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone)]
pub struct Ctx {
    /// The gRPC services (with the tokens and the dispatcher's handle), called in process by
    /// the dashboard's API.
    svc: Services,
    metrics: PrometheusHandle,
    shutdown: CancellationToken,
}

/// Serves `/metrics`, `/healthz` and the dashboard on `listener` until `shutdown`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    svc: Services,
    tls: Option<crate::tls::Tls>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let ctx = Ctx { svc, metrics: crate::metrics::install(), shutdown: shutdown.clone() };
    // Histogram samples wait in the recorder until folded into their buckets: fold them
    // every few seconds, scraped or not, so memory stays flat.
    let (upkeep, stop) = (ctx.metrics.clone(), shutdown.clone());
    tokio::spawn(async move {
        let mut every = tokio::time::interval(UPKEEP_EVERY);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = every.tick() => upkeep.run_upkeep(),
            }
        }
    });
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .merge(dashboard())
        .with_state(ctx);
    match tls {
        None => axum::serve(listener, app).with_graceful_shutdown(shutdown.cancelled_owned()).await,
        Some(tls) => serve_https(listener, app, tls, shutdown).await,
    }
}

/// The dashboard's routes, each response with [`pages::secure`]'s headers.
fn dashboard() -> Router<Ctx> {
    Router::new()
        .route("/", get(pages::index))
        .route("/jobs", get(pages::index))
        .route("/jobs/{id}", get(pages::index))
        .route("/tasks/{id}", get(pages::index))
        .route("/workers", get(pages::index))
        .route("/assets/app.js", get(pages::script))
        .route("/assets/app.css", get(pages::style))
        .route("/api/session", get(api::session))
        .route("/api/stats", get(api::stats))
        .route("/api/failures", get(api::failures))
        .route("/api/workers", get(api::workers))
        .route("/api/jobs", get(api::jobs))
        .route("/api/jobs/{id}", get(api::job))
        .route("/api/jobs/{id}/tasks", get(api::job_tasks))
        .route("/api/jobs/{id}/cancel", post(api::cancel_job))
        .route("/api/jobs/{id}/retry", post(api::retry_job))
        .route("/api/tasks/{id}", get(api::task))
        .route("/api/tasks/{id}/artifact", get(api::artifact))
        .route("/api/tasks/{id}/cancel", post(api::cancel_task))
        .route("/api/tasks/{id}/retry", post(api::retry_task))
        .route("/api/events", get(events::events))
        .route("/api/{*rest}", get(api::unknown).post(api::unknown))
        .layer(axum::middleware::map_response(pages::secure))
}

/// HTTPS with the coordinator's certificate (and client CA, when set), HTTP/1.1.
async fn serve_https(
    listener: tokio::net::TcpListener,
    app: Router,
    tls: crate::tls::Tls,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    loop {
        let tcp = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => tcp,
                Err(e) => {
                    tracing::warn!(error = %e, "HTTP accept failed; backing off");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let (acceptor, app, stop) = (tls.http_acceptor(), app.clone(), shutdown.clone());
        tokio::spawn(async move {
            let stream = match tokio::time::timeout(crate::listener::FIRST_BYTE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => return tracing::debug!(error = %e, "HTTPS handshake failed"),
                Err(_) => return,
            };
            let service = hyper_util::service::TowerToHyperService::new(app);
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            tokio::select! {
                _ = conn => {}
                _ = stop.cancelled() => {}
            }
        });
    }
}

/// The caller an HTTP request's `authorization: Bearer <token>` names (with an auth file).
fn caller(ctx: &Ctx, headers: &HeaderMap) -> Result<auth::Caller, tonic::Status> {
    ctx.svc.auth.authenticate(headers.get(header::AUTHORIZATION).map(|v| v.as_bytes()))
}

/// With an auth file, a reader token or higher.
fn readable(ctx: &Ctx, headers: &HeaderMap) -> Result<(), (StatusCode, String)> {
    let caller = caller(ctx, headers).map_err(|s| (StatusCode::UNAUTHORIZED, format!("{}\n", s.message())))?;
    if !auth::allowed(caller.role, auth::Access::Read) {
        return Err((
            StatusCode::FORBIDDEN,
            format!("token {:?} has role {}; /metrics needs reader\n", &*caller.name, caller.role.name()),
        ));
    }
    Ok(())
}

async fn metrics(State(ctx): State<Ctx>, headers: HeaderMap) -> axum::response::Response {
    if let Err(refused) = readable(&ctx, &headers) {
        return refused.into_response();
    }
    // A dispatcher that does not answer leaves the gauges as they were; /healthz says why.
    if let Ok(Ok(stats)) = tokio::time::timeout(STATS_TIMEOUT, ctx.svc.handle.stats()).await {
        crate::metrics::set_stats(&stats, ctx.svc.store.size_bytes().await);
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], ctx.metrics.render()).into_response()
}

/// 200 `serving` while the dispatcher answers; 503 with the reason otherwise.
async fn healthz(State(ctx): State<Ctx>) -> impl IntoResponse {
    if ctx.shutdown.is_cancelled() {
        return (StatusCode::SERVICE_UNAVAILABLE, "stopping\n".to_string());
    }
    if let crate::serving::Serving::No(why) = &*ctx.svc.serving.borrow() {
        return (StatusCode::SERVICE_UNAVAILABLE, format!("not serving: {why}\n"));
    }
    match tokio::time::timeout(STATS_TIMEOUT, ctx.svc.handle.stats()).await {
        Ok(Ok(s)) => (
            StatusCode::OK,
            format!(
                "serving\njobs {}\nlive_tasks {}\nworkers_connected {}\n",
                s.jobs,
                s.counts.waiting + s.counts.pending + s.counts.in_progress,
                s.workers_connected
            ),
        ),
        Ok(Err(e)) => (StatusCode::SERVICE_UNAVAILABLE, format!("unavailable: {e}\n")),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the dispatcher did not answer within {} s\n", STATS_TIMEOUT.as_secs()),
        ),
    }
}

/// Binds `addr` (port 0 picks one) and returns the listener with its bound address.
pub async fn bind(addr: SocketAddr) -> std::io::Result<(tokio::net::TcpListener, SocketAddr)> {
    let l = tokio::net::TcpListener::bind(addr).await?;
    let bound = l.local_addr()?;
    Ok((l, bound))
}
