//! A bounded fuzz of request decoding and validation: arbitrary bytes, and valid requests
//! with bytes flipped, cut or spliced, decoded as each RPC's request and validated. Neither
//! step may panic, hang or accept what the limits refuse. It runs with the unit tests (5,000
//! cases per property, under a second); `PROPTEST_CASES=200000 cargo test -p
//! orca-coordinator fuzz` runs it longer (done before landing: no failure, 24 s).

use orca_proto::pb;
use proptest::prelude::*;
use prost::Message;

use super::*;

/// Valid requests of every RPC whose request is validated, encoded: seeds for mutation.
fn seeds() -> Vec<Vec<u8>> {
    let spec = pb::TaskSpec {
        prompt: "p".into(),
        depends_on: vec![-1],
        context_files: vec![pb::ContextFile { path: "a/b.txt".into(), contents: b"x".to_vec() }],
        expected_outputs: vec!["out.txt".into()],
        verification: vec![pb::VerificationHook { command: "true".into(), ..Default::default() }],
        required_labels: [("gpu".to_string(), "a100".to_string())].into(),
        ..Default::default()
    };
    vec![
        pb::CreateJobRequest { description: "d".into(), ..Default::default() }.encode_to_vec(),
        pb::AddTasksRequest { job_id: "j".into(), tasks: vec![spec.clone(), spec], ..Default::default() }
            .encode_to_vec(),
        pb::RegisterRequest { slots: 2, labels: [("a".to_string(), "b".to_string())].into(), ..Default::default() }
            .encode_to_vec(),
        pb::ReportRequest {
            worker_id: "w".into(),
            reports: vec![pb::Report {
                task_id: 1,
                attempt: 1,
                body: Some(pb::report::Body::Completed(pb::Completed::default())),
                ..Default::default()
            }],
        }
        .encode_to_vec(),
        pb::SetContextRequest { job_id: "j".into(), key: "k".into(), value: "v".into() }.encode_to_vec(),
        pb::RetryTasksRequest { job_id: "j".into(), task_ids: vec![1, 2] }.encode_to_vec(),
    ]
}

/// Decodes `bytes` as every validated request and validates what decodes.
fn decode_and_validate(bytes: &[u8]) {
    if let Ok(r) = pb::CreateJobRequest::decode(bytes) {
        let _ = create_job(&r);
    }
    if let Ok(r) = pb::AddTasksRequest::decode(bytes) {
        let n = r.tasks.len();
        if let Ok((_, tasks)) = add_tasks(r) {
            assert!(n <= limits::MAX_BATCH && tasks.len() == n, "a batch over the limit was accepted");
        }
    }
    if let Ok(r) = pb::CancelJobRequest::decode(bytes) {
        let _ = cancel_job(&r);
    }
    if let Ok(r) = pb::DeleteJobRequest::decode(bytes) {
        let _ = delete_job(&r);
    }
    if let Ok(r) = pb::CancelTaskRequest::decode(bytes) {
        let _ = cancel_task(&r);
    }
    if let Ok(r) = pb::RetryTasksRequest::decode(bytes) {
        let _ = retry_tasks(&r);
    }
    if let Ok(r) = pb::SetContextRequest::decode(bytes) {
        let _ = context_key(&r);
    }
    if let Ok(r) = pb::ListTasksRequest::decode(bytes) {
        let _ = page_size("page_size", r.page_size);
        let _ = task_page_token(&r.page_token);
    }
    if let Ok(r) = pb::RegisterRequest::decode(bytes)
        && register(&r).is_ok()
    {
        assert!(r.slots >= 1 && r.slots <= limits::MAX_SLOTS, "slots {} accepted", r.slots);
    }
    if let Ok(r) = pb::HeartbeatRequest::decode(bytes) {
        let _ = heartbeat(&r);
    }
    if let Ok(r) = pb::ReportRequest::decode(bytes) {
        let _ = report(&r);
    }
}

/// `PROPTEST_CASES`, or 5,000 per property (under a second).
fn cases() -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(5_000)
}

/// A seed with some bytes replaced, a cut, and a splice of random bytes.
fn mutated() -> impl Strategy<Value = Vec<u8>> {
    let seeds = seeds();
    (
        0..seeds.len(),
        prop::collection::vec((any::<usize>(), any::<u8>()), 0..8),
        any::<usize>(),
        prop::collection::vec(any::<u8>(), 0..32),
    )
        .prop_map(move |(i, flips, cut, splice)| {
            let mut b = seeds[i].clone();
            for (at, v) in flips {
                if !b.is_empty() {
                    let n = b.len();
                    b[at % n] = v;
                }
            }
            let cut = cut % (b.len() + 1);
            b.truncate(cut.max(b.len() / 2));
            b.extend(splice);
            b
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_break_decoding_or_validation(bytes in prop::collection::vec(any::<u8>(), 0..2_048)) {
        decode_and_validate(&bytes);
    }

    #[test]
    fn mutated_requests_never_break_decoding_or_validation(bytes in mutated()) {
        decode_and_validate(&bytes);
    }
}
