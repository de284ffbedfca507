//! The ledger of the hostile mix: every call's result code, counted by kind (the numbered
//! items of docs/resilience.md's soak section) and call, and the findings: a code the call
//! was not expected to answer, a call that did not answer within [`CALL_TIMEOUT`], or a
//! broken promise seen in an answer (an idempotent call answering differently).
//!
//! What stays true here: every call made through [`Tally::call`] is counted exactly once,
//! and any outcome outside its expected codes becomes a finding, so the run fails on it.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use tonic::{Code, Status};

/// Bound on one unary call: a call slower than this is a stall of the coordinator.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(60);
/// Findings kept with their message (the count goes on past it).
const KEPT_FINDINGS: usize = 40;

/// The code's name as gRPC spells it (`FAILED_PRECONDITION`).
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// Counts by kind, then call, then code.
pub type Counts = BTreeMap<String, BTreeMap<String, BTreeMap<String, u64>>>;

#[derive(Default)]
struct Inner {
    counts: Counts,
    findings: Vec<String>,
    finding_count: u64,
    notes: BTreeMap<String, String>,
}

/// Shared by every hostile task of a phase.
#[derive(Default)]
pub struct Tally {
    inner: Mutex<Inner>,
}

impl Tally {
    /// Counts one outcome; `expected` false makes it a finding described by `detail`.
    pub fn record(&self, kind: &str, call: &str, code: &str, expected: bool, detail: impl FnOnce() -> String) {
        let mut g = self.inner.lock().unwrap();
        *g.counts.entry(kind.into()).or_default().entry(call.into()).or_default().entry(code.into()).or_default() += 1;
        if !expected {
            push_finding(&mut g, format!("{kind}: {call} answered {code}: {}", detail()));
        }
    }

    /// Runs a unary call under [`CALL_TIMEOUT`] and counts its code; a code outside `expect`
    /// (or the timeout, counted as `TIMEOUT`) is a finding. Returns the call's answer.
    pub async fn call<T>(
        &self,
        kind: &str,
        call: &str,
        expect: &[Code],
        fut: impl Future<Output = Result<tonic::Response<T>, Status>>,
    ) -> Result<T, Status> {
        let r = match tokio::time::timeout(CALL_TIMEOUT, fut).await {
            Ok(r) => r.map(tonic::Response::into_inner),
            Err(_) => {
                let msg = format!("no answer within {CALL_TIMEOUT:?}");
                self.record(kind, call, "TIMEOUT", false, || msg.clone());
                return Err(Status::deadline_exceeded(msg));
            }
        };
        let code = r.as_ref().map_or_else(Status::code, |_| Code::Ok);
        let detail = || r.as_ref().err().map(|s| s.message().chars().take(300).collect()).unwrap_or_default();
        self.record(kind, call, code_name(code), expect.contains(&code), detail);
        r
    }

    /// A broken promise seen in an answer (not a code): always a finding.
    pub fn finding(&self, kind: &str, msg: impl Into<String>) {
        let mut g = self.inner.lock().unwrap();
        push_finding(&mut g, format!("{kind}: {}", msg.into()));
    }

    /// A figure worth printing (the last value for a key wins).
    pub fn note(&self, key: impl Into<String>, value: impl ToString) {
        self.inner.lock().unwrap().notes.insert(key.into(), value.to_string());
    }

    /// Adds `n` to a numeric note.
    pub fn add(&self, key: &str, n: u64) {
        let mut g = self.inner.lock().unwrap();
        let v = g.notes.get(key).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0) + n;
        g.notes.insert(key.into(), v.to_string());
    }

    /// (counts, findings kept, number of findings, notes).
    pub fn snapshot(&self) -> (Counts, Vec<String>, u64, BTreeMap<String, String>) {
        let g = self.inner.lock().unwrap();
        (g.counts.clone(), g.findings.clone(), g.finding_count, g.notes.clone())
    }
}

fn push_finding(g: &mut Inner, msg: String) {
    g.finding_count += 1;
    if g.findings.len() < KEPT_FINDINGS {
        g.findings.push(msg);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn unexpected_codes_and_timeouts_are_findings() {
        let t = Tally::default();
        let ok: Result<tonic::Response<u8>, Status> = Ok(tonic::Response::new(1));
        assert_eq!(t.call("k", "A", &[Code::Ok], async { ok }).await.unwrap(), 1);
        let fp = t.call::<u8>("k", "A", &[Code::Ok], async { Err(Status::internal("boom")) }).await;
        assert_eq!(fp.unwrap_err().code(), Code::Internal);
        let (counts, findings, n, _) = t.snapshot();
        assert_eq!(counts["k"]["A"]["OK"], 1);
        assert_eq!(counts["k"]["A"]["INTERNAL"], 1);
        assert_eq!(n, 1);
        assert!(findings[0].contains("INTERNAL: boom"), "{findings:?}");
    }
}
