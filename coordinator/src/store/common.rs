//! The statements whose text is the same on SQLite and Postgres, written once. Each macro is
//! expanded inside a backend module, which provides:
//!
//! - `Conn` (its connection type), `Reads { pool, snapshot_readers }` and `Writes { conn }`;
//! - `sql(&str) -> AssertSqlSafe<String>`: the statement with that backend's placeholders
//!   (`?` stays `?` on SQLite and becomes `$1, $2, ...` on Postgres);
//! - `snapshot_tx(&pool)`: a read transaction that sees one committed state;
//! - `fence(&mut tx, self.fencing())`: the first statement of every write transaction (the
//!   leader's epoch check on Postgres, nothing on SQLite); `insert_jobs`, `insert_tasks`,
//!   `insert_deps`, `update_tasks`, `update_jobs`, `insert_attempts`: a batch's many rows
//!   (multi-row VALUES on SQLite, UNNEST of arrays on Postgres); `self.purge_idle(limit)`: a
//!   purge step with no job left to purge.
//!
//! Every integer column is a 64-bit integer on both backends, so binds and reads agree.

/// The read side's queries (`impl Reads`).
macro_rules! common_reads {
    () => {
        impl Reads {
            pub async fn notices(&self, limit: u32) -> Result<Vec<Notice>, Error> {
                let rows = sqlx::query(sql("SELECT job_id, seq, body, created_at_ms FROM job_notices \
                     ORDER BY created_at_ms, job_id, seq LIMIT ?"))
                .bind(limit as i64)
                .fetch_all(&self.pool)
                .await?;
                Ok(rows.iter().map(notice_of).collect())
            }

            pub async fn job(&self, job_id: &str) -> Result<Option<JobRecord>, Error> {
                let q = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE job_id = ? AND deleted_at_ms IS NULL");
                let row = sqlx::query(sql(&q)).bind(job_id).fetch_optional(&self.pool).await?;
                Ok(row.as_ref().map(job_of))
            }

            pub async fn jobs(&self, after: &str, limit: u32, owner: Option<&str>) -> Result<Vec<JobRecord>, Error> {
                let mine = if owner.is_some() { "AND owner = ?" } else { "" };
                let q = format!(
                    "SELECT {JOB_COLUMNS} FROM jobs WHERE job_id > ? AND deleted_at_ms IS NULL {mine} \
                     ORDER BY job_id LIMIT ?"
                );
                let mut q = sqlx::query(sql(&q)).bind(after);
                if let Some(o) = owner {
                    q = q.bind(o);
                }
                let rows = q.bind(limit as i64).fetch_all(&self.pool).await?;
                Ok(rows.iter().map(job_of).collect())
            }

            pub async fn git_repos(&self, ids: &[i64]) -> Result<HashMap<i64, String>, Error> {
                let mut out = HashMap::new();
                for chunk in ids.chunks(ROWS_PER_STATEMENT) {
                    for row in specs_query(chunk).fetch_all(&self.pool).await? {
                        let id = row.int("task_id");
                        let spec = pb::TaskSpec::decode(row.blob("spec").as_slice())
                            .map_err(|e| Error::Storage(format!("task {id}: unreadable spec: {e}")))?;
                        if let Some(g) = spec.git {
                            out.insert(id, g.repo);
                        }
                    }
                }
                Ok(out)
            }

            pub async fn task(&self, task_id: i64) -> Result<Option<TaskRecord>, Error> {
                let q = format!(
                    "SELECT {ROW_COLUMNS}, job_id, priority, spec, result, created_at_ms, updated_at_ms \
                     FROM tasks WHERE task_id = ? \
                     AND job_id IN (SELECT job_id FROM jobs WHERE deleted_at_ms IS NULL)"
                );
                let row = sqlx::query(sql(&q)).bind(task_id).fetch_optional(&self.pool).await?;
                row.map(|r| task_record_of(&r, true)).transpose()
            }

            pub async fn tasks(&self, q: &TaskQuery<'_>) -> Result<(Vec<TaskRecord>, bool), Error> {
                let payload = if q.with_payloads { "spec, result" } else { "NULL AS spec, NULL AS result" };
                let states = if q.states.is_empty() {
                    String::new()
                } else {
                    let list: Vec<String> = q.states.iter().map(|s| s.as_i32().to_string()).collect();
                    format!("AND state IN ({})", list.join(","))
                };
                let job = match q.job_id {
                    Some(_) => "job_id = ?",
                    None => "job_id NOT IN (SELECT job_id FROM jobs WHERE deleted_at_ms IS NOT NULL)",
                };
                let worker = if q.worker_id.is_some() { "AND worker_id = ?" } else { "" };
                let owner =
                    if q.owner.is_some() { "AND job_id IN (SELECT job_id FROM jobs WHERE owner = ?)" } else { "" };
                let text = format!(
                    "SELECT {ROW_COLUMNS}, job_id, priority, {payload}, created_at_ms, updated_at_ms FROM tasks \
                     WHERE {job} {states} {worker} {owner} AND task_id > ? ORDER BY task_id LIMIT ?"
                );
                let limit = q.limit as i64 + 1;
                let mut query = sqlx::query(sql(&text));
                for v in [q.job_id, q.worker_id, q.owner].into_iter().flatten() {
                    query = query.bind(v);
                }
                let mut rows = query.bind(q.after_id).bind(limit).fetch(&self.pool);
                // Row by row, so that a page of large tasks never holds much more than the budget.
                let mut out = Vec::new();
                let mut bytes = 0;
                while let Some(row) = rows.try_next().await? {
                    let t = task_record_of(&row, q.with_payloads)?;
                    let n = t.spec.as_ref().map_or(0, Vec::len) + t.result.as_ref().map_or(0, Vec::len);
                    if out.len() == q.limit as usize || (!out.is_empty() && bytes + n > q.max_bytes) {
                        return Ok((out, true));
                    }
                    bytes += n;
                    out.push(t);
                }
                Ok((out, false))
            }

            pub async fn attempts(&self, task_id: i64) -> Result<Vec<AttemptRecord>, Error> {
                let rows = sqlx::query(sql(
                    "SELECT attempt, worker_id, started_ms, ended_ms, outcome, reason, exit_code, cost_usd, \
                     duration_ms, output_tail FROM attempts WHERE task_id = ? ORDER BY attempt",
                ))
                .bind(task_id)
                .fetch_all(&self.pool)
                .await?;
                Ok(rows.iter().map(|r| attempt_of(task_id, r)).collect())
            }

            pub async fn context(&self, scope: &str) -> Result<Vec<(String, String)>, Error> {
                let rows = sqlx::query(sql("SELECT key, value FROM context WHERE scope = ? ORDER BY key"))
                    .bind(scope)
                    .fetch_all(&self.pool)
                    .await?;
                Ok(rows.iter().map(|r| (r.text("key"), r.text("value"))).collect())
            }

            pub async fn snapshot_page(
                &self,
                job_id: &str,
                after_id: i64,
                limit: usize,
            ) -> Result<Option<(JobRecord, Vec<TaskRecord>)>, Error> {
                let _reader =
                    self.snapshot_readers.acquire().await.map_err(|_| Error::Unavailable("shutting down".into()))?;
                let mut tx = snapshot_tx(&self.pool).await?;
                let q = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE job_id = ? AND deleted_at_ms IS NULL");
                let Some(job) = sqlx::query(sql(&q)).bind(job_id).fetch_optional(&mut *tx).await? else {
                    return Ok(None);
                };
                let q = format!(
                    "SELECT {SUMMARY_COLUMNS}, job_id, priority, NULL AS spec, NULL AS result, created_at_ms, \
                     updated_at_ms FROM tasks WHERE job_id = ? AND task_id > ? ORDER BY task_id LIMIT ?"
                );
                let q = sqlx::query(sql(&q)).bind(job_id).bind(after_id).bind(limit as i64);
                let rows = q.fetch_all(&mut *tx).await?;
                tx.commit().await?;
                let tasks = rows.iter().map(|r| task_record_of(r, false)).collect::<Result<_, _>>()?;
                Ok(Some((job_of(&job), tasks)))
            }

            pub async fn close(&self) {
                self.pool.close().await;
            }
        }

        /// `task_id, spec` of the tasks among `ids` (at most [`ROWS_PER_STATEMENT`]).
        fn specs_query(ids: &[i64]) -> sqlx::query::Query<'static, Db, <Db as sqlx::Database>::Arguments> {
            let q = format!("SELECT task_id, spec FROM tasks WHERE task_id IN ({})", marks(ids.len()));
            let mut q = sqlx::query(sql(&q));
            for id in ids {
                q = q.bind(*id);
            }
            q
        }
    };
}

/// The writer's reads, the start-up load, and the small writes of a batch (`impl Writes`).
macro_rules! common_writes {
    () => {
        impl Writes {
            pub async fn commit(&mut self, b: &WriteBatch, now: i64) -> Result<(), Error> {
                let fencing = self.fencing();
                let mut tx = self.conn.begin().await?;
                fence(&mut tx, fencing).await?;
                write_bulk(&mut tx, b, now).await?;
                write_small(&mut tx, b, now).await?;
                tx.commit().await?;
                Ok(())
            }

            pub async fn purge_step(&mut self, limit: u32) -> Result<Purge, Error> {
                let Some(job) = deleted_job(&mut self.conn).await? else { return self.purge_idle(limit).await };
                let fencing = self.fencing();
                let mut tx = self.conn.begin().await?;
                fence(&mut tx, fencing).await?;
                let step = purge_rows(&mut tx, job, limit).await?;
                tx.commit().await?;
                Ok(step)
            }

            pub async fn expired_jobs(&mut self, before_ms: i64, limit: u32) -> Result<Vec<String>, Error> {
                let rows =
                    sqlx::query(sql(EXPIRED_JOBS)).bind(before_ms).bind(limit as i64).fetch_all(&mut self.conn).await?;
                Ok(rows.iter().map(|r| r.text("job_id")).collect())
            }

            pub async fn specs(&mut self, ids: &[i64]) -> Result<HashMap<i64, Vec<u8>>, Error> {
                let mut out = HashMap::with_capacity(ids.len());
                for chunk in ids.chunks(ROWS_PER_STATEMENT) {
                    for row in specs_query(chunk).fetch_all(&mut self.conn).await? {
                        out.insert(row.int("task_id"), row.blob("spec"));
                    }
                }
                Ok(out)
            }

            pub async fn git_base(&mut self, on: i64) -> Result<pb::GitBase, Error> {
                let mut base = pb::GitBase::default();
                let (mut next, mut bytes) = (on, 0usize);
                while next != 0 {
                    let row = sqlx::query(sql("SELECT spec, result FROM tasks WHERE task_id = ?"))
                        .bind(next)
                        .fetch_optional(&mut self.conn)
                        .await?;
                    let Some(row) = row else {
                        return Ok(chain_error(format!("task {next} of the chain is gone")));
                    };
                    let spec = pb::TaskSpec::decode(row.blob("spec").as_slice());
                    let result = row.opt_blob("result").map(|r| pb::TaskResult::decode(r.as_slice())).transpose();
                    let (Ok(spec), Ok(result)) = (spec, result) else {
                        return Ok(chain_error(format!("task {next} of the chain cannot be read")));
                    };
                    let Some(git) = result.and_then(|r| r.git).map(|g| *g) else {
                        return Ok(chain_error(format!("task {next} has no git result (did an older worker run it?)")));
                    };
                    bytes += git.patch.len();
                    if bytes > limits::MAX_GIT_CHAIN_BYTES {
                        let max = limits::MAX_GIT_CHAIN_BYTES;
                        return Ok(chain_error(format!(
                            "the patches this task builds on are over {max} bytes together"
                        )));
                    }
                    if !git.patch.is_empty() {
                        base.patches.push(git.patch);
                    }
                    base.base_commit = git.base_commit;
                    next = spec.git.map_or(0, |g| g.builds_on);
                }
                base.patches.reverse();
                Ok(base)
            }

            pub async fn request(&mut self, k: &RequestKey) -> Result<Option<(Vec<u8>, Vec<u8>)>, Error> {
                let row = sqlx::query(sql("SELECT digest, response FROM requests \
                     WHERE caller = ? AND method = ? AND job_id = ? AND request_id = ?"))
                .bind(&k.caller)
                .bind(k.method)
                .bind(&k.job_id)
                .bind(&k.request_id)
                .fetch_optional(&mut self.conn)
                .await?;
                Ok(row.map(|r| (r.blob("digest"), r.blob("response"))))
            }

            pub async fn tasks_by_id(&mut self, ids: &[i64]) -> Result<Vec<(String, TaskRow)>, Error> {
                let mut out = Vec::with_capacity(ids.len());
                for chunk in ids.chunks(ROWS_PER_STATEMENT) {
                    let q =
                        format!("SELECT {ROW_COLUMNS}, job_id FROM tasks WHERE task_id IN ({})", marks(chunk.len()));
                    let mut q = sqlx::query(sql(&q));
                    for id in chunk {
                        q = q.bind(id);
                    }
                    for row in q.fetch_all(&mut self.conn).await? {
                        out.push((row.text("job_id"), task_row_of(&row)?));
                    }
                }
                Ok(out)
            }

            pub async fn revivable(&mut self, job: Option<&str>, ids: &[i64]) -> Result<Vec<LiveTask>, Error> {
                let roots: Vec<i64> = match job {
                    Some(j) if ids.is_empty() => {
                        let q = sqlx::query(sql("SELECT task_id FROM tasks WHERE job_id = ? AND state = ?"));
                        let rows = q.bind(j).bind(State::Failed.as_i32()).fetch_all(&mut self.conn).await?;
                        rows.iter().map(|r| r.int("task_id")).collect()
                    }
                    _ => ids.to_vec(),
                };
                let mut all: Vec<i64> = roots.clone();
                for chunk in roots.chunks(ROWS_PER_STATEMENT) {
                    let q = format!(
                        "SELECT task_id FROM tasks WHERE state = ? AND cancel_cause IN ({})",
                        marks(chunk.len())
                    );
                    let mut q = sqlx::query(sql(&q)).bind(State::Cancelled.as_i32());
                    for id in chunk {
                        q = q.bind(id);
                    }
                    all.extend(q.fetch_all(&mut self.conn).await?.iter().map(|r| r.int("task_id")));
                }
                all.sort_unstable();
                all.dedup();
                let mut out: Vec<LiveTask> = Vec::new();
                for chunk in all.chunks(ROWS_PER_STATEMENT) {
                    self.revivable_chunk(chunk, &mut out).await?;
                }
                out.sort_by_key(|t| t.row.task_id);
                Ok(out)
            }

            /// The rows, specs and dependencies of the tasks among `ids`.
            async fn revivable_chunk(&mut self, ids: &[i64], out: &mut Vec<LiveTask>) -> Result<(), Error> {
                let q = format!(
                    "SELECT {ROW_COLUMNS}, job_id, spec FROM tasks WHERE task_id IN ({}) ORDER BY task_id",
                    marks(ids.len())
                );
                let mut q = sqlx::query(sql(&q));
                for id in ids {
                    q = q.bind(id);
                }
                let rows = q.fetch_all(&mut self.conn).await?;
                let q = format!("SELECT task_id, depends_on FROM task_deps WHERE task_id IN ({})", marks(ids.len()));
                let mut q = sqlx::query(sql(&q));
                for id in ids {
                    q = q.bind(id);
                }
                let mut deps: HashMap<i64, Vec<i64>> = HashMap::new();
                for r in q.fetch_all(&mut self.conn).await? {
                    deps.entry(r.int("task_id")).or_default().push(r.int("depends_on"));
                }
                for row in rows {
                    let r = task_row_of(&row)?;
                    let mut d = deps.remove(&r.task_id).unwrap_or_default();
                    d.sort_unstable();
                    out.push(LiveTask { job_id: row.text("job_id"), spec: row.blob("spec"), deps: d, row: r });
                }
                Ok(())
            }
        }

        /// A batch's many rows, a few statements per table whatever their number.
        async fn write_bulk(tx: &mut Conn, b: &WriteBatch, now: i64) -> Result<(), Error> {
            insert_jobs(tx, &b.jobs, now).await?;
            insert_tasks(tx, &b.tasks, now).await?;
            insert_deps(tx, &b.deps).await?;
            update_tasks(tx, &b.updates, now).await?;
            update_jobs(tx, &b.job_updates, now).await?;
            insert_attempts(tx, &b.attempts).await
        }

        /// What the scheduler needs at start, but for the tasks that are not final (they come
        /// page by page, `live_page`).
        async fn load(conn: &mut Conn) -> Result<Loaded, Error> {
            let mut loaded = Loaded::default();
            let q = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE deleted_at_ms IS NULL");
            let mut rows = sqlx::query(sql(&q)).fetch(&mut *conn);
            while let Some(row) = rows.try_next().await? {
                loaded.jobs.push(job_of(&row));
            }
            drop(rows);
            let rows = sqlx::query(sql("SELECT scope, key, value FROM context \
                 WHERE scope NOT IN (SELECT job_id FROM jobs WHERE deleted_at_ms IS NOT NULL)"))
            .fetch_all(&mut *conn)
            .await?;
            loaded.context = rows.iter().map(|r| (r.text("scope"), r.text("key"), r.text("value"))).collect();
            // Ids are never reused: the highest is also kept in `meta` once its task is purged.
            let row = sqlx::query(sql("SELECT coalesce((SELECT max(task_id) FROM tasks), 0) AS in_tasks, \
                 coalesce((SELECT value FROM meta WHERE key = 'max_task_id'), 0) AS in_meta"))
            .fetch_one(&mut *conn)
            .await?;
            loaded.max_task_id = row.int("in_tasks").max(row.int("in_meta"));
            let row = sqlx::query(sql("SELECT count(*) AS n FROM jobs WHERE deleted_at_ms IS NOT NULL"))
                .fetch_one(&mut *conn)
                .await?;
            loaded.purge_pending = row.int("n") > 0;
            let rows = sqlx::query(sql(
                "SELECT name, cron, template, next_run_ms, last_run_ms, last_job_id, owner, created_at_ms \
                 FROM schedules ORDER BY name",
            ))
            .fetch_all(&mut *conn)
            .await?;
            loaded.schedules = rows.iter().map(schedule_of).collect();
            Ok(loaded)
        }

        /// The writes of a batch that are few per batch: context, idempotency keys,
        /// schedules, notices and deletion marks, a statement each.
        async fn write_small(tx: &mut Conn, b: &WriteBatch, now: i64) -> Result<(), Error> {
            for (scope, key, value) in &b.context {
                let q = match value {
                    Some(v) => sqlx::query(sql("INSERT INTO context (scope, key, value) VALUES (?, ?, ?) \
                         ON CONFLICT (scope, key) DO UPDATE SET value = excluded.value"))
                    .bind(scope)
                    .bind(key)
                    .bind(v),
                    None => sqlx::query(sql("DELETE FROM context WHERE scope = ? AND key = ?")).bind(scope).bind(key),
                };
                q.execute(&mut *tx).await?;
            }
            if let Some(before) = b.prune_requests_before {
                sqlx::query(sql("DELETE FROM requests WHERE created_at_ms < ?")).bind(before).execute(&mut *tx).await?;
            }
            for r in &b.requests {
                sqlx::query(sql(
                    "INSERT INTO requests (caller, method, job_id, request_id, digest, response, created_at_ms) \
                     VALUES (?, ?, ?, ?, ?, ?, ?)",
                ))
                .bind(&r.key.caller)
                .bind(r.key.method)
                .bind(&r.key.job_id)
                .bind(&r.key.request_id)
                .bind(&r.digest)
                .bind(&r.response)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            }
            write_schedules(tx, b).await?;
            for n in &b.notices {
                sqlx::query(sql("INSERT INTO job_notices (job_id, seq, body, created_at_ms) VALUES (?, ?, ?, ?) \
                     ON CONFLICT (job_id, seq) DO UPDATE SET body = excluded.body, \
                     created_at_ms = excluded.created_at_ms"))
                .bind(&n.job_id)
                .bind(n.seq as i64)
                .bind(&n.body)
                .bind(n.created_at_ms)
                .execute(&mut *tx)
                .await?;
            }
            for (job, seq) in &b.notices_done {
                sqlx::query(sql("DELETE FROM job_notices WHERE job_id = ? AND seq = ?"))
                    .bind(job)
                    .bind(*seq as i64)
                    .execute(&mut *tx)
                    .await?;
            }
            for job in &b.delete_jobs {
                sqlx::query(sql("UPDATE jobs SET deleted_at_ms = ? WHERE job_id = ?"))
                    .bind(now)
                    .bind(job)
                    .execute(&mut *tx)
                    .await?;
            }
            Ok(())
        }

        async fn write_schedules(tx: &mut Conn, b: &WriteBatch) -> Result<(), Error> {
            for name in &b.schedule_deletes {
                sqlx::query(sql("DELETE FROM schedules WHERE name = ?")).bind(name).execute(&mut *tx).await?;
            }
            for s in &b.schedule_puts {
                sqlx::query(sql(
                    "INSERT INTO schedules (name, cron, template, next_run_ms, last_run_ms, last_job_id, owner, \
                     created_at_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (name) DO UPDATE SET \
                     cron = excluded.cron, template = excluded.template, next_run_ms = excluded.next_run_ms, \
                     last_run_ms = excluded.last_run_ms, last_job_id = excluded.last_job_id, \
                     owner = excluded.owner, created_at_ms = excluded.created_at_ms",
                ))
                .bind(&s.name)
                .bind(&s.cron)
                .bind(&s.template)
                .bind(s.next_run_ms)
                .bind(s.last_run_ms)
                .bind(&s.last_job_id)
                .bind(&s.owner)
                .bind(s.created_at_ms)
                .execute(&mut *tx)
                .await?;
            }
            Ok(())
        }

        /// One step of purging `job` (marked deleted) in `tx`: up to `limit` dependency
        /// edges, else attempts, else tasks, else its context and row.
        async fn purge_rows(tx: &mut Conn, job: String, limit: u32) -> Result<Purge, Error> {
            let edges = sqlx::query(sql(
                "DELETE FROM task_deps WHERE (task_id, depends_on) IN (SELECT d.task_id, d.depends_on \
                 FROM tasks t JOIN task_deps d ON d.task_id = t.task_id WHERE t.job_id = ? LIMIT ?)",
            ))
            .bind(&job)
            .bind(limit as i64)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if edges > 0 {
                return Ok(Purge::Rows);
            }
            let attempts =
                sqlx::query(sql("DELETE FROM attempts WHERE (task_id, attempt) IN (SELECT a.task_id, a.attempt \
                 FROM tasks t JOIN attempts a ON a.task_id = t.task_id WHERE t.job_id = ? LIMIT ?)"))
                .bind(&job)
                .bind(limit as i64)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if attempts > 0 {
                return Ok(Purge::Rows);
            }
            sqlx::query(sql(
                // No row when the tasks table is empty (the last job's tasks are gone).
                "INSERT INTO meta (key, value) SELECT 'max_task_id', max(task_id) FROM tasks WHERE true \
                 HAVING max(task_id) IS NOT NULL ON CONFLICT (key) DO UPDATE SET value = \
                 CASE WHEN excluded.value > meta.value THEN excluded.value ELSE meta.value END",
            ))
            .execute(&mut *tx)
            .await?;
            let tasks = sqlx::query(sql(
                "DELETE FROM tasks WHERE task_id IN (SELECT task_id FROM tasks WHERE job_id = ? LIMIT ?)",
            ))
            .bind(&job)
            .bind(limit as i64)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if tasks > 0 {
                return Ok(Purge::Rows);
            }
            sqlx::query(sql("DELETE FROM context WHERE scope = ?")).bind(&job).execute(&mut *tx).await?;
            sqlx::query(sql("DELETE FROM jobs WHERE job_id = ?")).bind(&job).execute(&mut *tx).await?;
            Ok(Purge::Job(job))
        }

        /// A job marked deleted and not purged yet, if any.
        async fn deleted_job(conn: &mut Conn) -> Result<Option<String>, Error> {
            let row = sqlx::query(sql("SELECT job_id FROM jobs WHERE deleted_at_ms IS NOT NULL LIMIT 1"))
                .fetch_optional(&mut *conn)
                .await?;
            Ok(row.map(|r| r.text("job_id")))
        }
    };
}
