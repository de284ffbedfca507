-- Orca schema, version 7: scheduling controls and spend per job, recurring jobs, and the
-- job-completion notices waiting to be delivered.

ALTER TABLE jobs ADD COLUMN weight INTEGER NOT NULL DEFAULT 1;
ALTER TABLE jobs ADD COLUMN max_running INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN budget_usd REAL NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN paused INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN cost_usd REAL NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN input_tokens INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN output_tokens INTEGER NOT NULL DEFAULT 0;

-- A recurring job: `template` is the encoded orca.v1.CreateScheduleRequest. The tick that
-- fires writes the new job, its tasks and the schedule's next_run_ms in one transaction.
CREATE TABLE schedules (
    name            TEXT PRIMARY KEY NOT NULL,
    cron            TEXT NOT NULL,
    template        BLOB NOT NULL,
    next_run_ms     INTEGER NOT NULL,
    last_run_ms     INTEGER NOT NULL DEFAULT 0,
    last_job_id     TEXT NOT NULL DEFAULT '',
    owner           TEXT,
    created_at_ms   INTEGER NOT NULL
) WITHOUT ROWID;

-- Job-completion notices (--job-webhook): written in the batch that made the job idle,
-- deleted once delivered, so a restart delivers what was pending.
CREATE TABLE job_notices (
    job_id          TEXT NOT NULL,
    seq             INTEGER NOT NULL,
    body            TEXT NOT NULL,
    created_at_ms   INTEGER NOT NULL,
    PRIMARY KEY (job_id, seq)
) WITHOUT ROWID;
