-- Orca schema, version 1.
-- Task states are stored as the proto enum numbers: 1 waiting, 2 pending, 3 in_progress,
-- 4 completed, 5 failed, 6 cancelled. Times are unix milliseconds.

CREATE TABLE jobs (
    job_id          TEXT PRIMARY KEY NOT NULL,
    description     TEXT NOT NULL,
    metadata        BLOB,              -- encoded google.protobuf.Struct
    cancelled       INTEGER NOT NULL DEFAULT 0,
    last_seq        INTEGER NOT NULL DEFAULT 0,   -- the job's last event sequence number
    n_waiting       INTEGER NOT NULL DEFAULT 0,
    n_pending       INTEGER NOT NULL DEFAULT 0,
    n_in_progress   INTEGER NOT NULL DEFAULT 0,
    n_completed     INTEGER NOT NULL DEFAULT 0,
    n_failed        INTEGER NOT NULL DEFAULT 0,
    n_cancelled     INTEGER NOT NULL DEFAULT 0,
    created_at_ms   INTEGER NOT NULL,
    updated_at_ms   INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE tasks (
    task_id         INTEGER PRIMARY KEY NOT NULL,
    job_id          TEXT NOT NULL REFERENCES jobs(job_id),
    state           INTEGER NOT NULL,
    priority        INTEGER NOT NULL,
    attempt         INTEGER NOT NULL DEFAULT 0,
    retries_used    INTEGER NOT NULL DEFAULT 0,
    lost_leases     INTEGER NOT NULL DEFAULT 0,
    worker_id       TEXT,
    not_before_ms   INTEGER NOT NULL DEFAULT 0,
    cancel_cause    INTEGER,           -- root failed/cancelled task of a cascade
    reason          TEXT NOT NULL DEFAULT '',
    spec            BLOB NOT NULL,     -- encoded orca.v1.TaskSpec
    result          BLOB,              -- encoded orca.v1.TaskResult
    created_at_ms   INTEGER NOT NULL,
    updated_at_ms   INTEGER NOT NULL
);

-- Serves ListTasks by job and state, and the start-up load of the tasks that are not final
-- (jobs whose counters show any); no other index, every one costs on each state change.
CREATE INDEX tasks_by_job_state ON tasks(job_id, state, task_id);
CREATE INDEX tasks_by_cancel_cause ON tasks(cancel_cause) WHERE cancel_cause IS NOT NULL;

CREATE TABLE task_deps (
    task_id         INTEGER NOT NULL REFERENCES tasks(task_id),
    depends_on      INTEGER NOT NULL REFERENCES tasks(task_id),
    PRIMARY KEY (task_id, depends_on)
) WITHOUT ROWID;

-- Shared context: scope is '' for global, else a job id.
CREATE TABLE context (
    scope           TEXT NOT NULL,
    key             TEXT NOT NULL,
    value           TEXT NOT NULL,
    PRIMARY KEY (scope, key)
) WITHOUT ROWID;
