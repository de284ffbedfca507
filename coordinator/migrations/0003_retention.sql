-- Orca schema, version 3: retention and DeleteJob.
-- A job being removed is marked first (`deleted_at_ms`), in the same commit that takes it out
-- of the scheduler, so reads stop seeing it at once; its dependency edges, tasks and context
-- are then deleted a few hundred rows per transaction between the dispatcher's batches, and
-- its row last. Task ids are never reused: `meta.max_task_id` keeps the highest id ever
-- given once a purge may have deleted it.

ALTER TABLE jobs ADD COLUMN deleted_at_ms INTEGER;
CREATE INDEX jobs_deleted ON jobs(deleted_at_ms) WHERE deleted_at_ms IS NOT NULL;

CREATE TABLE meta (
    key             TEXT PRIMARY KEY NOT NULL,
    value           INTEGER NOT NULL
) WITHOUT ROWID;
