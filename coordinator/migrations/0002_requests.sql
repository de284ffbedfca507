-- Orca schema, version 2: idempotency keys of CreateJob and AddTasks.
-- A call repeated with the same key (per caller, method and job) returns the first call's
-- result, stored here in the same transaction as the write itself. `digest` is the SHA-256 of
-- the request without its key, so the same key with another body is refused. Rows are kept
-- at least 24 hours, then pruned.

CREATE TABLE requests (
    caller          TEXT NOT NULL,
    method          TEXT NOT NULL,
    job_id          TEXT NOT NULL,
    request_id      TEXT NOT NULL,
    digest          BLOB NOT NULL,
    response        BLOB NOT NULL,
    created_at_ms   INTEGER NOT NULL,
    PRIMARY KEY (caller, method, job_id, request_id)
) WITHOUT ROWID;

CREATE INDEX requests_by_age ON requests(created_at_ms);
