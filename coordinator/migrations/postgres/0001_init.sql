-- Orca's schema on Postgres: SQLite's migrations 0001-0007 in one. Every integer is BIGINT
-- and every real DOUBLE PRECISION, as the store reads them on both backends; flags
-- (cancelled, paused) are 0/1 as on SQLite. Later migrations come in pairs, one per backend.
--
-- No foreign keys (SQLite has them): the coordinator is the only writer and checks every
-- task's job and every dependency in memory before it writes, and Postgres runs a foreign
-- key as a trigger query per row, which took 45% of a bulk insert of tasks here.

CREATE TABLE jobs (
    job_id          TEXT PRIMARY KEY,
    description     TEXT NOT NULL,
    metadata        BYTEA,             -- encoded google.protobuf.Struct
    cancelled       BIGINT NOT NULL DEFAULT 0,
    last_seq        BIGINT NOT NULL DEFAULT 0,   -- the job's last event sequence number
    n_waiting       BIGINT NOT NULL DEFAULT 0,
    n_pending       BIGINT NOT NULL DEFAULT 0,
    n_in_progress   BIGINT NOT NULL DEFAULT 0,
    n_completed     BIGINT NOT NULL DEFAULT 0,
    n_failed        BIGINT NOT NULL DEFAULT 0,
    n_cancelled     BIGINT NOT NULL DEFAULT 0,
    created_at_ms   BIGINT NOT NULL,
    updated_at_ms   BIGINT NOT NULL,
    deleted_at_ms   BIGINT,
    owner           TEXT,
    weight          BIGINT NOT NULL DEFAULT 1,
    max_running     BIGINT NOT NULL DEFAULT 0,
    budget_usd      DOUBLE PRECISION NOT NULL DEFAULT 0,
    paused          BIGINT NOT NULL DEFAULT 0,
    cost_usd        DOUBLE PRECISION NOT NULL DEFAULT 0,
    input_tokens    BIGINT NOT NULL DEFAULT 0,
    output_tokens   BIGINT NOT NULL DEFAULT 0
);

CREATE INDEX jobs_deleted ON jobs(deleted_at_ms) WHERE deleted_at_ms IS NOT NULL;
CREATE INDEX jobs_by_owner ON jobs(owner, job_id) WHERE owner IS NOT NULL;
CREATE INDEX jobs_finished_by_age ON jobs(updated_at_ms)
    WHERE deleted_at_ms IS NULL AND n_waiting + n_pending + n_in_progress = 0;

CREATE TABLE tasks (
    task_id         BIGINT PRIMARY KEY,
    job_id          TEXT NOT NULL,
    state           BIGINT NOT NULL,
    priority        BIGINT NOT NULL,
    attempt         BIGINT NOT NULL DEFAULT 0,
    retries_used    BIGINT NOT NULL DEFAULT 0,
    lost_leases     BIGINT NOT NULL DEFAULT 0,
    worker_id       TEXT,
    not_before_ms   BIGINT NOT NULL DEFAULT 0,
    cancel_cause    BIGINT,            -- root failed/cancelled task of a cascade
    reason          TEXT NOT NULL DEFAULT '',
    spec            BYTEA NOT NULL,    -- encoded orca.v1.TaskSpec
    result          BYTEA,             -- encoded orca.v1.TaskResult
    created_at_ms   BIGINT NOT NULL,
    updated_at_ms   BIGINT NOT NULL
);

CREATE INDEX tasks_by_job_state ON tasks(job_id, state, task_id);
CREATE INDEX tasks_by_cancel_cause ON tasks(cancel_cause) WHERE cancel_cause IS NOT NULL;

CREATE TABLE task_deps (
    task_id         BIGINT NOT NULL,
    depends_on      BIGINT NOT NULL,
    PRIMARY KEY (task_id, depends_on)
);

CREATE TABLE context (
    scope           TEXT NOT NULL,
    key             TEXT NOT NULL,
    value           TEXT NOT NULL,
    PRIMARY KEY (scope, key)
);

CREATE TABLE requests (
    caller          TEXT NOT NULL,
    method          TEXT NOT NULL,
    job_id          TEXT NOT NULL,
    request_id      TEXT NOT NULL,
    digest          BYTEA NOT NULL,
    response        BYTEA NOT NULL,
    created_at_ms   BIGINT NOT NULL,
    PRIMARY KEY (caller, method, job_id, request_id)
);

CREATE INDEX requests_by_age ON requests(created_at_ms);

CREATE TABLE meta (
    key             TEXT PRIMARY KEY,
    value           BIGINT NOT NULL
);

CREATE TABLE attempts (
    task_id     BIGINT NOT NULL,
    attempt     BIGINT NOT NULL,
    worker_id   TEXT,
    started_ms  BIGINT NOT NULL,
    ended_ms    BIGINT NOT NULL,
    -- completed | failed | handed_back | lost | cancelled
    outcome     TEXT NOT NULL,
    reason      TEXT NOT NULL DEFAULT '',
    exit_code   BIGINT,
    cost_usd    DOUBLE PRECISION,
    duration_ms BIGINT,
    -- The last 4 KiB of the attempt's output.
    output_tail TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (task_id, attempt)
);

CREATE TABLE schedules (
    name            TEXT PRIMARY KEY,
    cron            TEXT NOT NULL,
    template        BYTEA NOT NULL,
    next_run_ms     BIGINT NOT NULL,
    last_run_ms     BIGINT NOT NULL DEFAULT 0,
    last_job_id     TEXT NOT NULL DEFAULT '',
    owner           TEXT,
    created_at_ms   BIGINT NOT NULL
);

CREATE TABLE job_notices (
    job_id          TEXT NOT NULL,
    seq             BIGINT NOT NULL,
    body            TEXT NOT NULL,
    created_at_ms   BIGINT NOT NULL,
    PRIMARY KEY (job_id, seq)
);

-- Standby coordinators: one row, the leader's epoch (raised by each coordinator that takes
-- the leader lock; every write batch checks it, so a leader that lost the lock commits
-- nothing after another took over) and the address it advertises.
CREATE TABLE orca_leader (
    epoch           BIGINT NOT NULL,
    addr            TEXT NOT NULL,
    since_ms        BIGINT NOT NULL
);
INSERT INTO orca_leader (epoch, addr, since_ms) VALUES (0, '', 0);
