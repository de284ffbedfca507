//! Recurring jobs and job-completion notices, on the dispatcher's side.
//!
//! A schedule lives in memory (loaded at start) and in its row. When its tick has come, the
//! batch being applied creates the job and its tasks and writes the schedule's next tick, in
//! the one transaction of the batch: a crash before the commit loses the three together (the
//! restart fires the tick), after it none fires again. The timing rule is in
//! [`crate::schedule`].
//!
//! With `--job-webhook`, the batch in which a job goes idle (a task reached a final state and
//! none is left that is not) also writes a notice row; `crate::webhook` delivers it and
//! tells the dispatcher to forget it.

use std::collections::BTreeSet;

use orca_proto::pb;
use prost::Message;

use super::{Batch, Command, Dispatcher, NewJob};
use crate::Error;
use crate::queue::{Effect, JobId};
use crate::schedule::Pattern;
use crate::store::{Notice, ScheduleRow};
use crate::{convert, validate};

/// A schedule in memory.
pub(super) struct Scheduled {
    pattern: Pattern,
    template: pb::CreateScheduleRequest,
    row: ScheduleRow,
}

impl Scheduled {
    /// Loads a stored schedule; `None` (logged) for one this binary cannot read.
    pub(super) fn load(row: ScheduleRow) -> Option<(String, Scheduled)> {
        let parsed = pb::CreateScheduleRequest::decode(row.template.as_slice())
            .map_err(|e| e.to_string())
            .and_then(|t| row.cron.parse::<Pattern>().map(|p| (t, p)));
        match parsed {
            Ok((template, pattern)) => Some((row.name.clone(), Scheduled { pattern, template, row })),
            Err(e) => {
                tracing::error!(schedule = %row.name, error = %e, "a stored schedule is unreadable; it will not fire");
                None
            }
        }
    }

    fn to_pb(&self) -> pb::Schedule {
        let t = &self.template;
        pb::Schedule {
            name: self.row.name.clone(),
            cron: self.row.cron.clone(),
            job: t.job.clone(),
            tasks: t.tasks.clone(),
            next_run_ms: self.row.next_run_ms,
            last_run_ms: self.row.last_run_ms,
            last_job_id: self.row.last_job_id.clone(),
            created_at_ms: self.row.created_at_ms,
            owner: self.row.owner.clone().unwrap_or_default(),
        }
    }
}

impl Dispatcher {
    /// The scheduling commands: UpdateJob, the schedules and the notices (see
    /// `Dispatcher::apply`).
    pub(super) fn apply_scheduling(&mut self, cmd: Command, now: u64, b: &mut Batch) {
        match cmd {
            Command::UpdateJob { job, update, reply } => {
                let r = self.update_job(job, update, b);
                b.answer(reply, r);
            }
            Command::CreateSchedule { req, pattern, owner, own, reply } => {
                let r = self.create_schedule(req, *pattern, owner, own, now, b);
                b.answer(reply, r);
            }
            Command::DeleteSchedule { name, owner, reply } => {
                let r = self.delete_schedule(&name, owner.as_deref(), b);
                b.answer(reply, r);
            }
            Command::ListSchedules { owner, reply } => {
                let _ = reply.send(self.list_schedules(owner.as_deref()));
            }
            Command::NoticeDone { job, seq, reply } => {
                b.writes.notices_done.push((job, seq));
                b.reply(reply, ());
            }
            _ => unreachable!("apply sends only scheduling commands here"),
        }
    }

    /// CreateSchedule (checked by `validate::create_schedule`): its first tick is the first
    /// after now.
    /// `own`: the caller is a submitter, who may replace only its own schedule.
    pub(super) fn create_schedule(
        &mut self,
        mut req: pb::CreateScheduleRequest,
        pattern: Pattern,
        owner: Option<String>,
        own: bool,
        now: u64,
        b: &mut Batch,
    ) -> Result<pb::Schedule, Error> {
        if let Some(old) = self.schedules.get(&req.name) {
            if !req.replace {
                return Err(Error::AlreadyExists(format!("schedule {} already exists (set replace)", req.name)));
            }
            if own && old.row.owner != owner {
                return Err(Error::AlreadyExists(format!("schedule {} belongs to another token", req.name)));
            }
        }
        req.replace = false;
        let row = ScheduleRow {
            name: req.name.clone(),
            cron: req.cron.clone(),
            template: req.encode_to_vec(),
            next_run_ms: pattern.next_after(now).unwrap_or(u64::MAX) as i64,
            last_run_ms: 0,
            last_job_id: String::new(),
            owner,
            created_at_ms: now as i64,
        };
        b.writes.schedule_puts.push(row.clone());
        let s = Scheduled { pattern, template: req, row };
        let out = s.to_pb();
        self.schedules.insert(s.row.name.clone(), s);
        Ok(out)
    }

    /// DeleteSchedule; `owner` set: only that token's schedule.
    pub(super) fn delete_schedule(&mut self, name: &str, owner: Option<&str>, b: &mut Batch) -> Result<(), Error> {
        let s = self.schedules.get(name).ok_or_else(|| Error::NotFound(format!("schedule {name} not found")))?;
        if owner.is_some_and(|o| s.row.owner.as_deref() != Some(o)) {
            return Err(Error::NotFound(format!("schedule {name} not found")));
        }
        self.schedules.remove(name);
        b.writes.schedule_deletes.push(name.to_string());
        Ok(())
    }

    /// ListSchedules; `owner` set: only that token's schedules.
    pub(super) fn list_schedules(&self, owner: Option<&str>) -> Vec<pb::Schedule> {
        let mine = |s: &&Scheduled| owner.is_none_or(|o| s.row.owner.as_deref() == Some(o));
        self.schedules.values().filter(mine).map(Scheduled::to_pb).collect()
    }

    /// The earliest tick of any schedule.
    pub(super) fn next_tick(&self) -> Option<u64> {
        self.schedules.values().map(|s| s.row.next_run_ms.max(0) as u64).min()
    }

    /// Fires every schedule whose tick has come: a job from the template, its tasks, and the
    /// next tick, all in this batch.
    pub(super) async fn fire_schedules(&mut self, now: u64, b: &mut Batch) {
        let due: Vec<String> = (self.schedules.iter())
            .filter(|(_, s)| s.row.next_run_ms.max(0) as u64 <= now)
            .map(|(n, _)| n.clone())
            .collect();
        for name in due {
            let s = &self.schedules[&name];
            let next = s.pattern.fire(s.row.next_run_ms.max(0) as u64, now).unwrap_or(u64::MAX);
            let (template, owner) = (s.template.clone(), s.row.owner.clone());
            let job_id = match self.fire(template, owner, now, b).await {
                Ok(id) => id,
                Err(e) => {
                    // Checked at CreateSchedule; a failure here (a limit lowered since) skips
                    // the tick and says so.
                    tracing::warn!(schedule = %name, error = %e, "a schedule's tick could not create its job");
                    String::new()
                }
            };
            let s = self.schedules.get_mut(&name).expect("still there");
            s.row.next_run_ms = next.min(i64::MAX as u64) as i64;
            s.row.last_run_ms = now as i64;
            if !job_id.is_empty() {
                tracing::info!(schedule = %name, job = %job_id, "schedule fired");
                s.row.last_job_id = job_id;
            }
            b.writes.schedule_puts.push(s.row.clone());
        }
    }

    async fn fire(
        &mut self,
        t: pb::CreateScheduleRequest,
        owner: Option<String>,
        now: u64,
        b: &mut Batch,
    ) -> Result<String, Error> {
        let template = t.job.unwrap_or_default();
        let controls = validate::create_job(&template)?;
        let tasks = validate::schedule_tasks(t.tasks)?;
        let new = NewJob { description: template.description, metadata: template.metadata, owner, controls };
        let job = self.create_job(new, now, b);
        if !tasks.is_empty() {
            self.add_tasks(job.job_id.clone(), tasks, b).await?;
        }
        Ok(job.job_id)
    }

    /// With `--job-webhook`: a notice for each job that went idle in this batch.
    pub(super) fn write_notices(&self, b: &mut Batch, now: u64) {
        if self.settings.notices.is_none() {
            return;
        }
        let ended: BTreeSet<&JobId> = (b.effects.iter())
            .filter_map(|e| match e {
                Effect::Changed { job, to, .. } if to.is_final() => Some(job),
                _ => None,
            })
            .collect();
        for job in ended {
            let Some(info) = self.sched.job(job) else { continue };
            if !info.counts.all_final() {
                continue;
            }
            let pb_job = pb::Job {
                updated_at_ms: now as i64,
                ..convert::live_job(job.as_str(), &info.counts, info.cancelled, &info.controls, &info.spend)
            };
            let mut body = orca_proto::json::job_json(&pb_job);
            body["event"] = serde_json::json!("job.idle");
            body["seq"] = serde_json::json!(info.last_seq);
            b.writes.notices.push(Notice {
                job_id: job.to_string(),
                seq: info.last_seq,
                body: body.to_string(),
                created_at_ms: now as i64,
            });
        }
    }
}
