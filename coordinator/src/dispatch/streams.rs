//! The workers' assignment streams and the shared context they carry, owned by the
//! dispatcher.
//!
//! What stays true here: a message on a stream is at most [`MAX_LISTEN_MESSAGE_BYTES`] (or
//! one assignment, which the contract's task limits keep under the message limit); a worker
//! that asked for the context by stream gets each scope's contents once per stream and again
//! only after it changed, never with every assignment; a stream the worker does not read is
//! dropped, never waited on.

use std::collections::{BTreeMap, HashMap};

use orca_proto::contract::limits;
use orca_proto::pb;
use prost::Message;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tonic::Status;

use crate::Error;
use crate::queue::{Effect, JobId, TaskId, WorkerId};

/// Bytes of one Listen message the dispatcher builds; past it, the rest goes in the next.
pub const MAX_LISTEN_MESSAGE_BYTES: usize = 16 << 20;

/// The stream half of a worker's Listen call.
pub type ListenTx = mpsc::Sender<Result<pb::ListenResponse, Status>>;

/// One open Listen stream.
pub(super) struct Session {
    pub id: u64,
    pub tx: ListenTx,
    /// Cancelled when the stream is replaced or dropped: its server task then ends it.
    pub ended: CancellationToken,
    /// The worker caches the shared context per stream (`ListenRequest.context_by_stream`).
    pub context_by_stream: bool,
    /// Scope ("" or a job id) -> the version of it this stream was sent.
    pub sent: HashMap<String, u64>,
}

/// One scope of the shared context.
#[derive(Debug, Default)]
struct Scope {
    entries: BTreeMap<String, String>,
    /// Raised by every change, so streams know to send it again.
    version: u64,
    /// Keys and values together.
    bytes: usize,
}

/// The shared context: scope "" is global, any other scope is a job's.
#[derive(Debug, Default)]
pub(super) struct Context {
    scopes: HashMap<String, Scope>,
}

impl Context {
    /// The context as loaded from the store: (scope, key, value) rows.
    pub fn load(rows: Vec<(String, String, String)>) -> Context {
        let mut c = Context::default();
        for (scope, k, v) in rows {
            let s = c.scopes.entry(scope).or_default();
            s.bytes += k.len() + v.len();
            s.entries.insert(k, v);
        }
        c
    }

    /// Forgets a deleted job's scope.
    pub fn remove_scope(&mut self, scope: &str) {
        self.scopes.remove(scope);
    }

    /// Sets (or with an empty value, removes) a key, within the per-scope limits.
    pub fn set(&mut self, scope: &str, key: &str, value: &str) -> Result<(), Error> {
        let s = self.scopes.entry(scope.to_string()).or_default();
        let old = s.entries.get(key).map(|v| key.len() + v.len());
        if value.is_empty() {
            if let Some(n) = old {
                s.entries.remove(key);
                s.bytes -= n;
                s.version += 1;
            }
            return Ok(());
        }
        if old.is_none() && s.entries.len() >= limits::MAX_CONTEXT_KEYS {
            let max = limits::MAX_CONTEXT_KEYS;
            return Err(Error::ResourceExhausted(format!("key: the scope already holds {max} keys, the most allowed")));
        }
        let bytes = s.bytes - old.unwrap_or(0) + key.len() + value.len();
        if bytes > limits::MAX_CONTEXT_SCOPE_BYTES {
            let max = limits::MAX_CONTEXT_SCOPE_BYTES;
            return Err(Error::ResourceExhausted(format!("value: the scope would hold {bytes} bytes, at most {max}")));
        }
        s.entries.insert(key.to_string(), value.to_string());
        s.bytes = bytes;
        s.version += 1;
        Ok(())
    }

    fn entries(&self, scope: &str) -> Vec<pb::ContextEntry> {
        let name = if scope.is_empty() { "global" } else { "job" };
        self.scopes
            .get(scope)
            .map(|s| {
                let entry = |(k, v): (&String, &String)| pb::ContextEntry {
                    scope: name.into(),
                    key: k.clone(),
                    value: v.clone(),
                };
                s.entries.iter().map(entry).collect()
            })
            .unwrap_or_default()
    }

    fn version(&self, scope: &str) -> u64 {
        self.scopes.get(scope).map_or(0, |s| s.version)
    }

    /// Global entries, then the job's: what an assignment carries for an older worker.
    fn for_job(&self, job: &JobId) -> Vec<pb::ContextEntry> {
        let mut out = self.entries("");
        out.extend(self.entries(job.as_str()));
        out
    }
}

/// The messages for one worker, each within [`MAX_LISTEN_MESSAGE_BYTES`].
#[derive(Default)]
struct Outgoing {
    msgs: Vec<pb::ListenResponse>,
    bytes: usize,
}

impl Outgoing {
    /// The message to add `n` bytes to: the last one, or a new one when it would pass the limit.
    fn room(&mut self, n: usize) -> &mut pb::ListenResponse {
        if self.msgs.is_empty() || (self.bytes > 0 && self.bytes + n > MAX_LISTEN_MESSAGE_BYTES) {
            self.msgs.push(pb::ListenResponse::default());
            self.bytes = 0;
        }
        self.bytes += n;
        self.msgs.last_mut().expect("just ensured")
    }
}

/// Builds the assignment and cancellation messages of a batch's effects, per worker, with
/// the context scopes each stream still needs before the assignments that need them.
pub(super) fn messages(
    effects: &[Effect],
    sessions: &mut HashMap<WorkerId, Session>,
    context: &Context,
    mut git_bases: HashMap<TaskId, pb::GitBase>,
) -> HashMap<WorkerId, Vec<pb::ListenResponse>> {
    let mut per: HashMap<WorkerId, Outgoing> = HashMap::new();
    for e in effects {
        match e {
            Effect::Assign { worker, id, job, attempt, lease_expires_ms, payload, previous_error, .. } => {
                let Some(session) = sessions.get_mut(worker) else { continue };
                let mut a = pb::Assignment {
                    task_id: id.0,
                    job_id: job.to_string(),
                    attempt: *attempt,
                    spec: payload.as_deref().and_then(|p| pb::TaskSpec::decode(p).ok()),
                    lease_expires_ms: *lease_expires_ms as i64,
                    context: Vec::new(),
                    previous_error: previous_error.as_deref().unwrap_or_default().to_string(),
                    git_base: git_bases.remove(id),
                };
                let mut scopes = Vec::new();
                if session.context_by_stream {
                    for scope in ["", job.as_str()] {
                        let version = context.version(scope);
                        if session.sent.get(scope).copied().unwrap_or(0) != version {
                            session.sent.insert(scope.to_string(), version);
                            scopes.push(pb::ContextScope { job_id: scope.into(), entries: context.entries(scope) });
                        }
                    }
                } else {
                    a.context = context.for_job(job);
                }
                let n = a.encoded_len() + scopes.iter().map(Message::encoded_len).sum::<usize>();
                let msg = per.entry(worker.clone()).or_default().room(n);
                msg.contexts.extend(scopes);
                msg.assignments.push(a);
            }
            Effect::Revoke { worker, id, attempt, reason } => {
                let c = pb::Cancellation { task_id: id.0, attempt: *attempt, reason: reason.clone() };
                per.entry(worker.clone()).or_default().room(c.encoded_len()).cancellations.push(c);
            }
            _ => {}
        }
    }
    per.into_iter().map(|(w, o)| (w, o.msgs)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_scopes_are_bounded_in_keys_and_bytes() {
        let mut c = Context::default();
        c.set("", "a", "1").unwrap();
        assert_eq!(c.version(""), 1);
        c.set("", "a", "").unwrap();
        assert_eq!((c.version(""), c.entries("").len()), (2, 0));
        let big = "v".repeat(limits::MAX_CONTEXT_VALUE_BYTES);
        let fit = limits::MAX_CONTEXT_SCOPE_BYTES / (big.len() + 3);
        for i in 0..fit {
            c.set("j", &format!("k{i:02}"), &big).unwrap();
        }
        let e = c.set("j", "one-more", &big).unwrap_err();
        assert!(matches!(e, Error::ResourceExhausted(ref m) if m.starts_with("value:")), "{e:?}");
        // Replacing a value does not count it twice.
        c.set("j", "k00", &big).unwrap();
        for i in 0..limits::MAX_CONTEXT_KEYS {
            c.set("keys", &format!("{i}"), "x").unwrap();
        }
        let e = c.set("keys", "another", "x").unwrap_err();
        assert!(matches!(e, Error::ResourceExhausted(ref m) if m.starts_with("key:")), "{e:?}");
    }

    #[test]
    fn outgoing_messages_split_by_bytes() {
        let mut o = Outgoing::default();
        o.room(MAX_LISTEN_MESSAGE_BYTES / 2).assignments.push(pb::Assignment::default());
        o.room(MAX_LISTEN_MESSAGE_BYTES / 2).assignments.push(pb::Assignment::default());
        o.room(1).assignments.push(pb::Assignment::default());
        // A single item larger than the budget still goes, alone.
        o.room(2 * MAX_LISTEN_MESSAGE_BYTES).assignments.push(pb::Assignment::default());
        let sizes: Vec<usize> = o.msgs.iter().map(|m| m.assignments.len()).collect();
        assert_eq!(sizes, vec![2, 1, 1]);
    }
}
