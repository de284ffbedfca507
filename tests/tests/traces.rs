//! OpenTelemetry traces end to end: a real OTLP/gRPC receiver (the trace service of
//! `opentelemetry-proto`, served here on port 0) gets the spans of the `orca` CLI, the
//! coordinator and a worker, all in the one trace of the submit, and the agent process sees
//! `TRACEPARENT` of that trace.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use orca_e2e::workers::{WorkerProc, script};
use orca_e2e::*;
use tokio_stream::wrappers::TcpListenerStream;

/// A received span: (service, span name, trace id in hex, attributes as text).
#[derive(Clone, Debug)]
struct Received {
    service: String,
    name: String,
    trace_id: String,
    attributes: HashMap<String, String>,
}

#[derive(Clone, Default)]
struct Receiver(Arc<Mutex<Vec<Received>>>);

fn text(v: &Option<opentelemetry_proto::tonic::common::v1::AnyValue>) -> String {
    match v.as_ref().and_then(|v| v.value.as_ref()) {
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::DoubleValue(d)) => d.to_string(),
        Some(Value::BoolValue(b)) => b.to_string(),
        _ => String::new(),
    }
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        req: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut got = self.0.lock().unwrap();
        for rs in req.into_inner().resource_spans {
            let service = rs
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|kv| kv.key == "service.name")
                .map(|kv| text(&kv.value))
                .unwrap_or_default();
            for span in rs.scope_spans.into_iter().flat_map(|s| s.spans) {
                got.push(Received {
                    service: service.clone(),
                    name: span.name,
                    trace_id: span.trace_id.iter().map(|b| format!("{b:02x}")).collect(),
                    attributes: span.attributes.iter().map(|kv| (kv.key.clone(), text(&kv.value))).collect(),
                });
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_runs_from_the_cli_through_the_coordinator_and_the_worker_to_the_agent() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let server = receiver.clone();
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(server))
            .serve_with_incoming(TcpListenerStream::new(listener))
            .await
    });
    let otel = [("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()), ("OTEL_BSP_SCHEDULE_DELAY", "100")];

    let mut config = orca_harness::CoordinatorConfig::new(binary("orca-coordinator"), dir.path()).ready_within(WAIT);
    for (k, v) in otel {
        config = config.env(k, v);
    }
    let mut coord = orca_harness::Coordinator::start(config).unwrap();

    let seen = dir.path().join("traceparent");
    let agent =
        script(dir.path(), "agent.sh", &format!("printf '%s' \"$TRACEPARENT\" > {}\necho done\n", seen.display()));
    let worker = WorkerProc::start_with_env(
        &coord.url(),
        dir.path(),
        "traced",
        &["--agent", "command", "--agent-command", agent.to_str().unwrap(), "--log-format", "json"],
        &otel,
    );

    let submit = tokio::process::Command::new(binary("orca"))
        .args(["--coordinator", &coord.url(), "submit", "--json", "trace me"])
        .envs(otel)
        .output()
        .await
        .unwrap();
    assert!(submit.status.success(), "{}", String::from_utf8_lossy(&submit.stderr));
    let out: serde_json::Value = serde_json::from_slice(&submit.stdout).unwrap();
    let job = out["job_id"].as_str().unwrap().to_string();
    let mut c = orca_proto::pb::orchestrator_client::OrchestratorClient::connect(coord.url()).await.unwrap();
    assert_eq!(wait_idle(&mut c, &job).await.completed, 1);

    let traceparent = std::fs::read_to_string(&seen).unwrap();
    let trace_id = orca_telemetry::trace_id_of(&traceparent).unwrap_or_else(|| panic!("{traceparent:?}")).to_string();
    let wanted = [
        ("orca", "orca submit"),
        ("orca-coordinator", "orca.v1.Orchestrator/AddTasks"),
        ("orca-coordinator", "queued"),
        ("orca-coordinator", "dispatch"),
        ("orca-worker", "attempt"),
        ("orca-coordinator", "report"),
    ];
    let names = |got: &[Received]| -> BTreeSet<(String, String)> {
        got.iter().filter(|s| s.trace_id == trace_id).map(|s| (s.service.clone(), s.name.clone())).collect()
    };
    let started = std::time::Instant::now();
    loop {
        let got = names(&receiver.0.lock().unwrap());
        if wanted.iter().all(|(svc, name)| got.contains(&(svc.to_string(), name.to_string()))) {
            break;
        }
        if started.elapsed() > WAIT {
            let all: Vec<_> = receiver
                .0
                .lock()
                .unwrap()
                .iter()
                .map(|s| (s.service.clone(), s.name.clone(), s.trace_id.clone()))
                .collect();
            panic!("trace {trace_id}: wanted {wanted:?}, got in it {got:?}; all spans: {all:?}");
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let got = receiver.0.lock().unwrap().clone();
    let attempt = got.iter().find(|s| s.trace_id == trace_id && s.name == "attempt").unwrap();
    assert_eq!(attempt.attributes.get("worker").map(String::as_str), Some("traced"), "{attempt:?}");
    assert_eq!(attempt.attributes.get("attempt").map(String::as_str), Some("1"));
    assert_eq!(attempt.attributes.get("exit_code").map(String::as_str), Some("0"));
    assert_eq!(attempt.attributes.get("outcome").map(String::as_str), Some("completed"));
    assert!(attempt.attributes.contains_key("cost_usd") && attempt.attributes.contains_key("job_id"));
    let queued = got.iter().find(|s| s.trace_id == trace_id && s.name == "queued").unwrap();
    assert_eq!(queued.attributes.get("job_id"), Some(&job));

    // JSON logs: every line an object; the attempt's lines carry its trace id.
    let log = worker.logs();
    let lines: Vec<serde_json::Value> =
        log.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}"))).collect();
    let finished = lines.iter().find(|l| l["fields"]["message"] == "attempt finished").expect("an attempt log line");
    assert_eq!(finished["span"]["trace_id"], trace_id.as_str(), "{finished}");
    assert_eq!(finished["fields"]["outcome"], "completed");

    // A caller in any language: W3C `traceparent` metadata on AddTasks. The task's spans,
    // its verification hook's among them, join the caller's trace.
    let theirs = "4bf92f3577b34da6a3ce929d0e0e4736";
    let mut req = tonic::Request::new(orca_proto::pb::AddTasksRequest {
        job_id: job.clone(),
        tasks: vec![orca_proto::pb::TaskSpec {
            prompt: "verify me".into(),
            verification: vec![orca_proto::pb::VerificationHook { command: "true".into(), ..Default::default() }],
            ..Default::default()
        }],
        ..Default::default()
    });
    req.metadata_mut().insert("traceparent", format!("00-{theirs}-00f067aa0ba902b7-01").parse().unwrap());
    c.add_tasks(req).await.unwrap();
    assert_eq!(wait_idle(&mut c, &job).await.completed, 2);
    let started = std::time::Instant::now();
    let wanted = ["orca.v1.Orchestrator/AddTasks", "queued", "attempt", "verify", "report"];
    loop {
        let got: BTreeSet<String> =
            receiver.0.lock().unwrap().iter().filter(|s| s.trace_id == theirs).map(|s| s.name.clone()).collect();
        if wanted.iter().all(|w| got.contains(*w)) {
            break;
        }
        assert!(started.elapsed() < WAIT, "the caller's trace has only {got:?}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let verify = receiver.0.lock().unwrap().iter().find(|s| s.trace_id == theirs && s.name == "verify").cloned();
    let verify = verify.unwrap();
    assert_eq!(verify.attributes.get("passed").map(String::as_str), Some("true"), "{verify:?}");

    worker.terminate();
    let _ = coord.terminate(WAIT);
}
