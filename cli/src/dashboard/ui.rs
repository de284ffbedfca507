//! Drawing the dashboard's state: one function per view, a header with the connection status,
//! a footer with the keys, and the help and confirmation boxes on top. Fits 80x24 and grows
//! with the terminal.

use orca_client::pb;
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Cell, Clear, Gauge, Paragraph, Row, Sparkline, Table, TableState, Wrap};

use super::state::{App, View};
use crate::{now_ms, state_name};

const KEYS: &[(&str, &str)] = &[
    ("1 / 2 / Tab", "fleet view / jobs view / switch"),
    ("j k, arrows", "move the selection"),
    ("Enter", "open the job or task"),
    ("Esc, Backspace", "back"),
    ("c", "cancel the selected job (jobs view) or task (job and task views)"),
    ("C", "cancel the open job"),
    ("r", "retry the failed tasks of the job"),
    ("d", "drain or resume the selected worker (fleet view)"),
    ("y / n", "confirm or refuse an action"),
    ("?", "these keys"),
    ("q", "quit"),
];

fn state_style(v: i32) -> Style {
    match pb::TaskState::try_from(v).unwrap_or(pb::TaskState::Unspecified) {
        pb::TaskState::Completed => Style::default().fg(Color::Green),
        pb::TaskState::Failed => Style::default().fg(Color::Red),
        pb::TaskState::Cancelled => Style::default().fg(Color::DarkGray),
        pb::TaskState::InProgress => Style::default().fg(Color::Yellow),
        _ => Style::default(),
    }
}

fn selected() -> Style {
    Style::default().add_modifier(Modifier::REVERSED)
}

/// Draws everything.
pub fn draw(f: &mut Frame, app: &App) {
    let [head, body, foot] =
        Layout::vertical([Constraint::Length(1), Constraint::Min(3), Constraint::Length(1)]).areas(f.area());
    header(f, head, app);
    match app.view {
        View::Fleet => fleet(f, body, app),
        View::Jobs => jobs(f, body, app),
        View::Job => job(f, body, app),
        View::Task => task(f, body, app),
    }
    footer(f, foot, app);
    if app.help {
        help(f);
    }
    if let Some(a) = &app.confirm {
        let area = centered(f.area(), 60, 5);
        f.render_widget(Clear, area);
        let text = vec![Line::from(a.question()), Line::from(""), Line::from("y: yes    any other key: no")];
        f.render_widget(
            Paragraph::new(text).wrap(Wrap { trim: true }).block(Block::bordered().title(" Confirm ")),
            area,
        );
    }
}

fn header(f: &mut Frame, area: Rect, app: &App) {
    let tab = |v: View, label: &'static str| {
        let on = app.view == v || (v == View::Jobs && matches!(app.view, View::Job | View::Task));
        Span::styled(label, if on { selected() } else { Style::default() })
    };
    let status = Span::styled(
        format!("  {}", app.status),
        Style::default().fg(if app.connected { Color::Green } else { Color::Red }),
    );
    let line = Line::from(vec![
        Span::styled("Orca ", Style::default().add_modifier(Modifier::BOLD)),
        tab(View::Fleet, " 1 Fleet "),
        tab(View::Jobs, " 2 Jobs "),
        status,
    ]);
    f.render_widget(Paragraph::new(line), area);
}

fn footer(f: &mut Frame, area: Rect, app: &App) {
    let keys = match app.view {
        View::Fleet => "q quit  ? keys  Tab jobs  d drain/resume",
        View::Jobs => "q quit  ? keys  Enter open  c cancel  r retry",
        View::Job => "q quit  ? keys  Enter task  c cancel task  C cancel job  r retry  Esc back",
        View::Task => "q quit  ? keys  c cancel  Esc back",
    };
    let text = if app.message.is_empty() { keys.to_string() } else { format!("{}  |  {keys}", app.message) };
    f.render_widget(Paragraph::new(text).style(Style::default().fg(Color::Cyan)), area);
}

fn fleet(f: &mut Frame, area: Rect, app: &App) {
    let [top, spark, list] =
        Layout::vertical([Constraint::Length(4), Constraint::Length(3), Constraint::Min(3)]).areas(area);
    let s = app.stats.clone().unwrap_or_default();
    let t = s.tasks.unwrap_or_default();
    let queue: Vec<String> = s.queue.iter().map(|q| format!("p{}:{}", q.priority, q.pending)).collect();
    let lines = vec![
        Line::from(format!(
            "pending {}  running {}  waiting {}  completed {}  failed {}  cancelled {}",
            t.pending, t.in_progress, t.waiting, t.completed, t.failed, t.cancelled
        )),
        Line::from(format!(
            "jobs {}  workers {}  slots {} of {} free  queue {}",
            s.jobs,
            s.workers_connected,
            s.slots_free,
            s.slots,
            if queue.is_empty() { "empty".to_string() } else { queue.join(" ") }
        )),
    ];
    f.render_widget(Paragraph::new(lines).block(Block::bordered().title(" Queue ")), top);
    let data: Vec<u64> = s.throughput.iter().map(|b| b.completed).collect();
    let title = format!(" Completed per 10 s, last 10 min ({:.1}/s) ", s.tasks_per_second);
    f.render_widget(Sparkline::default().data(&data).block(Block::bordered().title(title)), spark);

    let now = now_ms();
    let rows: Vec<Row> = app
        .workers
        .iter()
        .map(|w| {
            let state = match (w.connected, w.draining) {
                (_, true) => Cell::from("draining").style(Style::default().fg(Color::Yellow)),
                (true, false) => Cell::from("connected").style(Style::default().fg(Color::Green)),
                (false, false) => Cell::from("gone").style(Style::default().fg(Color::Red)),
            };
            let labels: Vec<String> = w.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            Row::new(vec![
                Cell::from(w.name.clone()),
                state,
                Cell::from(format!("{}/{}", w.running_tasks.len(), w.slots)),
                Cell::from(ago((now - w.last_seen_ms).max(0) / 1000)),
                Cell::from(labels.join(",")),
                Cell::from(w.worker_id.clone()),
            ])
        })
        .collect();
    let widths = [
        Constraint::Length(16),
        Constraint::Length(10),
        Constraint::Length(7),
        Constraint::Length(6),
        Constraint::Length(16),
        Constraint::Min(10),
    ];
    let header = Row::new(["name", "state", "busy", "seen", "labels", "id"]).style(Style::default().fg(Color::Cyan));
    let mut ts = TableState::default().with_selected(Some(app.worker_sel).filter(|_| !app.workers.is_empty()));
    let title = format!(" Workers ({}) ", app.workers.len());
    let table =
        Table::new(rows, widths).header(header).row_highlight_style(selected()).block(Block::bordered().title(title));
    f.render_stateful_widget(table, list, &mut ts);
}

/// Seconds as a short age: `12s`, `5m`, `3h`, `>1d`.
fn ago(s: i64) -> String {
    match s {
        0..60 => format!("{s}s"),
        60..3_600 => format!("{}m", s / 60),
        3_600..86_400 => format!("{}h", s / 3_600),
        _ => ">1d".into(),
    }
}

fn bar(done: u64, total: u64, width: usize) -> String {
    let filled = if total == 0 { 0 } else { (done as usize * width) / total as usize };
    format!("{}{}", "#".repeat(filled), "-".repeat(width - filled.min(width)))
}

fn jobs(f: &mut Frame, area: Rect, app: &App) {
    let rows: Vec<Row> = app
        .jobs
        .iter()
        .map(|j| {
            let s = j.status.clone().unwrap_or_default();
            let state = pb::JobState::try_from(j.state).map(|s| s.short_name()).unwrap_or("?");
            Row::new(vec![
                Cell::from(short_id(&j.job_id)),
                Cell::from(state),
                Cell::from(format!("{} {:>3.0}%", bar(s.finished(), s.total_tasks, 10), s.progress_pct)),
                Cell::from(format!("{}/{}", s.completed, s.total_tasks)),
                Cell::from(format!("{}", s.in_progress)),
                Cell::from(format!("{}", s.failed + s.cancelled)),
                Cell::from(j.description.clone()),
            ])
        })
        .collect();
    let widths = [
        Constraint::Length(13),
        Constraint::Length(9),
        Constraint::Length(15),
        Constraint::Length(9),
        Constraint::Length(4),
        Constraint::Length(4),
        Constraint::Min(10),
    ];
    let header = Row::new(["job", "state", "progress", "done", "run", "bad", "description"])
        .style(Style::default().fg(Color::Cyan));
    let mut ts = TableState::default().with_selected(Some(app.job_sel).filter(|_| !app.jobs.is_empty()));
    let title = format!(" Jobs ({}, newest first) ", app.jobs.len());
    let table =
        Table::new(rows, widths).header(header).row_highlight_style(selected()).block(Block::bordered().title(title));
    f.render_stateful_widget(table, area, &mut ts);
}

/// The first part of a job id (the CLI's full ids are in `orca jobs`).
fn short_id(id: &str) -> String {
    id.chars().take(13).collect()
}

fn job(f: &mut Frame, area: Rect, app: &App) {
    let [gauge, table] = Layout::vertical([Constraint::Length(3), Constraint::Min(3)]).areas(area);
    let s = app.job_status.clone().unwrap_or_default();
    let ratio = if s.total_tasks == 0 { 0.0 } else { s.finished() as f64 / s.total_tasks as f64 };
    let label = format!(
        "{}/{} final: {} completed, {} running, {} pending, {} waiting, {} failed, {} cancelled",
        s.finished(),
        s.total_tasks,
        s.completed,
        s.in_progress,
        s.pending,
        s.waiting,
        s.failed,
        s.cancelled
    );
    let title = format!(" Job {} ", app.job.as_deref().unwrap_or("?"));
    f.render_widget(
        Gauge::default().ratio(ratio.clamp(0.0, 1.0)).label(label).block(Block::bordered().title(title)),
        gauge,
    );
    let rows: Vec<Row> = app
        .tasks
        .values()
        .map(|t| {
            Row::new(vec![
                Cell::from(t.task_id.to_string()),
                Cell::from(state_name(t.state)).style(state_style(t.state)),
                Cell::from(t.priority.to_string()),
                Cell::from(t.attempts.to_string()),
                Cell::from(t.duration_ms.map(|d| format!("{:.1}s", d as f64 / 1e3)).unwrap_or_default()),
                Cell::from(t.worker.clone()),
                Cell::from(t.name.clone()),
            ])
        })
        .collect();
    let widths = [
        Constraint::Length(8),
        Constraint::Length(11),
        Constraint::Length(4),
        Constraint::Length(4),
        Constraint::Length(8),
        Constraint::Length(20),
        Constraint::Min(8),
    ];
    let header =
        Row::new(["task", "state", "pri", "try", "for", "worker", "name"]).style(Style::default().fg(Color::Cyan));
    let mut ts = TableState::default().with_selected(Some(app.task_sel).filter(|_| !app.tasks.is_empty()));
    let title = format!(" Tasks ({}) ", app.tasks.len());
    let t =
        Table::new(rows, widths).header(header).row_highlight_style(selected()).block(Block::bordered().title(title));
    f.render_stateful_widget(t, table, &mut ts);
}

fn task(f: &mut Frame, area: Rect, app: &App) {
    let Some(t) = &app.task else {
        f.render_widget(Paragraph::new("loading...").block(Block::bordered().title(" Task ")), area);
        return;
    };
    let [info, out] = Layout::vertical([Constraint::Percentage(45), Constraint::Min(4)]).areas(area);
    let spec = t.spec.clone().unwrap_or_default();
    let r = t.result.clone().unwrap_or_default();
    let mut lines = vec![
        Line::from(vec![
            Span::styled(state_name(t.state), state_style(t.state)),
            Span::raw(format!(
                "  priority {}  attempt {}  worker {}  retries {}/{}",
                spec.priority.unwrap_or(5),
                t.attempts,
                if t.worker_id.is_empty() { "-" } else { &t.worker_id },
                t.retries_used,
                spec.max_retries.unwrap_or(0)
            )),
        ]),
        Line::from(format!("prompt: {}", spec.prompt.lines().next().unwrap_or_default())),
    ];
    if !spec.expected_outputs.is_empty() {
        lines.push(Line::from(format!("expected outputs: {}", spec.expected_outputs.join(", "))));
    }
    if !t.reason.is_empty() {
        lines.push(Line::from(format!("reason: {}", t.reason)));
    }
    if t.result.is_some() {
        lines.push(Line::from(format!(
            "result: exit {}  {} ms  ${:.4}  {} artifacts",
            r.exit_code,
            r.duration_ms,
            r.cost_usd,
            r.artifacts.len()
        )));
    }
    for a in &t.history {
        lines.push(Line::from(format!(
            "attempt {} on {}: {} after {:.1} s{}",
            a.attempt,
            a.worker_id,
            a.outcome,
            (a.ended_ms - a.started_ms) as f64 / 1e3,
            if a.reason.is_empty() { String::new() } else { format!(" ({})", a.reason) }
        )));
    }
    let title = format!(" Task {} ", t.task_id);
    f.render_widget(Paragraph::new(lines).wrap(Wrap { trim: true }).block(Block::bordered().title(title)), info);
    // Live output while it runs; the result's output once it ended with none seen live.
    let body: Vec<Line> = if app.output.is_empty() {
        r.output.lines().map(|l| Line::from(l.to_string())).collect()
    } else {
        app.output.iter().map(|l| Line::from(l.clone())).collect()
    };
    let height = out.height.saturating_sub(2) as usize;
    let skip = body.len().saturating_sub(height);
    let body: Vec<Line> = body.into_iter().skip(skip).collect();
    f.render_widget(Paragraph::new(body).block(Block::bordered().title(" Output ")), out);
}

fn help(f: &mut Frame) {
    let area = centered(f.area(), 74, KEYS.len() as u16 + 2);
    f.render_widget(Clear, area);
    let lines: Vec<Line> = KEYS.iter().map(|(k, what)| Line::from(format!("{k:<16} {what}"))).collect();
    f.render_widget(Paragraph::new(lines).block(Block::bordered().title(" Keys (any key closes) ")), area);
}

/// A box of at most `w` x `h` in the middle of `r`.
fn centered(r: Rect, w: u16, h: u16) -> Rect {
    let (w, h) = (w.min(r.width), h.min(r.height));
    Rect { x: r.x + (r.width - w) / 2, y: r.y + (r.height - h) / 2, width: w, height: h }
}

#[cfg(test)]
mod tests {
    use ratatui::Terminal;
    use ratatui::backend::TestBackend;

    use super::super::state::tests::{job, worker};
    use super::super::state::{Action, App, Key, View};
    use super::*;

    /// The screen as text, one line per row.
    fn screen(app: &App, w: u16, h: u16) -> String {
        let mut t = Terminal::new(TestBackend::new(w, h)).unwrap();
        t.draw(|f| draw(f, app)).unwrap();
        let buf = t.backend().buffer().clone();
        (0..h)
            .map(|y| (0..w).map(|x| buf[(x, y)].symbol().to_string()).collect::<String>())
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn app() -> App {
        let mut a = App::new("http://127.0.0.1:50051");
        a.on_fleet(pb::FleetEvent {
            kind: pb::FleetEventKind::Snapshot as i32,
            workers: vec![worker("w-1", &[3]), worker("w-2", &[])],
            stats: Some(pb::Stats {
                tasks: Some(pb::JobStatus { pending: 4, in_progress: 1, completed: 9, ..Default::default() }),
                queue: vec![pb::PriorityDepth { priority: 9, pending: 4 }],
                throughput: (0..60).map(|i| pb::ThroughputBucket { completed: i % 7, ..Default::default() }).collect(),
                slots: 8,
                slots_free: 7,
                workers_connected: 2,
                jobs: 2,
                ..Default::default()
            }),
            time_ms: 0,
        });
        a.on_jobs(vec![job("01a2-first-job", 1, 4), job("01a2-second-job", 2, 2)]);
        a
    }

    #[test]
    fn each_view_fits_80x24_and_a_large_terminal() {
        for (w, h) in [(80, 24), (160, 48)] {
            let mut a = app();
            let s = screen(&a, w, h);
            assert!(s.contains("1 Fleet") && s.contains("connected to http://127.0.0.1:50051"), "{s}");
            assert!(s.contains("w-1-name") && s.contains("1/4") && s.contains("zone=a"), "{s}");
            assert!(s.contains("queue p9:4") && s.contains("slots 7 of 8 free") && s.contains("pending 4"), "{s}");

            a.on_key(Key::Char('2'));
            let s = screen(&a, w, h);
            assert!(s.contains("Jobs (2, newest first)") && s.contains("01a2-second-j") && s.contains("2/2"), "{s}");

            assert_eq!(a.on_key(Key::Enter), Some(super::super::state::Intent::OpenJob("01a2-second-job".into())));
            a.on_job_event(
                "01a2-second-job",
                pb::JobEvent {
                    kind: pb::JobEventKind::Snapshot as i32,
                    status: Some(pb::JobStatus { total_tasks: 2, completed: 1, in_progress: 1, ..Default::default() }),
                    tasks: vec![
                        pb::TaskSummary {
                            task_id: 11,
                            state: 4,
                            attempts: 1,
                            priority: 9,
                            name: "api".into(),
                            reason: String::new(),
                        },
                        pb::TaskSummary {
                            task_id: 12,
                            state: 3,
                            attempts: 2,
                            priority: 5,
                            name: "tests".into(),
                            reason: String::new(),
                        },
                    ],
                    ..Default::default()
                },
            );
            let s = screen(&a, w, h);
            assert!(s.contains("Tasks (2)") && s.contains("completed") && s.contains("in_progress"), "{s}");
            assert!(s.contains("1/2 final"), "{s}");

            a.on_key(Key::Down);
            a.on_key(Key::Enter);
            a.on_task(pb::Task {
                task_id: 12,
                state: 3,
                attempts: 2,
                worker_id: "w-1".into(),
                spec: Some(pb::TaskSpec { prompt: "Write the tests".into(), ..Default::default() }),
                history: vec![pb::AttemptInfo {
                    attempt: 1,
                    worker_id: "w-2".into(),
                    outcome: "failed".into(),
                    ended_ms: 1_500,
                    ..Default::default()
                }],
                ..Default::default()
            });
            a.on_job_event(
                "01a2-second-job",
                pb::JobEvent {
                    kind: pb::JobEventKind::TaskProgress as i32,
                    task_id: 12,
                    message: "running the suite".into(),
                    ..Default::default()
                },
            );
            let s = screen(&a, w, h);
            assert!(s.contains("Task 12") && s.contains("prompt: Write the tests"), "{s}");
            assert!(s.contains("attempt 1 on w-2: failed after 1.5 s") && s.contains("running the suite"), "{s}");

            a.on_key(Key::Char('c'));
            assert_eq!(a.confirm, Some(Action::CancelTask(12)));
            let s = screen(&a, w, h);
            assert!(s.contains("Cancel task 12"), "{s}");
            a.on_key(Key::Char('n'));
            a.on_key(Key::Char('?'));
            let s = screen(&a, w, h);
            assert!(s.contains("Keys (any key closes)") && s.contains("drain or resume"), "{s}");
            assert_eq!(a.view, View::Task);
        }
    }

    #[test]
    fn a_lost_connection_is_on_screen() {
        let mut a = app();
        a.on_disconnect("connection refused", 2_000);
        let s = screen(&a, 80, 24);
        assert!(s.contains("disconnected (connection refused); retry in 2.0 s"), "{s}");
    }
}
