//! The dashboard's state and what keys do to it: pure (no terminal, no network), so every
//! view and key is unit-tested. The runtime feeds it stream events and call results, and
//! carries out the [`Intent`]s keys return.

use std::collections::{BTreeMap, VecDeque};

use orca_client::pb;

/// Lines of live output kept for the task on screen.
pub const OUTPUT_LINES: usize = 500;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum View {
    Fleet,
    Jobs,
    Job,
    Task,
}

/// Something to do to the fleet, asked for with a key and confirmed with `y`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    CancelJob(String),
    CancelTask(i64),
    RetryJob(String),
    Drain(String),
    Resume(String),
}

impl Action {
    /// What was done, for the status line.
    pub fn done(&self) -> String {
        match self {
            Action::CancelJob(j) => format!("job {j} cancelled"),
            Action::CancelTask(t) => format!("task {t} cancelled"),
            Action::RetryJob(j) => format!("failed tasks of job {j} retried"),
            Action::Drain(w) => format!("worker {w} draining"),
            Action::Resume(w) => format!("worker {w} resumed"),
        }
    }

    /// The question the confirmation asks.
    pub fn question(&self) -> String {
        match self {
            Action::CancelJob(j) => format!("Cancel job {j} and every unfinished task of it?"),
            Action::CancelTask(t) => format!("Cancel task {t} (and the tasks that depend on it)?"),
            Action::RetryJob(j) => format!("Retry the failed tasks of job {j}?"),
            Action::Drain(w) => format!("Drain worker {w}? It finishes what it runs and takes no new work."),
            Action::Resume(w) => format!("Resume worker {w}?"),
        }
    }
}

/// What the runtime must do after a key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Intent {
    Quit,
    Do(Action),
    /// Watch this job (its tasks and events).
    OpenJob(String),
    /// Read this task (spec, history, result).
    OpenTask(i64),
    /// Read the jobs list again.
    RefreshJobs,
}

/// A task as the job view shows it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TaskLine {
    pub task_id: i64,
    pub state: i32,
    pub attempts: u32,
    pub priority: i32,
    pub name: String,
    pub worker: String,
    /// How long it has been in its state, or ran (ms), when known.
    pub duration_ms: Option<i64>,
}

/// A key, as the dashboard understands it (so tests need no terminal).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Key {
    Char(char),
    Up,
    Down,
    Enter,
    Back,
    Tab,
}

#[derive(Debug)]
pub struct App {
    pub url: String,
    pub view: View,
    /// Connected to the coordinator (the fleet stream is open).
    pub connected: bool,
    /// What the status line says about the connection.
    pub status: String,
    pub workers: Vec<pb::WorkerInfo>,
    pub stats: Option<pb::Stats>,
    pub jobs: Vec<pb::Job>,
    pub job: Option<String>,
    pub job_status: Option<pb::JobStatus>,
    pub tasks: BTreeMap<i64, TaskLine>,
    pub task: Option<pb::Task>,
    /// Live output of the task on screen (its progress events).
    pub output: VecDeque<String>,
    pub worker_sel: usize,
    pub job_sel: usize,
    pub task_sel: usize,
    pub confirm: Option<Action>,
    pub help: bool,
    /// The last action's result, or an error.
    pub message: String,
}

impl App {
    pub fn new(url: &str) -> App {
        App {
            url: url.to_string(),
            view: View::Fleet,
            connected: false,
            status: format!("connecting to {url}"),
            workers: Vec::new(),
            stats: None,
            jobs: Vec::new(),
            job: None,
            job_status: None,
            tasks: BTreeMap::new(),
            task: None,
            output: VecDeque::new(),
            worker_sel: 0,
            job_sel: 0,
            task_sel: 0,
            confirm: None,
            help: false,
            message: String::new(),
        }
    }

    // --- what the streams and calls bring ---------------------------------------------

    /// A WatchFleet event. Returns true when the stats moved (the jobs list is worth reading
    /// again).
    pub fn on_fleet(&mut self, ev: pb::FleetEvent) -> bool {
        use pb::FleetEventKind as K;
        if !self.connected {
            self.connected = true;
            self.status = format!("connected to {}", self.url);
        }
        let kind = K::try_from(ev.kind).unwrap_or(K::Unspecified);
        match kind {
            K::Snapshot => self.workers = ev.workers,
            K::WorkerJoined | K::WorkerChanged => {
                for w in ev.workers {
                    match self.workers.iter_mut().find(|x| x.worker_id == w.worker_id) {
                        Some(x) => *x = w,
                        None => self.workers.push(w),
                    }
                }
                self.workers.sort_by(|a, b| a.worker_id.cmp(&b.worker_id));
            }
            K::WorkerLeft => {
                for w in ev.workers {
                    self.workers.retain(|x| x.worker_id != w.worker_id);
                }
            }
            _ => {}
        }
        self.worker_sel = self.worker_sel.min(self.workers.len().saturating_sub(1));
        match ev.stats {
            Some(s) => {
                let moved = self.stats.as_ref().is_none_or(|old| old.tasks != s.tasks || old.jobs != s.jobs);
                self.stats = Some(s);
                moved
            }
            None => false,
        }
    }

    /// The fleet stream broke: say so; the runtime reconnects.
    pub fn on_disconnect(&mut self, why: &str, retry_in_ms: u64) {
        self.connected = false;
        let why: String = why.chars().take(60).collect();
        self.status = format!("disconnected ({why}); retry in {:.1} s", retry_in_ms as f64 / 1e3);
    }

    pub fn on_jobs(&mut self, mut jobs: Vec<pb::Job>) {
        // Newest first: what a person just submitted is on top.
        jobs.reverse();
        self.jobs = jobs;
        self.job_sel = self.job_sel.min(self.jobs.len().saturating_sub(1));
    }

    /// A page of the open job's tasks (ListTasks, summary), with workers and times.
    pub fn on_tasks(&mut self, job: &str, tasks: Vec<pb::Task>, now_ms: i64) {
        if self.job.as_deref() != Some(job) {
            return;
        }
        for t in tasks {
            let spec = t.spec.clone().unwrap_or_default();
            let line = self.tasks.entry(t.task_id).or_default();
            line.task_id = t.task_id;
            line.state = t.state;
            line.attempts = t.attempts;
            line.priority = spec.priority.unwrap_or(line.priority);
            if !spec.name.is_empty() {
                line.name = spec.name;
            }
            line.worker = t.worker_id;
            line.duration_ms = Some(now_ms - t.updated_at_ms).filter(|d| *d >= 0);
        }
    }

    /// An event of the open job (WatchJob).
    pub fn on_job_event(&mut self, job: &str, ev: pb::JobEvent) {
        if self.job.as_deref() != Some(job) {
            return;
        }
        if let Some(s) = ev.status {
            self.job_status = Some(s);
        }
        use pb::JobEventKind as K;
        match K::try_from(ev.kind).unwrap_or(K::Unspecified) {
            K::Snapshot => {
                for t in ev.tasks {
                    let line = self.tasks.entry(t.task_id).or_default();
                    line.task_id = t.task_id;
                    line.state = t.state;
                    line.attempts = t.attempts;
                    line.priority = t.priority;
                    line.name = t.name;
                }
            }
            K::TaskState => {
                let line = self.tasks.entry(ev.task_id).or_default();
                line.task_id = ev.task_id;
                line.state = ev.state;
                line.attempts = line.attempts.max(ev.attempt);
                line.duration_ms = Some(0);
                if let Some(t) = self.task.as_mut().filter(|t| t.task_id == ev.task_id) {
                    t.state = ev.state;
                    t.attempts = t.attempts.max(ev.attempt);
                }
            }
            K::TaskProgress if self.task.as_ref().is_some_and(|t| t.task_id == ev.task_id) => {
                for l in ev.message.lines() {
                    self.output.push_back(l.to_string());
                }
                while self.output.len() > OUTPUT_LINES {
                    self.output.pop_front();
                }
            }
            _ => {}
        }
        self.task_sel = self.task_sel.min(self.tasks.len().saturating_sub(1));
    }

    pub fn on_task(&mut self, t: pb::Task) {
        if self.task.as_ref().is_none_or(|x| x.task_id != t.task_id) {
            self.output.clear();
        }
        self.task = Some(t);
    }

    // --- keys ---------------------------------------------------------------------------

    pub fn on_key(&mut self, key: Key) -> Option<Intent> {
        if let Some(action) = self.confirm.take() {
            return match key {
                Key::Char('y') | Key::Char('Y') => Some(Intent::Do(action)),
                _ => {
                    self.message = "cancelled: nothing done".into();
                    None
                }
            };
        }
        if self.help {
            self.help = false;
            return None;
        }
        match key {
            Key::Char('q') => return Some(Intent::Quit),
            Key::Char('?') => self.help = true,
            Key::Char('1') => self.view = View::Fleet,
            Key::Char('2') => {
                self.view = View::Jobs;
                return Some(Intent::RefreshJobs);
            }
            Key::Tab => {
                self.view = if self.view == View::Fleet { View::Jobs } else { View::Fleet };
                if self.view == View::Jobs {
                    return Some(Intent::RefreshJobs);
                }
            }
            Key::Back => self.back(),
            Key::Up | Key::Char('k') => self.move_by(-1),
            Key::Down | Key::Char('j') => self.move_by(1),
            Key::Enter => return self.open(),
            Key::Char(c) => self.ask(c),
        }
        None
    }

    fn back(&mut self) {
        self.view = match self.view {
            View::Task => View::Job,
            View::Job => View::Jobs,
            _ => View::Fleet,
        };
    }

    fn move_by(&mut self, d: i64) {
        let (sel, len) = match self.view {
            View::Fleet => (&mut self.worker_sel, self.workers.len()),
            View::Jobs => (&mut self.job_sel, self.jobs.len()),
            View::Job => (&mut self.task_sel, self.tasks.len()),
            View::Task => return,
        };
        if len == 0 {
            return;
        }
        *sel = (*sel as i64 + d).clamp(0, len as i64 - 1) as usize;
    }

    fn open(&mut self) -> Option<Intent> {
        match self.view {
            View::Jobs => {
                let job = self.jobs.get(self.job_sel)?.job_id.clone();
                if self.job.as_deref() != Some(&job) {
                    self.tasks.clear();
                    self.task_sel = 0;
                    self.job_status = None;
                }
                self.job = Some(job.clone());
                self.view = View::Job;
                Some(Intent::OpenJob(job))
            }
            View::Job => {
                let id = self.selected_task()?;
                self.view = View::Task;
                Some(Intent::OpenTask(id))
            }
            _ => None,
        }
    }

    /// The task selected in the job view.
    pub fn selected_task(&self) -> Option<i64> {
        self.tasks.keys().nth(self.task_sel).copied()
    }

    fn selected_job(&self) -> Option<String> {
        match self.view {
            View::Jobs => self.jobs.get(self.job_sel).map(|j| j.job_id.clone()),
            View::Job | View::Task => self.job.clone(),
            View::Fleet => None,
        }
    }

    /// A key that asks for an action: it waits for `y`.
    fn ask(&mut self, c: char) {
        let action = match (c, self.view) {
            ('c', View::Job) => self.selected_task().map(Action::CancelTask),
            ('c', View::Task) => self.task.as_ref().map(|t| Action::CancelTask(t.task_id)),
            ('C', _) | ('c', View::Jobs) => self.selected_job().map(Action::CancelJob),
            ('r', _) => self.selected_job().map(Action::RetryJob),
            ('d', View::Fleet) => self.workers.get(self.worker_sel).map(|w| {
                if w.draining { Action::Resume(w.worker_id.clone()) } else { Action::Drain(w.worker_id.clone()) }
            }),
            _ => None,
        };
        if action.is_some() {
            self.confirm = action;
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn worker(id: &str, running: &[i64]) -> pb::WorkerInfo {
        pb::WorkerInfo {
            worker_id: id.into(),
            name: format!("{id}-name"),
            hostname: "host".into(),
            slots: 4,
            running_tasks: running.to_vec(),
            connected: true,
            version: "0.2.0".into(),
            labels: [("zone".to_string(), "a".to_string())].into(),
            ..Default::default()
        }
    }

    fn fleet(kind: pb::FleetEventKind, workers: Vec<pb::WorkerInfo>) -> pb::FleetEvent {
        pb::FleetEvent { kind: kind as i32, workers, stats: None, time_ms: 0 }
    }

    pub fn job(id: &str, completed: u64, total: u64) -> pb::Job {
        pb::Job {
            job_id: id.into(),
            description: format!("job {id}"),
            state: pb::JobState::Active as i32,
            status: Some(pb::JobStatus {
                total_tasks: total,
                completed,
                pending: total - completed,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn workers_join_change_and_leave() {
        use pb::FleetEventKind as K;
        let mut a = App::new("http://x");
        a.on_fleet(fleet(K::Snapshot, vec![worker("a", &[])]));
        assert!(a.connected);
        a.on_fleet(fleet(K::WorkerJoined, vec![worker("b", &[])]));
        a.on_fleet(fleet(K::WorkerChanged, vec![worker("a", &[7])]));
        assert_eq!(
            a.workers.iter().map(|w| (w.worker_id.as_str(), w.running_tasks.len())).collect::<Vec<_>>(),
            [("a", 1), ("b", 0)]
        );
        a.on_fleet(fleet(K::WorkerLeft, vec![worker("a", &[])]));
        assert_eq!(a.workers.len(), 1);
        a.on_disconnect("connection refused", 1_500);
        assert!(!a.connected && a.status.contains("retry in 1.5 s"));
    }

    #[test]
    fn keys_move_open_and_go_back() {
        let mut a = App::new("http://x");
        assert_eq!(a.on_key(Key::Char('2')), Some(Intent::RefreshJobs));
        a.on_jobs(vec![job("old", 0, 1), job("new", 1, 2)]);
        assert_eq!(a.jobs[0].job_id, "new", "newest first");
        a.on_key(Key::Down);
        assert_eq!(a.on_key(Key::Enter), Some(Intent::OpenJob("old".into())));
        assert_eq!(a.view, View::Job);
        a.on_job_event(
            "old",
            pb::JobEvent {
                kind: pb::JobEventKind::Snapshot as i32,
                tasks: vec![pb::TaskSummary { task_id: 5, state: 2, ..Default::default() }],
                ..Default::default()
            },
        );
        assert_eq!(a.on_key(Key::Enter), Some(Intent::OpenTask(5)));
        a.on_task(pb::Task { task_id: 5, ..Default::default() });
        let progress = |m: &str| pb::JobEvent {
            kind: pb::JobEventKind::TaskProgress as i32,
            task_id: 5,
            message: m.into(),
            ..Default::default()
        };
        a.on_job_event("old", progress("line one\nline two"));
        a.on_job_event("other", progress("not mine"));
        assert_eq!(a.output, ["line one", "line two"]);
        a.on_key(Key::Back);
        a.on_key(Key::Back);
        assert_eq!(a.view, View::Jobs);
        assert_eq!(a.on_key(Key::Char('q')), Some(Intent::Quit));
    }

    #[test]
    fn actions_wait_for_a_yes() {
        let mut a = App::new("http://x");
        a.on_fleet(fleet(pb::FleetEventKind::Snapshot, vec![worker("w", &[])]));
        assert_eq!(a.on_key(Key::Char('d')), None);
        assert_eq!(a.confirm, Some(Action::Drain("w".into())));
        assert_eq!(a.on_key(Key::Char('n')), None);
        assert!(a.confirm.is_none() && a.message.contains("nothing done"));
        a.on_key(Key::Char('d'));
        assert_eq!(a.on_key(Key::Char('y')), Some(Intent::Do(Action::Drain("w".into()))));
        a.view = View::Jobs;
        a.on_jobs(vec![job("j", 0, 1)]);
        a.on_key(Key::Char('c'));
        assert_eq!(a.on_key(Key::Char('y')), Some(Intent::Do(Action::CancelJob("j".into()))));
        a.on_key(Key::Char('r'));
        assert_eq!(a.confirm, Some(Action::RetryJob("j".into())));
        // `?` shows the keys; any key closes them.
        a.confirm = None;
        a.on_key(Key::Char('?'));
        assert!(a.help);
        assert_eq!(a.on_key(Key::Char('q')), None);
        assert!(!a.help);
    }
}
