//! `orca dashboard`: a live terminal dashboard (ratatui on crossterm). It is driven by
//! streams: WatchFleet for the workers and the stats (the jobs list is read again when the
//! stats move), WatchJob for the open job (its tasks' states and live output). It reconnects
//! after the coordinator restarts, and says so on screen meanwhile.
//!
//! Layout: `state.rs` is the pure state and key handling, `ui.rs` draws it, this file wires
//! the terminal, the streams and the calls together.

pub mod state;
pub mod ui;

use std::process::ExitCode;
use std::time::{Duration, Instant};

use orca_client::{Client, WatchOptions, pb};
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use state::{Action, App, Intent, Key};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_stream::StreamExt;

use crate::{Failure, now_ms};

/// What reaches the loop: keys, stream events and call results.
enum Msg {
    Key(Key),
    Redraw,
    Fleet(pb::FleetEvent),
    FleetDown(String, u64),
    Jobs(Vec<pb::Job>),
    JobEvent(String, pb::JobEvent),
    Tasks(String, Vec<pb::Task>),
    Task(Box<pb::Task>),
    Message(String),
}

/// Stats interval asked of WatchFleet.
const STATS_MS: u32 = 1_000;

/// Runs the dashboard until `q`.
pub async fn run(client: Client) -> Result<ExitCode, Failure> {
    let (tx, rx) = mpsc::channel(1_024);
    let keys = tx.clone();
    std::thread::spawn(move || read_keys(keys));
    let fleet = tokio::spawn(fleet_loop(client.clone(), tx.clone()));
    let mut terminal = ratatui::try_init().map_err(|e| Failure::Usage(format!("cannot use the terminal: {e}")))?;
    let mut rt = Runtime { app: App::new(client.url()), client, tx, job_watch: None, tasks_dirty: false };
    let result = rt.main_loop(&mut terminal, rx).await;
    ratatui::restore();
    fleet.abort();
    if let Some(w) = rt.job_watch.take() {
        w.abort();
    }
    result.map(|()| ExitCode::SUCCESS)
}

/// Keys from the terminal, on a thread of their own (crossterm's read blocks).
fn read_keys(tx: mpsc::Sender<Msg>) {
    loop {
        let msg = match event::read() {
            Ok(Event::Key(k)) if k.kind == KeyEventKind::Press => match key_of(k) {
                Some(key) => Msg::Key(key),
                None => continue,
            },
            Ok(Event::Resize(..)) => Msg::Redraw,
            Ok(_) => continue,
            Err(_) => return,
        };
        if tx.blocking_send(msg).is_err() {
            return;
        }
    }
}

fn key_of(k: KeyEvent) -> Option<Key> {
    Some(match k.code {
        KeyCode::Char('c') if k.modifiers.contains(KeyModifiers::CONTROL) => Key::Char('q'),
        KeyCode::Char(c) => Key::Char(c),
        KeyCode::Up => Key::Up,
        KeyCode::Down => Key::Down,
        KeyCode::Enter | KeyCode::Right => Key::Enter,
        KeyCode::Esc | KeyCode::Backspace | KeyCode::Left => Key::Back,
        KeyCode::Tab => Key::Tab,
        _ => return None,
    })
}

/// WatchFleet, opened again after it breaks (with the clients' reconnect backoff, said on
/// screen; one dashboard needs no jitter, so every pause is the full step).
async fn fleet_loop(client: Client, tx: mpsc::Sender<Msg>) {
    let mut backoff = orca_proto::contract::Backoff::default();
    loop {
        let why = match client.watch_fleet(STATS_MS).await {
            Ok(mut stream) => loop {
                match stream.message().await {
                    Ok(Some(ev)) => {
                        backoff.reset();
                        if tx.send(Msg::Fleet(ev)).await.is_err() {
                            return;
                        }
                    }
                    Ok(None) => break "the stream ended".to_string(),
                    Err(e) => break orca_client::Error::from(e).to_string(),
                }
            },
            Err(e) => e.to_string(),
        };
        let delay = backoff.next(1.0);
        if tx.send(Msg::FleetDown(why, delay.as_millis() as u64)).await.is_err() {
            return;
        }
        tokio::time::sleep(delay).await;
    }
}

struct Runtime {
    app: App,
    client: Client,
    tx: mpsc::Sender<Msg>,
    /// The open job's WatchJob.
    job_watch: Option<JoinHandle<()>>,
    /// The open job's tasks changed since they were last read (workers, times).
    tasks_dirty: bool,
}

impl Runtime {
    async fn main_loop(
        &mut self,
        terminal: &mut ratatui::DefaultTerminal,
        mut rx: mpsc::Receiver<Msg>,
    ) -> Result<(), Failure> {
        let mut last_tasks = Instant::now();
        loop {
            terminal
                .draw(|f| ui::draw(f, &self.app))
                .map_err(|e| Failure::Usage(format!("cannot draw on the terminal: {e}")))?;
            let msg = tokio::select! {
                m = rx.recv() => m,
                _ = tokio::time::sleep(Duration::from_secs(1)) => Some(Msg::Redraw),
            };
            let Some(msg) = msg else { return Ok(()) };
            if let Msg::Key(k) = msg {
                if let Some(intent) = self.app.on_key(k)
                    && self.intent(intent)
                {
                    return Ok(());
                }
            } else {
                self.apply(msg);
            }
            // The open job's workers and times, at most once a second while they change.
            if self.tasks_dirty && last_tasks.elapsed() >= Duration::from_secs(1) {
                self.tasks_dirty = false;
                last_tasks = Instant::now();
                self.read_tasks();
            }
        }
    }

    /// Carries out what a key asked for; true to quit.
    fn intent(&mut self, intent: Intent) -> bool {
        match intent {
            Intent::Quit => return true,
            Intent::RefreshJobs => self.read_jobs(),
            Intent::OpenJob(job) => self.open_job(job),
            Intent::OpenTask(id) => self.read_task(id),
            Intent::Do(action) => self.act(action),
        }
        false
    }

    fn apply(&mut self, msg: Msg) {
        match msg {
            Msg::Fleet(ev) => {
                if self.app.on_fleet(ev) {
                    self.read_jobs();
                }
            }
            Msg::FleetDown(why, ms) => self.app.on_disconnect(&why, ms),
            Msg::Jobs(jobs) => self.app.on_jobs(jobs),
            Msg::JobEvent(job, ev) => {
                let open_task = self.app.task.as_ref().map(|t| t.task_id);
                if ev.kind == pb::JobEventKind::TaskState as i32 {
                    self.tasks_dirty = true;
                    if open_task == Some(ev.task_id) {
                        self.read_task(ev.task_id);
                    }
                }
                self.app.on_job_event(&job, ev);
            }
            Msg::Tasks(job, tasks) => self.app.on_tasks(&job, tasks, now_ms()),
            Msg::Task(t) => self.app.on_task(*t),
            Msg::Message(m) => self.app.message = m,
            Msg::Key(_) | Msg::Redraw => {}
        }
    }

    /// Runs a call on its own task; its answer comes back as a message.
    fn spawn<F>(&self, call: F)
    where
        F: std::future::Future<Output = Msg> + Send + 'static,
    {
        let tx = self.tx.clone();
        tokio::spawn(async move {
            let _ = tx.send(call.await).await;
        });
    }

    fn read_jobs(&self) {
        let c = self.client.clone();
        self.spawn(async move {
            match c.list_jobs().await {
                Ok(jobs) => Msg::Jobs(jobs),
                Err(e) => Msg::Message(format!("jobs: {e}")),
            }
        });
    }

    fn read_tasks(&self) {
        let Some(job) = self.app.job.clone() else { return };
        let c = self.client.clone();
        self.spawn(async move {
            let req = pb::ListTasksRequest {
                job_id: job.clone(),
                summary_only: true,
                page_size: 1_000,
                ..Default::default()
            };
            match c.list_tasks_page(req).await {
                Ok(page) => Msg::Tasks(job, page.tasks),
                Err(e) => Msg::Message(format!("tasks: {e}")),
            }
        });
    }

    fn read_task(&self, id: i64) {
        let c = self.client.clone();
        self.spawn(async move {
            match c.get_task(id).await {
                Ok(t) => Msg::Task(Box::new(t)),
                Err(e) => Msg::Message(format!("task {id}: {e}")),
            }
        });
    }

    /// Watches a job (following it, resumed across reconnects) and reads its tasks.
    fn open_job(&mut self, job: String) {
        if let Some(w) = self.job_watch.take() {
            w.abort();
        }
        let (c, tx, j) = (self.client.clone(), self.tx.clone(), job.clone());
        self.job_watch = Some(tokio::spawn(async move {
            let mut events = std::pin::pin!(c.watch(&j, WatchOptions { follow: true, ..Default::default() }));
            while let Some(ev) = events.next().await {
                let msg = match ev {
                    Ok(ev) => Msg::JobEvent(j.clone(), ev),
                    Err(e) => Msg::Message(format!("job {j}: {e}")),
                };
                if tx.send(msg).await.is_err() {
                    return;
                }
            }
        }));
        self.read_tasks();
    }

    fn act(&mut self, action: Action) {
        let c = self.client.clone();
        self.spawn(async move {
            let done = match &action {
                Action::CancelJob(j) => c.cancel_job(j, "cancelled from orca dashboard").await.map(|_| ()),
                Action::CancelTask(t) => c.cancel_task(*t, "cancelled from orca dashboard").await.map(|_| ()),
                Action::RetryJob(j) => c.retry_failed_tasks(j).await.map(|_| ()),
                Action::Drain(w) => c.drain_worker(w, false).await.map(|_| ()),
                Action::Resume(w) => c.drain_worker(w, true).await.map(|_| ()),
            };
            Msg::Message(match done {
                Ok(()) => action.done(),
                Err(e) => format!("failed: {e}"),
            })
        });
        self.read_jobs();
    }
}
