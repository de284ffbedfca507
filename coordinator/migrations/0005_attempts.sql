-- Orca schema, version 5: attempt history. One row per attempt that ended without
-- completing its task (failed, handed back, lost with its lease, cancelled while running),
-- written in the batch that ended it, so `orca show`, `orca logs` and the dashboards can tell
-- what happened after the fact. The attempt that completed a task has no row: the task's row
-- and result tell it (so the common case writes nothing more). Purged with its task.

CREATE TABLE attempts (
    task_id     INTEGER NOT NULL,
    attempt     INTEGER NOT NULL,
    worker_id   TEXT,
    started_ms  INTEGER NOT NULL,
    ended_ms    INTEGER NOT NULL,
    -- completed | failed | handed_back | lost | cancelled
    outcome     TEXT NOT NULL,
    reason      TEXT NOT NULL DEFAULT '',
    exit_code   INTEGER,
    cost_usd    REAL,
    duration_ms INTEGER,
    -- The last 4 KiB of the attempt's output.
    output_tail TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (task_id, attempt)
) WITHOUT ROWID;
