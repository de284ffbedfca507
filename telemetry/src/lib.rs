//! Orca's logs and traces, shared by the coordinator, the worker and the CLI.
//!
//! - Logs go to stderr, human-readable or JSON lines (`--log-format json`), filtered by
//!   `ORCA_LOG` (`info` by default). Spans that belong to a trace record a `trace_id` field,
//!   which both formats print on every line inside them.
//! - Traces are exported over OTLP/gRPC when `OTEL_EXPORTER_OTLP_ENDPOINT` (or
//!   `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set; the exporter reads the other standard
//!   `OTEL_*` variables itself. Without it nothing is exported and [`enabled`] is false, so
//!   callers skip the work of building spans.
//! - W3C trace context (`traceparent`) travels in gRPC metadata from callers to the
//!   coordinator, is stored with each task (`TaskSpec.trace_parent`), goes to the worker with
//!   the assignment and to the agent as `TRACEPARENT`, and back in each final report.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::SystemTime;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{Span as _, TraceContextExt, Tracer as _, TracerProvider as _};
use opentelemetry::{Context, KeyValue, global};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

pub use opentelemetry::KeyValue as Attribute;

/// The gRPC metadata key (and the agent's environment variable, upper-cased) of the W3C
/// trace context.
pub const TRACEPARENT: &str = "traceparent";

/// How log lines look.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Human,
    /// One JSON object per line (with the current span's fields, `trace_id` among them).
    Json,
}

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Whether spans are exported (an OTLP endpoint is configured).
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Flushes and stops the exporter when dropped or [`Telemetry::shutdown`] is called.
#[must_use = "keep it until exit: dropping it flushes the spans"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Exports what is left (blocking, so on a blocking thread).
    pub async fn shutdown(mut self) {
        if let Some(p) = self.provider.take() {
            let _ = tokio::task::spawn_blocking(move || {
                if let Err(e) = p.shutdown() {
                    eprintln!("trace export: {e}");
                }
            })
            .await;
        }
    }
}

fn endpoint_set() -> bool {
    ["OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"]
        .iter()
        .any(|v| std::env::var_os(v).is_some_and(|s| !s.is_empty()))
}

/// Sets up logging, and trace export when an OTLP endpoint is set. Call once, inside a tokio
/// runtime (the exporter's connection lives on it). `service` names the process in traces
/// unless `OTEL_SERVICE_NAME` does.
pub fn init(service: &'static str, format: LogFormat, default_filter: &str) -> Telemetry {
    let filter = EnvFilter::try_from_env("ORCA_LOG").unwrap_or_else(|_| EnvFilter::new(default_filter));
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let fmt = match format {
        LogFormat::Human => fmt.boxed(),
        LogFormat::Json => fmt.json().with_current_span(true).with_span_list(false).boxed(),
    };
    let (provider, problem) = if endpoint_set() { exporter(service) } else { (None, None) };
    // Each layer filters for itself: ORCA_LOG quiets the logs without hiding spans from the
    // exporter, which takes every span at INFO and above (dependencies trace below that).
    let otel = provider
        .as_ref()
        .map(|p| tracing_opentelemetry::layer().with_tracer(p.tracer("orca")).with_filter(LevelFilter::INFO));
    tracing_subscriber::registry().with(fmt.with_filter(filter)).with(otel).init();
    if let Some(p) = &provider {
        global::set_text_map_propagator(TraceContextPropagator::new());
        global::set_tracer_provider(p.clone());
        ENABLED.store(true, Ordering::Relaxed);
    }
    if let Some(e) = problem {
        tracing::warn!(error = %e, "cannot export traces; running without");
    }
    Telemetry { provider }
}

fn exporter(service: &'static str) -> (Option<SdkTracerProvider>, Option<String>) {
    let exporter = match opentelemetry_otlp::SpanExporter::builder().with_tonic().build() {
        Ok(e) => e,
        Err(e) => return (None, Some(e.to_string())),
    };
    let mut resource = opentelemetry_sdk::Resource::builder();
    if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name(service);
    }
    let resource = resource.with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION"))).build();
    let provider = SdkTracerProvider::builder().with_batch_exporter(exporter).with_resource(resource).build();
    (Some(provider), None)
}

/// The context a `traceparent` value names (an empty context when malformed or empty).
fn context_of(traceparent: &str) -> Context {
    if traceparent.is_empty() {
        return Context::new();
    }
    let carrier = HashMap::from([(TRACEPARENT.to_string(), traceparent.to_string())]);
    TraceContextPropagator::new().extract_with_context(&Context::new(), &carrier)
}

/// Whether `traceparent` is a valid W3C value (`00-<32 hex>-<16 hex>-<2 hex>`, ids not zero).
pub fn is_traceparent(traceparent: &str) -> bool {
    context_of(traceparent).span().span_context().is_valid()
}

/// The `traceparent` of `span`, when it belongs to a valid trace.
pub fn traceparent(span: &tracing::Span) -> Option<String> {
    traceparent_of(&span.context())
}

fn traceparent_of(cx: &Context) -> Option<String> {
    if !cx.span().span_context().is_valid() {
        return None;
    }
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(cx, &mut carrier);
    carrier.remove(TRACEPARENT)
}

/// The trace id (32 hex digits) of a `traceparent` value.
pub fn trace_id_of(traceparent: &str) -> Option<&str> {
    traceparent.split('-').nth(1).filter(|id| id.len() == 32)
}

/// Makes `span` a child of `traceparent` and records its `trace_id` field (when the span has
/// one). An empty or malformed value leaves the span a root.
pub fn set_parent(span: &tracing::Span, traceparent: &str) {
    if enabled() && is_traceparent(traceparent) {
        let _ = span.set_parent(context_of(traceparent));
    }
    record_trace_id(span);
}

/// Records the span's trace id in its `trace_id` field, so log lines inside it show it.
pub fn record_trace_id(span: &tracing::Span) {
    if let Some(tp) = traceparent(span)
        && let Some(id) = trace_id_of(&tp)
    {
        span.record("trace_id", id);
    }
}

/// The `traceparent` in gRPC request metadata, if any.
pub fn from_metadata(md: &tonic::metadata::MetadataMap) -> Option<&str> {
    md.get(TRACEPARENT).and_then(|v| v.to_str().ok())
}

/// Wraps a message in a request carrying the current span's trace context (for clients).
pub fn request<T>(message: T) -> tonic::Request<T> {
    let mut req = tonic::Request::new(message);
    if enabled()
        && let Some(tp) = traceparent(&tracing::Span::current())
        && let Ok(v) = tp.parse()
    {
        req.metadata_mut().insert(TRACEPARENT, v);
    }
    req
}

/// Sets an attribute on the span's exported counterpart (no-op without export).
pub fn attribute(span: &tracing::Span, key: &'static str, value: impl Into<opentelemetry::Value>) {
    if enabled() {
        span.set_attribute(key, value);
    }
}

/// Exports a finished span `name` from `start` to `end`, child of `traceparent`: for intervals
/// that no code runs through (the time a task spent queued).
pub fn interval(name: &'static str, traceparent: &str, start: SystemTime, end: SystemTime, attrs: Vec<KeyValue>) {
    if !enabled() || !is_traceparent(traceparent) {
        return;
    }
    let tracer = global::tracer("orca");
    let mut span = tracer
        .span_builder(name)
        .with_start_time(start)
        .with_attributes(attrs)
        .start_with_context(&tracer, &context_of(traceparent));
    span.end_with_timestamp(end);
}

#[cfg(test)]
mod tests {
    use super::*;

    const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn traceparents_are_parsed_and_checked() {
        assert!(is_traceparent(TP));
        assert!(!is_traceparent(""));
        assert!(!is_traceparent("00-00000000000000000000000000000000-00f067aa0ba902b7-01"));
        assert!(!is_traceparent("not a traceparent"));
        assert_eq!(trace_id_of(TP), Some("4bf92f3577b34da6a3ce929d0e0e4736"));
        assert_eq!(traceparent_of(&context_of(TP)).as_deref(), Some(TP));
        assert_eq!(trace_id_of("x"), None);
    }
}
