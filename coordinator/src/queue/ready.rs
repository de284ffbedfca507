//! The ready queues: one per distinct set of required labels, each ordered by priority
//! (highest first) and FIFO within a priority. Removal is lazy: an entry carries the task's
//! ready generation and is skipped when the task left `pending` or was queued again since.

use std::cmp::Reverse;
use std::collections::{BTreeMap, HashMap, VecDeque};

use super::{Entry, Labels, State, TaskId};

#[derive(Debug, Default)]
struct Queue {
    by_priority: BTreeMap<Reverse<i32>, VecDeque<(TaskId, u32)>>,
}

#[derive(Debug, Default)]
pub(super) struct ReadyQueues {
    sets: Vec<Labels>,
    index: HashMap<Labels, usize>,
    queues: Vec<Queue>,
    /// Entries in the queues, live or stale (a stale one counts until it is dropped), so
    /// `is_empty` may say no while only stale entries remain; popping then finds none.
    pending: usize,
}

impl ReadyQueues {
    /// The queue of a label set; true when the set is new.
    pub(super) fn intern(&mut self, labels: &Labels) -> (usize, bool) {
        if let Some(&i) = self.index.get(labels) {
            return (i, false);
        }
        let i = self.sets.len();
        self.sets.push(labels.clone());
        self.index.insert(labels.clone(), i);
        self.queues.push(Queue::default());
        (i, true)
    }

    /// The queues a worker with these labels may serve.
    pub(super) fn eligible(&self, worker: &Labels) -> Vec<usize> {
        (0..self.sets.len()).filter(|&i| self.serves(i, worker)).collect()
    }

    /// Whether a worker with these labels may serve queue `i`.
    pub(super) fn serves(&self, i: usize, worker: &Labels) -> bool {
        self.sets[i].iter().all(|(k, v)| worker.get(k) == Some(v))
    }

    pub(super) fn push(&mut self, e: &Entry) {
        let q = e.label_set;
        self.queues[q].by_priority.entry(Reverse(e.priority)).or_default().push_back((e.id, e.ready_gen));
        self.pending += 1;
    }

    pub(super) fn is_empty(&self) -> bool {
        self.pending == 0
    }

    /// Pops the best task among the given queues: highest priority, then oldest. A task for
    /// which `skip` holds is passed over (it stays queued for others), looking at most
    /// [`SKIP_SCAN`] entries into a level.
    pub(super) fn pop_for(
        &mut self,
        eligible: &[usize],
        tasks: &HashMap<TaskId, Box<Entry>>,
        skip: impl Fn(&Entry) -> bool,
    ) -> Option<TaskId> {
        let mut best: Option<(usize, i32, TaskId, usize)> = None;
        for &q in eligible {
            let Some((prio, id, at)) = self.head(q, tasks, &skip) else { continue };
            let better = match best {
                None => true,
                // Same priority: the older task (smaller position) cannot be compared across
                // queues exactly; the smaller id is the older submission.
                Some((_, bp, bid, _)) => prio > bp || (prio == bp && id < bid),
            };
            if better {
                best = Some((q, prio, id, at));
            }
        }
        let (q, prio, id, at) = best?;
        let level = self.queues[q].by_priority.get_mut(&Reverse(prio)).expect("head exists");
        level.remove(at);
        if level.is_empty() {
            self.queues[q].by_priority.remove(&Reverse(prio));
        }
        self.pending -= 1;
        Some(id)
    }

    /// The first live entry of a queue that `skip` does not pass over, with its position in
    /// its level; stale entries at the front are dropped on the way.
    fn head(
        &mut self,
        q: usize,
        tasks: &HashMap<TaskId, Box<Entry>>,
        skip: &impl Fn(&Entry) -> bool,
    ) -> Option<(i32, TaskId, usize)> {
        let live = |id: &TaskId, gen_: u32| {
            tasks.get(id).filter(|e| e.state == State::Pending && e.ready_gen == gen_).map(|e| &**e)
        };
        let queue = &mut self.queues[q];
        let mut levels_seen = 0;
        loop {
            let (&Reverse(prio), level) = queue.by_priority.iter_mut().nth(levels_seen)?;
            while let Some(&(id, gen_)) = level.front() {
                if live(&id, gen_).is_some() {
                    break;
                }
                level.pop_front();
                // A stale entry was counted when pushed; the task left pending without a pop.
                self.pending = self.pending.saturating_sub(1);
            }
            if level.is_empty() {
                queue.by_priority.remove(&Reverse(prio));
                continue;
            }
            let found = level
                .iter()
                .take(SKIP_SCAN)
                .enumerate()
                .find_map(|(at, (id, gen_))| live(id, *gen_).filter(|e| !skip(e)).map(|_| (prio, *id, at)));
            if found.is_some() {
                return found;
            }
            // Every entry looked at is passed over: try the next priority level.
            levels_seen += 1;
        }
    }
}

/// Entries of a priority level looked at past those a worker passes over.
pub(super) const SKIP_SCAN: usize = 8;
