//! The shared context a Listen stream carries once (`ListenRequest.context_by_stream`): the
//! coordinator sends each scope's full contents before the first assignment that needs it
//! and again after it changes; assignments arrive without it. This cache lives exactly as
//! long as one stream (the coordinator tracks what it sent per stream) and fills each
//! assignment's context (global entries, then the job's) before the session sees it.

use std::collections::HashMap;

use orca_proto::pb;

/// The scopes received on one stream: job id ("" for global) -> entries.
#[derive(Debug, Default)]
pub struct StreamContext {
    scopes: HashMap<String, Vec<pb::ContextEntry>>,
}

impl StreamContext {
    /// Takes the message's scopes, then gives each of its assignments the context it needs.
    pub fn apply(&mut self, msg: &mut pb::ListenResponse) {
        for scope in msg.contexts.drain(..) {
            if scope.entries.is_empty() {
                self.scopes.remove(&scope.job_id);
            } else {
                self.scopes.insert(scope.job_id, scope.entries);
            }
        }
        for a in &mut msg.assignments {
            if a.context.is_empty() {
                let global = self.scopes.get("").into_iter().flatten();
                let job = self.scopes.get(&a.job_id).into_iter().flatten();
                a.context = global.chain(job).cloned().collect();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(scope: &str, key: &str, value: &str) -> pb::ContextEntry {
        pb::ContextEntry { scope: scope.into(), key: key.into(), value: value.into() }
    }

    fn assignment(task: i64, job: &str) -> pb::Assignment {
        pb::Assignment { task_id: task, job_id: job.into(), ..Default::default() }
    }

    #[test]
    fn scopes_sent_once_fill_every_later_assignment() {
        let mut cache = StreamContext::default();
        let mut first = pb::ListenResponse {
            assignments: vec![assignment(1, "j1")],
            contexts: vec![
                pb::ContextScope { job_id: String::new(), entries: vec![entry("global", "g", "1")] },
                pb::ContextScope { job_id: "j1".into(), entries: vec![entry("job", "k", "v")] },
            ],
            ..Default::default()
        };
        cache.apply(&mut first);
        assert_eq!(first.assignments[0].context, vec![entry("global", "g", "1"), entry("job", "k", "v")]);
        assert!(first.contexts.is_empty());
        // Later messages carry only assignments; another job gets the global scope alone.
        let mut later =
            pb::ListenResponse { assignments: vec![assignment(2, "j1"), assignment(3, "j2")], ..Default::default() };
        cache.apply(&mut later);
        assert_eq!(later.assignments[0].context.len(), 2);
        assert_eq!(later.assignments[1].context, vec![entry("global", "g", "1")]);
    }

    #[test]
    fn a_scope_sent_again_replaces_the_old_one_and_empty_clears_it() {
        let mut cache = StreamContext::default();
        let scope = |entries| pb::ContextScope { job_id: "j".into(), entries };
        let mut m = pb::ListenResponse { contexts: vec![scope(vec![entry("job", "a", "1")])], ..Default::default() };
        cache.apply(&mut m);
        let mut m = pb::ListenResponse {
            contexts: vec![scope(vec![entry("job", "b", "2")])],
            assignments: vec![assignment(1, "j")],
            ..Default::default()
        };
        cache.apply(&mut m);
        assert_eq!(m.assignments[0].context, vec![entry("job", "b", "2")]);
        let mut m = pb::ListenResponse {
            contexts: vec![scope(vec![])],
            assignments: vec![assignment(2, "j")],
            ..Default::default()
        };
        cache.apply(&mut m);
        assert!(m.assignments[0].context.is_empty());
    }

    #[test]
    fn an_assignment_that_carries_its_context_keeps_it() {
        let mut cache = StreamContext::default();
        let mut a = assignment(1, "j");
        a.context = vec![entry("job", "own", "x")];
        let mut m = pb::ListenResponse { assignments: vec![a], ..Default::default() };
        cache.apply(&mut m);
        assert_eq!(m.assignments[0].context, vec![entry("job", "own", "x")]);
    }
}
