//! The ready queues: one per distinct set of required labels, each ordered by priority
//! (highest first); at one priority, the jobs with ready tasks share the workers by weight
//! (stride scheduling, a form of weighted fair queuing), and each job's tasks go FIFO.
//!
//! Every job with ready tasks (a *flow*) has a `pass`: its virtual time. Serving one of its
//! tasks adds its stride (`STRIDE / weight`) to it, and at a priority level the flow with the
//! smallest pass is served next (ties: the older job). A flow that had nothing ready starts
//! at the scheduler's current virtual time (the pass of the last flow served), so it gets no
//! credit for the time it was idle and waits at most one round: every other flow at its
//! level is served at most once (per unit of its weight) before it. Passes are global per
//! job, so the comparison holds across the label sets a worker may serve.
//!
//! A job that may start nothing (paused, over its budget, at its `max_running`) is *parked*:
//! its flow leaves every level and comes back when it may run again, so a blocked job never
//! hides the ready tasks of others. Removal is lazy: an entry carries the task's ready
//! generation and is skipped when the task left `pending` or was queued again since.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use super::{Entry, JobId, Labels, State, TaskId};

/// The pass a flow of weight 1 advances per task served; a weight `w` advances `STRIDE / w`.
const STRIDE: u64 = 1 << 20;

/// A label set's queue: at each priority, the flows with ready tasks there, by (pass, job).
#[derive(Debug, Default)]
struct Queue {
    by_priority: BTreeMap<Reverse<i32>, BTreeSet<(u64, JobId)>>,
}

/// The ready tasks of one job at one (label set, priority).
type Lane = ((usize, i32), VecDeque<(TaskId, u32)>);

#[derive(Debug)]
struct Flow {
    pass: u64,
    stride: u64,
    parked: bool,
    /// Usually one: a job's tasks mostly share their labels and priority.
    lanes: Vec<Lane>,
}

#[derive(Debug, Default)]
pub(super) struct ReadyQueues {
    sets: Vec<Labels>,
    index: HashMap<Labels, usize>,
    queues: Vec<Queue>,
    flows: HashMap<JobId, Flow>,
    /// The pass of the last flow served (monotonic).
    vtime: u64,
    /// Entries in the queues, live or stale (a stale one counts until it is dropped), so
    /// `is_empty` may say no while only stale or parked entries remain; popping then finds none.
    pending: usize,
}

/// A flow's stride for a weight (0 counts as 1).
pub(super) fn stride(weight: u32) -> u64 {
    STRIDE / weight.max(1) as u64
}

/// What [`ReadyQueues::pop_for`] found at the head of one queue.
struct Head {
    queue: usize,
    prio: i32,
    pass: u64,
    job: JobId,
    id: TaskId,
    lane: usize,
    at: usize,
}

impl Head {
    /// Ordered so that the smallest head is served first.
    fn key(&self) -> (Reverse<i32>, u64, &JobId, TaskId) {
        (Reverse(self.prio), self.pass, &self.job, self.id)
    }
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

    /// The label set of a queue.
    pub(super) fn labels(&self, i: usize) -> &Labels {
        &self.sets[i]
    }

    /// The queues a worker with these labels may serve.
    pub(super) fn eligible(&self, worker: &Labels) -> Vec<usize> {
        (0..self.sets.len()).filter(|&i| self.serves(i, worker)).collect()
    }

    /// Whether a worker with these labels may serve queue `i`.
    pub(super) fn serves(&self, i: usize, worker: &Labels) -> bool {
        self.sets[i].iter().all(|(k, v)| worker.get(k) == Some(v))
    }

    /// Queues a pending task. A job with nothing ready so far starts at the current virtual
    /// time, with the given stride and parked state (the scheduler's view of the job).
    pub(super) fn push(&mut self, e: &Entry, stride: u64, parked: bool) {
        let vtime = self.vtime;
        let flow =
            self.flows.entry(e.job.clone()).or_insert_with(|| Flow { pass: vtime, stride, parked, lanes: Vec::new() });
        let key = (e.label_set, e.priority);
        let lane = match flow.lanes.iter().position(|(k, _)| *k == key) {
            Some(i) => i,
            None => {
                flow.lanes.push((key, VecDeque::new()));
                if !flow.parked {
                    self.queues[key.0]
                        .by_priority
                        .entry(Reverse(key.1))
                        .or_default()
                        .insert((flow.pass, e.job.clone()));
                }
                flow.lanes.len() - 1
            }
        };
        flow.lanes[lane].1.push_back((e.id, e.ready_gen));
        self.pending += 1;
    }

    pub(super) fn is_empty(&self) -> bool {
        self.pending == 0
    }

    /// Changes a job's weight (from its next dispatch on).
    pub(super) fn set_stride(&mut self, job: &JobId, stride: u64) {
        if let Some(f) = self.flows.get_mut(job) {
            f.stride = stride;
        }
    }

    /// Takes a job out of (`parked`) or back into the levels. A flow coming back starts no
    /// earlier than the current virtual time: being blocked earns no credit.
    pub(super) fn park(&mut self, job: &JobId, parked: bool) {
        let Some(flow) = self.flows.get_mut(job) else { return };
        if flow.parked == parked {
            return;
        }
        flow.parked = parked;
        for ((q, prio), _) in &flow.lanes {
            let level = self.queues[*q].by_priority.entry(Reverse(*prio)).or_default();
            if parked {
                level.remove(&(flow.pass, job.clone()));
            } else {
                level.insert((flow.pass.max(self.vtime), job.clone()));
            }
            if level.is_empty() {
                self.queues[*q].by_priority.remove(&Reverse(*prio));
            }
        }
        if !parked {
            flow.pass = flow.pass.max(self.vtime);
        }
    }

    /// Forgets a job's entries (all stale: the job was cancelled or removed).
    pub(super) fn forget(&mut self, job: &JobId) {
        self.park(job, true);
        if let Some(flow) = self.flows.remove(job) {
            self.pending -= flow.lanes.iter().map(|(_, l)| l.len()).sum::<usize>();
        }
    }

    /// Pops the next task among the given queues (those for which `closed` does not hold):
    /// highest priority, then the flow with the smallest pass, then FIFO within the job. A
    /// task for which `skip` holds is passed over (it stays queued for others), looking at
    /// most [`SKIP_SCAN`] entries into a lane and [`SKIP_SCAN`] flows into a level.
    pub(super) fn pop_for(
        &mut self,
        eligible: &[usize],
        tasks: &HashMap<TaskId, Box<Entry>>,
        closed: impl Fn(usize) -> bool,
        skip: impl Fn(&Entry) -> bool,
    ) -> Option<TaskId> {
        let mut best: Option<Head> = None;
        for &q in eligible.iter().filter(|&&q| !closed(q)) {
            let Some(head) = self.head(q, tasks, &skip) else { continue };
            if best.as_ref().is_none_or(|b| head.key() < b.key()) {
                best = Some(head);
            }
        }
        let h = best?;
        let flow = self.flows.get_mut(&h.job).expect("a head's flow exists");
        let lane = &mut flow.lanes[h.lane].1;
        lane.remove(h.at);
        self.pending -= 1;
        let level = self.queues[h.queue].by_priority.get_mut(&Reverse(h.prio)).expect("a head's level exists");
        if lane.is_empty() {
            flow.lanes.swap_remove(h.lane);
            level.remove(&(h.pass, h.job.clone()));
            if level.is_empty() {
                self.queues[h.queue].by_priority.remove(&Reverse(h.prio));
            }
        }
        self.vtime = self.vtime.max(h.pass);
        self.charge(&h.job, h.pass);
        Some(h.id)
    }

    /// Advances a served flow's pass by its stride, in every level it is in.
    fn charge(&mut self, job: &JobId, pass: u64) {
        let flow = self.flows.get_mut(job).expect("a served flow exists");
        if flow.lanes.is_empty() {
            // Nothing else ready: the flow ends; a new one starts at the virtual time.
            self.flows.remove(job);
            return;
        }
        let next = pass + flow.stride;
        for ((q, prio), _) in &flow.lanes {
            let level = self.queues[*q].by_priority.entry(Reverse(*prio)).or_default();
            level.remove(&(flow.pass, job.clone()));
            level.insert((next, job.clone()));
        }
        flow.pass = next;
    }

    /// The first live entry of a queue that `skip` does not pass over; stale entries at the
    /// front of the lanes looked at are dropped on the way, and flows left with nothing.
    fn head(&mut self, q: usize, tasks: &HashMap<TaskId, Box<Entry>>, skip: &impl Fn(&Entry) -> bool) -> Option<Head> {
        let live = |id: &TaskId, gen_: u32| {
            tasks.get(id).filter(|e| e.state == State::Pending && e.ready_gen == gen_).map(|e| &**e)
        };
        let mut levels_seen = 0;
        loop {
            let (&Reverse(prio), _) = self.queues[q].by_priority.iter().nth(levels_seen)?;
            let level_key = Reverse(prio);
            let mut k = 0;
            while k < SKIP_SCAN {
                let next = self.queues[q].by_priority.get(&level_key).and_then(|l| l.iter().nth(k)).cloned();
                let Some((pass, job)) = next else { break };
                let flow = self.flows.get_mut(&job).expect("a flow in a level exists");
                let lane_ix = flow.lanes.iter().position(|(key, _)| *key == (q, prio)).expect("a flow's lane exists");
                let lane = &mut flow.lanes[lane_ix].1;
                while let Some(&(id, gen_)) = lane.front() {
                    if live(&id, gen_).is_some() {
                        break;
                    }
                    lane.pop_front();
                    // A stale entry was counted when pushed; the task left pending without a pop.
                    self.pending = self.pending.saturating_sub(1);
                }
                if lane.is_empty() {
                    flow.lanes.swap_remove(lane_ix);
                    if flow.lanes.is_empty() {
                        self.flows.remove(&job);
                    }
                    let level = self.queues[q].by_priority.get_mut(&level_key).expect("the level exists");
                    level.remove(&(pass, job));
                    if level.is_empty() {
                        self.queues[q].by_priority.remove(&level_key);
                    }
                    // The next flow is now at position k.
                    continue;
                }
                let at = lane.iter().take(SKIP_SCAN).position(|(id, gen_)| live(id, *gen_).is_some_and(|e| !skip(e)));
                if let Some(at) = at {
                    let id = lane[at].0;
                    return Some(Head { queue: q, prio, pass, job, id, lane: lane_ix, at });
                }
                k += 1;
            }
            // Every entry looked at is passed over: the next priority level (a level that
            // emptied is gone, and the next one took its place).
            if self.queues[q].by_priority.contains_key(&level_key) {
                levels_seen += 1;
            }
        }
    }
}

/// Entries of a lane, and flows of a level, looked at past those a worker passes over.
pub(super) const SKIP_SCAN: usize = 8;
