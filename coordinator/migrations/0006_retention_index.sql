-- Orca schema, version 6: retention looks for finished jobs past --retain-days once a minute
-- (Writer::expired_jobs). Without an index that is a scan of every job on the writer's
-- connection; this partial index holds only finished, undeleted jobs, by age, so the scan
-- reads just the expired ones. Active jobs are not in it, so their counter updates do not
-- touch it.

CREATE INDEX jobs_finished_by_age ON jobs(updated_at_ms)
    WHERE deleted_at_ms IS NULL AND n_waiting + n_pending + n_in_progress = 0;
