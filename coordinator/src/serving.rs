//! Whether the coordinator serves: [`Serving`], set by the dispatcher (a standby, or a
//! database that cannot commit, does not serve) and followed by the gRPC health service,
//! `/healthz` and [`ServingLayer`], which refuses `orca.v1` calls meanwhile.

use std::task::{Context, Poll};

use crate::auth::BoxFuture;

/// Whether this coordinator serves its services: the dispatcher sets it (a standby, or a
/// database that cannot commit, is not serving) and the health service, `/healthz` and
/// [`ServingLayer`] follow it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Serving {
    Yes,
    /// Why not: the message every refused call gets.
    No(String),
}

/// Refuses every `orca.v1` call with UNAVAILABLE and the reason while the coordinator does
/// not serve (health and reflection stay open, so probes and grpcurl still work).
#[derive(Clone, Debug)]
pub struct ServingLayer(pub tokio::sync::watch::Receiver<Serving>);

impl<S> tower::Layer<S> for ServingLayer {
    type Service = ServingService<S>;
    fn layer(&self, inner: S) -> ServingService<S> {
        ServingService { inner, serving: self.0.clone() }
    }
}

#[derive(Clone, Debug)]
pub struct ServingService<S> {
    inner: S,
    serving: tokio::sync::watch::Receiver<Serving>,
}

impl<S, B> tower::Service<http::Request<B>> for ServingService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        if req.uri().path().starts_with("/orca.v1.")
            && let Serving::No(why) = &*self.serving.borrow()
        {
            let status = tonic::Status::unavailable(why.clone());
            return Box::pin(std::future::ready(Ok(status.into_http())));
        }
        Box::pin(self.inner.call(req))
    }
}
