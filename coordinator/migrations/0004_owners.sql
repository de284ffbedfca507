-- Orca schema, version 4: job owners. With `--auth-file`, a job records the name of the
-- token that created it; a `submitter` token acts only on its own jobs. NULL: created
-- without auth (or before 0.2.0); such jobs are reached by readers and admins only.

ALTER TABLE jobs ADD COLUMN owner TEXT;
CREATE INDEX jobs_by_owner ON jobs(owner, job_id) WHERE owner IS NOT NULL;
