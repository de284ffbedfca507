//! Who may call what: bearer tokens with roles, from `--auth-file`.
//!
//! The file is TOML, one `[[tokens]]` entry per token, with the token's hex SHA-256 (the
//! token itself is never stored). A call carries `authorization: Bearer <token>`; [`AuthLayer`]
//! hashes it, finds the entry (comparing every digest in constant time), checks the
//! method's row of [`allowed`] and puts the [`Caller`] in the request's extensions for the
//! handlers, which check job ownership (a submitter acts on the jobs it created). No or an
//! unknown token: UNAUTHENTICATED; the wrong role: PERMISSION_DENIED. Health and reflection
//! stay open. Without an auth file every call is [`Caller::anonymous`] (an admin): the
//! one-machine case is unchanged. SIGHUP reloads the file ([`Auth::reload`]); a bad file is
//! refused at start and, on reload, logged and the previous one kept.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use serde::Deserialize;
use sha2::{Digest, Sha256};

/// What a token may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The WorkerGateway service only.
    Worker,
    /// The Orchestrator service, on the jobs it created.
    Submitter,
    /// Read-only calls, on every job.
    Reader,
    /// Everything.
    Admin,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Worker => "worker",
            Role::Submitter => "submitter",
            Role::Reader => "reader",
            Role::Admin => "admin",
        }
    }
}

/// Tasks per second a token may add (AddTasks), on average, by default.
pub const DEFAULT_TASKS_PER_SECOND: u32 = 1_000;
/// Open WatchJob streams a token may hold by default.
pub const DEFAULT_WATCH_STREAMS: u32 = 64;

/// A token's limits (see the `[[tokens]]` keys `tasks_per_second`, `burst`, `watch_streams`).
#[derive(Debug)]
pub struct Limits {
    /// AddTasks: tasks per second on average, up to `burst` at once.
    pub tasks: Mutex<Bucket>,
    pub watch_streams: u32,
    /// WatchJob streams open now.
    pub watching: AtomicU32,
}

/// A token bucket: `rate` per second, holding at most `burst`. Pure: the caller gives the time.
#[derive(Clone, Debug, PartialEq)]
pub struct Bucket {
    rate: f64,
    burst: f64,
    level: f64,
    at: Option<Instant>,
}

impl Bucket {
    pub fn new(rate: u32, burst: u32) -> Bucket {
        Bucket { rate: rate as f64, burst: burst.max(1) as f64, level: burst.max(1) as f64, at: None }
    }

    /// Takes `n` at `now` if the bucket holds them; else how long until it would.
    pub fn take(&mut self, n: u32, now: Instant) -> Result<(), Duration> {
        if let Some(at) = self.at {
            self.level = (self.level + now.saturating_duration_since(at).as_secs_f64() * self.rate).min(self.burst);
        }
        self.at = Some(now);
        // A request larger than the burst passes with a full bucket and leaves it in debt, so
        // no batch is refused for ever and the average rate still holds.
        let n = n as f64;
        let need = n.min(self.burst);
        if self.level >= need {
            self.level -= n;
            return Ok(());
        }
        Err(Duration::from_secs_f64(((need - self.level) / self.rate.max(f64::MIN_POSITIVE)).min(86_400.0)))
    }
}

/// Counts one open WatchJob stream of a token until dropped.
#[derive(Debug)]
pub struct Watching(Arc<Limits>);

impl Drop for Watching {
    fn drop(&mut self) {
        self.0.watching.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Limits {
    /// One more WatchJob stream, or RESOURCE_EXHAUSTED naming the limit.
    pub fn open_watch(self: &Arc<Limits>, name: &str) -> Result<Watching, tonic::Status> {
        let now = self.watching.fetch_add(1, Ordering::Relaxed);
        if now >= self.watch_streams {
            self.watching.fetch_sub(1, Ordering::Relaxed);
            return Err(tonic::Status::resource_exhausted(format!(
                "token {name:?} has {now} WatchJob streams open, its limit (watch_streams = {}); close one first",
                self.watch_streams
            )));
        }
        Ok(Watching(self.clone()))
    }

    /// Admits `n` new tasks, or RESOURCE_EXHAUSTED naming the limit and when to retry.
    pub fn add_tasks(&self, name: &str, n: u32) -> Result<(), tonic::Status> {
        let mut b = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
        b.take(n, Instant::now()).map_err(|wait| {
            tonic::Status::resource_exhausted(format!(
                "token {name:?} is over its AddTasks rate (tasks_per_second = {}, burst = {}); retry in {} ms",
                b.rate,
                b.burst,
                wait.as_millis().max(1)
            ))
        })
    }
}

/// The authenticated caller of a call.
#[derive(Clone, Debug)]
pub struct Caller {
    /// The token's name (a job's owner, the scope of idempotency keys, what logs show).
    pub name: Arc<str>,
    pub role: Role,
    /// `None` for the anonymous caller (no auth file): no limits.
    pub limits: Option<Arc<Limits>>,
}

impl PartialEq for Caller {
    fn eq(&self, o: &Caller) -> bool {
        self.name == o.name && self.role == o.role
    }
}

impl Caller {
    /// Every caller when no auth file is set.
    pub fn anonymous() -> Caller {
        Caller { name: Arc::from(""), role: Role::Admin, limits: None }
    }

    /// Whether this caller may act on a job owned by `owner` (`None`: a job from before
    /// owners were recorded, which only admins and readers reach).
    pub fn owns(&self, owner: Option<&str>) -> bool {
        self.role == Role::Admin || owner.is_some_and(|o| o == &*self.name)
    }
}

/// What a method needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Health and reflection: no token.
    Open,
    /// The WorkerGateway service.
    Worker,
    /// Reads of jobs and tasks (a submitter: its own).
    Read,
    /// Writes of jobs and tasks (a submitter: its own).
    Write,
    /// Changes to the fleet itself (DrainWorker).
    Admin,
}

/// The row of the role table for a gRPC path; `None` for a path that is no method.
pub fn access(path: &str) -> Option<Access> {
    let (service, method) = path.trim_start_matches('/').split_once('/')?;
    Some(match service {
        "grpc.health.v1.Health"
        | "grpc.reflection.v1.ServerReflection"
        | "grpc.reflection.v1alpha.ServerReflection" => Access::Open,
        "orca.v1.WorkerGateway" => Access::Worker,
        "orca.v1.Orchestrator" => match method {
            "GetJob" | "ListJobs" | "GetTask" | "ListTasks" | "GetContext" | "WatchJob" => Access::Read,
            // The fleet's state is nobody's own: every reader sees all of it.
            "ListWorkers" | "GetStats" | "WatchFleet" => Access::Read,
            // A submitter sees and changes its own schedules only (checked by the handler).
            "ListSchedules" => Access::Read,
            "DrainWorker" => Access::Admin,
            // CreateJob, AddTasks, CancelJob, DeleteJob, UpdateJob, CancelTask, RetryTasks,
            // SetContext, CreateSchedule, DeleteSchedule.
            _ => Access::Write,
        },
        _ => return None,
    })
}

/// Whether `role` may call a method needing `access` (ownership is checked by the handler).
pub fn allowed(role: Role, access: Access) -> bool {
    match access {
        Access::Open => true,
        Access::Worker => matches!(role, Role::Worker | Role::Admin),
        Access::Read => matches!(role, Role::Submitter | Role::Reader | Role::Admin),
        Access::Write => matches!(role, Role::Submitter | Role::Admin),
        Access::Admin => role == Role::Admin,
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileEntry {
    name: String,
    role: Role,
    sha256: String,
    tasks_per_second: Option<u32>,
    burst: Option<u32>,
    watch_streams: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    tokens: Vec<FileEntry>,
}

/// The tokens of one reading of the auth file.
#[derive(Debug)]
pub struct Tokens {
    entries: Vec<([u8; 32], Caller)>,
}

fn unhex32(s: &str) -> Option<[u8; 32]> {
    crate::store::unhex(s)?.try_into().ok()
}

/// Equal in time that depends on the length only.
fn same(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Tokens {
    /// Parses an auth file's text; errors name the entry and the field.
    pub fn parse(text: &str) -> Result<Tokens, String> {
        let file: File = toml::from_str(text).map_err(|e| e.to_string())?;
        let mut names = HashSet::new();
        let mut digests = HashSet::new();
        let mut entries = Vec::with_capacity(file.tokens.len());
        for (i, e) in file.tokens.into_iter().enumerate() {
            let at = format!("tokens[{i}]");
            if e.name.trim().is_empty() || e.name.len() > 128 || e.name.chars().any(char::is_control) {
                return Err(format!("{at}.name: must be 1-128 printable characters"));
            }
            let digest = unhex32(&e.sha256.to_ascii_lowercase())
                .ok_or_else(|| format!("{at}.sha256: must be 64 hex digits (the SHA-256 of the token)"))?;
            if !names.insert(e.name.clone()) {
                return Err(format!("{at}.name: {:?} is used twice", e.name));
            }
            if !digests.insert(digest) {
                return Err(format!("{at}.sha256: the same token is listed twice"));
            }
            let rate = e.tasks_per_second.unwrap_or(DEFAULT_TASKS_PER_SECOND);
            if rate == 0 {
                return Err(format!("{at}.tasks_per_second: must be at least 1"));
            }
            let limits = Limits {
                tasks: Mutex::new(Bucket::new(rate, e.burst.unwrap_or(rate.saturating_mul(10)))),
                watch_streams: e.watch_streams.unwrap_or(DEFAULT_WATCH_STREAMS),
                watching: AtomicU32::new(0),
            };
            entries.push((digest, Caller { name: Arc::from(e.name), role: e.role, limits: Some(Arc::new(limits)) }));
        }
        Ok(Tokens { entries })
    }

    /// The caller a token names; every entry is compared, in constant time each.
    pub fn find(&self, token: &str) -> Option<&Caller> {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let mut found = None;
        for (d, caller) in &self.entries {
            if same(d, &digest) {
                found = Some(caller);
            }
        }
        found
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// The auth file and its current tokens (shared by the gRPC and HTTP sides).
#[derive(Clone, Debug)]
pub struct Auth {
    path: Option<PathBuf>,
    tokens: Arc<RwLock<Arc<Tokens>>>,
}

fn read(path: &Path) -> Result<Tokens, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    Tokens::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
}

impl Auth {
    /// No auth file: every call is anonymous (an admin).
    pub fn off() -> Auth {
        Auth { path: None, tokens: Arc::new(RwLock::new(Arc::new(Tokens { entries: Vec::new() }))) }
    }

    /// Reads the auth file (an error names the file and the entry).
    pub fn load(path: &Path) -> Result<Auth, String> {
        let tokens = read(path)?;
        Ok(Auth { path: Some(path.to_path_buf()), tokens: Arc::new(RwLock::new(Arc::new(tokens))) })
    }

    pub fn enabled(&self) -> bool {
        self.path.is_some()
    }

    /// Reads the file again (SIGHUP); on error the tokens stay as they were.
    pub fn reload(&self) -> Result<usize, String> {
        let Some(path) = &self.path else { return Ok(0) };
        let tokens = read(path)?;
        let n = tokens.len();
        *self.tokens.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(tokens);
        Ok(n)
    }

    /// The caller an `authorization` header value names.
    pub fn authenticate(&self, header: Option<&[u8]>) -> Result<Caller, tonic::Status> {
        if !self.enabled() {
            return Ok(Caller::anonymous());
        }
        let Some(value) = header else {
            return Err(tonic::Status::unauthenticated("no token: send `authorization: Bearer <token>`"));
        };
        let token = std::str::from_utf8(value)
            .ok()
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
            .map(str::trim)
            .ok_or_else(|| tonic::Status::unauthenticated("the authorization header must be `Bearer <token>`"))?;
        let tokens = self.tokens.read().unwrap_or_else(|e| e.into_inner()).clone();
        tokens.find(token).cloned().ok_or_else(|| tonic::Status::unauthenticated("unknown token"))
    }
}

/// The tower layer that authenticates every gRPC call and checks its role (see the module).
#[derive(Clone, Debug)]
pub struct AuthLayer(pub Auth);

impl<S> tower::Layer<S> for AuthLayer {
    type Service = AuthService<S>;
    fn layer(&self, inner: S) -> AuthService<S> {
        AuthService { inner, auth: self.0.clone() }
    }
}

#[derive(Clone, Debug)]
pub struct AuthService<S> {
    inner: S,
    auth: Auth,
}

/// The boxed future of the tower layers in front of the services (here and `serving`).
pub(crate) type BoxFuture<T> = Pin<Box<dyn std::future::Future<Output = T> + Send>>;

impl<S, B> tower::Service<http::Request<B>> for AuthService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        if !self.auth.enabled() {
            // No auth file: every caller is the anonymous admin (see `caller`).
            return Box::pin(self.inner.call(req));
        }
        let path = req.uri().path().to_string();
        let need = access(&path);
        let checked = match need {
            Some(Access::Open) | None => Ok(None),
            Some(need) => {
                let header = req.headers().get(http::header::AUTHORIZATION).map(|v| v.as_bytes());
                self.auth.authenticate(header).and_then(|caller| {
                    if allowed(caller.role, need) {
                        Ok(Some(caller))
                    } else {
                        tracing::info!(caller = %caller.name, role = caller.role.name(), %path, "permission denied");
                        Err(tonic::Status::permission_denied(format!(
                            "token {:?} has role {}, which may not call {path}",
                            &*caller.name,
                            caller.role.name()
                        )))
                    }
                })
            }
        };
        match checked {
            Ok(caller) => {
                if let Some(c) = caller {
                    req.extensions_mut().insert(c);
                }
                Box::pin(self.inner.call(req))
            }
            Err(status) => {
                if status.code() == tonic::Code::Unauthenticated {
                    tracing::info!(%path, reason = status.message(), "unauthenticated call refused");
                }
                Box::pin(std::future::ready(Ok(status.into_http())))
            }
        }
    }
}

/// The caller of a request (anonymous when no auth layer ran, as in tests of handlers).
pub fn caller<T>(req: &tonic::Request<T>) -> Caller {
    req.extensions().get::<Caller>().cloned().unwrap_or_else(Caller::anonymous)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sha(t: &str) -> String {
        Sha256::digest(t.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn the_file_is_checked_and_tokens_found_by_digest() {
        let text = format!(
            "[[tokens]]\nname = \"ci\"\nrole = \"submitter\"\nsha256 = \"{}\"\n\n\
             [[tokens]]\nname = \"farm\"\nrole = \"worker\"\nsha256 = \"{}\"\n",
            sha("s3cret"),
            sha("w0rker").to_uppercase()
        );
        let t = Tokens::parse(&text).unwrap();
        assert_eq!(t.find("s3cret").map(|c| (&*c.name, c.role)), Some(("ci", Role::Submitter)));
        assert_eq!(t.find("w0rker").map(|c| c.role), Some(Role::Worker));
        assert!(t.find("nope").is_none() && t.find("").is_none());
        let bad = |s: &str| Tokens::parse(s).unwrap_err();
        assert!(bad("[[tokens]]\nname = \"a\"\nrole = \"root\"\nsha256 = \"00\"\n").contains("role"));
        let short = bad("[[tokens]]\nname = \"a\"\nrole = \"admin\"\nsha256 = \"abc\"\n");
        assert!(short.contains("tokens[0].sha256"), "{short}");
        let extra =
            bad(&format!("[[tokens]]\nname = \"a\"\nrole = \"admin\"\nsha256 = \"{}\"\ntoken = \"x\"\n", sha("x")));
        assert!(extra.contains("token"), "{extra}");
        let twice = format!(
            "[[tokens]]\nname = \"a\"\nrole = \"admin\"\nsha256 = \"{0}\"\n[[tokens]]\nname = \"b\"\nrole = \"admin\"\nsha256 = \"{0}\"\n",
            sha("x")
        );
        assert!(bad(&twice).contains("listed twice"));
    }

    #[test]
    fn every_method_has_a_row_and_roles_follow_the_table() {
        use Access::*;
        let table = [
            ("/orca.v1.WorkerGateway/Register", Worker),
            ("/orca.v1.WorkerGateway/Report", Worker),
            ("/orca.v1.Orchestrator/GetJob", Read),
            ("/orca.v1.Orchestrator/WatchJob", Read),
            ("/orca.v1.Orchestrator/CreateJob", Write),
            ("/orca.v1.Orchestrator/DeleteJob", Write),
            ("/grpc.health.v1.Health/Check", Open),
        ];
        for (path, want) in table {
            assert_eq!(access(path), Some(want), "{path}");
        }
        assert_eq!(access("/made.up/Thing"), None);
        for role in [Role::Worker, Role::Submitter, Role::Reader, Role::Admin] {
            assert!(allowed(role, Open));
            assert_eq!(allowed(role, Worker), matches!(role, Role::Worker | Role::Admin), "{role:?}");
            assert_eq!(allowed(role, Read), role != Role::Worker, "{role:?}");
            assert_eq!(allowed(role, Write), matches!(role, Role::Submitter | Role::Admin), "{role:?}");
        }
        let me = Caller { name: Arc::from("ci"), role: Role::Submitter, limits: None };
        assert!(me.owns(Some("ci")) && !me.owns(Some("other")) && !me.owns(None));
        assert!(Caller::anonymous().owns(None));
    }

    #[test]
    fn headers_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("auth.toml");
        std::fs::write(&path, format!("[[tokens]]\nname = \"r\"\nrole = \"reader\"\nsha256 = \"{}\"\n", sha("t1")))
            .unwrap();
        let auth = Auth::load(&path).unwrap();
        assert_eq!(auth.authenticate(Some(b"Bearer t1")).unwrap().role, Role::Reader);
        for bad in [None, Some(&b"t1"[..]), Some(b"Bearer t2"), Some(b"Basic dDE=")] {
            assert_eq!(auth.authenticate(bad).unwrap_err().code(), tonic::Code::Unauthenticated, "{bad:?}");
        }
        // Revoked by a reload; a broken file on reload keeps the tokens as they were.
        std::fs::write(&path, format!("[[tokens]]\nname = \"r\"\nrole = \"reader\"\nsha256 = \"{}\"\n", sha("t2")))
            .unwrap();
        assert_eq!(auth.reload(), Ok(1));
        assert!(auth.authenticate(Some(b"Bearer t1")).is_err());
        std::fs::write(&path, "not toml [").unwrap();
        assert!(auth.reload().is_err());
        assert!(auth.authenticate(Some(b"Bearer t2")).is_ok());
        assert_eq!(Auth::off().authenticate(None).unwrap(), Caller::anonymous());
    }
}

#[cfg(test)]
mod limit_tests {
    use super::*;

    #[test]
    fn the_bucket_refills_at_its_rate_up_to_its_burst() {
        let t0 = Instant::now();
        let mut b = Bucket::new(100, 200);
        assert!(b.take(200, t0).is_ok(), "a full bucket at first");
        let wait = b.take(50, t0).unwrap_err();
        assert_eq!(wait, Duration::from_millis(500));
        assert!(b.take(50, t0 + Duration::from_millis(500)).is_ok());
        assert!(b.take(1, t0 + Duration::from_millis(500)).is_err());
        // Idle for long: back to the burst, never above.
        assert!(b.take(200, t0 + Duration::from_secs(60)).is_ok());
        assert!(b.take(1, t0 + Duration::from_secs(60)).is_err());
        // More than the burst passes with a full bucket and leaves a debt.
        let mut big = Bucket::new(10, 5);
        assert!(big.take(8, t0).is_ok());
        assert_eq!(big.take(1, t0).unwrap_err(), Duration::from_millis(400));
    }

    #[test]
    fn streams_are_capped_and_given_back() {
        let l =
            Arc::new(Limits { tasks: Mutex::new(Bucket::new(1, 1)), watch_streams: 2, watching: AtomicU32::new(0) });
        let a = l.open_watch("t").unwrap();
        let _b = l.open_watch("t").unwrap();
        let refused = l.open_watch("t").unwrap_err();
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        assert!(refused.message().contains("watch_streams = 2"), "{}", refused.message());
        drop(a);
        assert!(l.open_watch("t").is_ok());
        let over = l.add_tasks("t", 1).and_then(|_| l.add_tasks("t", 1)).unwrap_err();
        assert!(over.message().contains("tasks_per_second = 1"), "{}", over.message());
    }
}
