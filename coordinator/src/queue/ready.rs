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

    /// Pops the best task among the given queues: highest priority, then oldest.
    pub(super) fn pop_for(&mut self, eligible: &[usize], tasks: &HashMap<TaskId, Box<Entry>>) -> Option<TaskId> {
        let mut best: Option<(usize, i32, TaskId)> = None;
        for &q in eligible {
            let Some((prio, id)) = self.head(q, tasks) else { continue };
            let better = match best {
                None => true,
                // Same priority: the older task (smaller position) cannot be compared across
                // queues exactly; the smaller id is the older submission.
                Some((_, bp, bid)) => prio > bp || (prio == bp && id < bid),
            };
            if better {
                best = Some((q, prio, id));
            }
        }
        let (q, prio, id) = best?;
        let level = self.queues[q].by_priority.get_mut(&Reverse(prio)).expect("head exists");
        level.pop_front();
        if level.is_empty() {
            self.queues[q].by_priority.remove(&Reverse(prio));
        }
        self.pending -= 1;
        Some(id)
    }

    /// The live head of a queue, dropping stale entries on the way.
    fn head(&mut self, q: usize, tasks: &HashMap<TaskId, Box<Entry>>) -> Option<(i32, TaskId)> {
        let queue = &mut self.queues[q];
        loop {
            let (&Reverse(prio), level) = queue.by_priority.iter_mut().next()?;
            while let Some(&(id, gen_)) = level.front() {
                let live = tasks.get(&id).is_some_and(|e| e.state == State::Pending && e.ready_gen == gen_);
                if live {
                    return Some((prio, id));
                }
                level.pop_front();
                // A stale entry was counted when pushed; the task left pending without a pop.
                self.pending = self.pending.saturating_sub(1);
            }
            queue.by_priority.remove(&Reverse(prio));
        }
    }
}
