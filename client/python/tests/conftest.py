"""Fixtures: real Orca processes on 127.0.0.1:0.

`Cluster` starts ``orca-coordinator`` (binaries from ``ORCA_BIN_DIR``, default
``<repo>/target/debug``) with its own database and address file, waits until it answers a
call (bounded, no fixed sleeps), and starts ``orca-worker`` processes running the test agent
(``tests/agent.py``) with ``--agent command``. Every process's stderr goes to a log file in
the test's temporary directory; when a test fails, the tail of every live cluster's logs is
attached to its report. Every process is stopped at teardown (SIGTERM, then SIGKILL).
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import pytest

import orca

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
BIN_DIR = Path(os.environ.get("ORCA_BIN_DIR") or REPO / "target" / "debug").resolve()
AGENT = HERE / "agent.py"
AGENT_COMMAND = f"{shlex.quote(sys.executable)} {shlex.quote(str(AGENT))}"
GUIDE = HERE / "guide"

#: How long a process may take to come up on a loaded 2-core machine.
READY_SECONDS = 60.0

# The tests set every ORCA_* variable they want themselves.
for _k in [k for k in os.environ if k.startswith("ORCA_")]:
    del os.environ[_k]

_LIVE: List["Cluster"] = []


def pytest_report_header(config: pytest.Config) -> List[str]:
    return [f"orca binaries: {BIN_DIR}", f"orca package: {Path(orca.__file__).parent}"]


def _binary(name: str) -> str:
    path = BIN_DIR / name
    if not os.access(path, os.X_OK):
        pytest.exit(f"{path} is missing: build it (cargo build -p orca-coordinator -p orca-worker) or set ORCA_BIN_DIR", 2)
    return str(path)


def until(what: str, check, timeout: float = READY_SECONDS, interval: float = 0.02):  # type: ignore[no-untyped-def]
    """Polls ``check`` until it returns something truthy; fails the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)
        interval = min(interval * 1.5, 0.25)


class Proc:
    """One child process with its log file."""

    def __init__(self, name: str, args: Sequence[str], log: Path, env: Dict[str, str], cwd: Optional[Path] = None):
        self.name = name
        self.args = list(args)
        self.log = log
        with open(log, "ab") as f:
            f.write(f"$ {' '.join(shlex.quote(a) for a in args)}\n".encode())
            self.popen = subprocess.Popen(
                args, stdin=subprocess.DEVNULL, stdout=f, stderr=f, env=env, cwd=cwd, start_new_session=True
            )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> Optional[int]:
        """Sends ``sig`` and waits; SIGKILL when it does not exit in time. Returns the exit code."""
        if self.alive():
            try:
                self.popen.send_signal(sig)
            except ProcessLookupError:
                pass
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            return self.popen.wait(10)

    def tail(self, lines: int = 60) -> str:
        try:
            text = self.log.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(text[-lines:])


def base_env() -> Dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORCA_")}
    env.setdefault("ORCA_LOG", "info")
    return env


class Cluster:
    """A coordinator and its workers in one directory."""

    def __init__(
        self,
        root: Path,
        *,
        coordinator_args: Sequence[str] = (),
        tls: Optional[Dict[str, Path]] = None,
        probe_token: Optional[str] = None,
    ) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.db = root / "orca.db"
        self.addr_file = root / "addr"
        self.coordinator_args = list(coordinator_args)
        self.tls = tls
        self.probe_token = probe_token
        self.coordinator: Optional[Proc] = None
        self.workers: List[Proc] = []
        self.addr = ""
        self.listen = "127.0.0.1:0"
        self.starts = 0
        _LIVE.append(self)

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.addr}"

    def client_kwargs(self) -> Dict[str, object]:
        kw: Dict[str, object] = {}
        if self.tls:
            kw["tls_ca"] = str(self.tls["ca"])
            if "client_cert" in self.tls:
                kw["tls_cert"] = str(self.tls["client_cert"])
                kw["tls_key"] = str(self.tls["client_key"])
        return kw

    def client(self, **kw: object) -> orca.Client:
        args = self.client_kwargs()
        args.update(kw)
        return orca.Client(self.url, **args)  # type: ignore[arg-type]

    def env(self) -> Dict[str, str]:
        """The environment a guide script needs to reach this coordinator."""
        env = base_env()
        env["ORCA_COORDINATOR"] = self.url
        for key, var in (("ca", "ORCA_TLS_CA"), ("client_cert", "ORCA_TLS_CERT"), ("client_key", "ORCA_TLS_KEY")):
            if self.tls and key in self.tls:
                env[var] = str(self.tls[key])
        return env

    def start(self) -> "Cluster":
        """Starts (or restarts, on the same address and database) the coordinator and waits
        until it answers."""
        assert self.coordinator is None or not self.coordinator.alive(), "the coordinator is running"
        if self.addr_file.exists():
            self.addr_file.unlink()
        args = [_binary("orca-coordinator"), "--listen", self.listen, "--db", str(self.db), "--addr-file", str(self.addr_file)]
        if self.tls:
            args += ["--tls-cert", str(self.tls["cert"]), "--tls-key", str(self.tls["key"])]
            if "client_ca" in self.tls:
                args += ["--tls-client-ca", str(self.tls["client_ca"])]
        args += self.coordinator_args
        self.starts += 1
        proc = Proc("coordinator", args, self.root / "coordinator.log", base_env(), cwd=self.root)
        self.coordinator = proc

        def bound() -> str:
            if not proc.alive():
                pytest.fail(f"orca-coordinator exited with {proc.popen.returncode}:\n{proc.tail()}")
            text = self.addr_file.read_text().strip() if self.addr_file.exists() else ""
            return text if ":" in text else ""

        self.addr = until("the coordinator's address file", bound)
        self.listen = self.addr
        probe = self.client(token=self.probe_token) if self.probe_token else self.client()

        def answers() -> bool:
            try:
                probe.get_job("readiness-probe")
            except orca.Unavailable:
                return False
            except orca.OrcaError:
                # NOT_FOUND, or UNAUTHENTICATED without a token: it serves.
                return True
            return True

        try:
            until("the coordinator to answer GetJob", answers)
        finally:
            probe.close()
        return self

    def add_worker(
        self,
        name: Optional[str] = None,
        *,
        slots: int = 2,
        args: Sequence[str] = (),
        env: Optional[Dict[str, str]] = None,
    ) -> Proc:
        name = name or f"w-{len(self.workers) + 1}"
        cmd = [
            _binary("orca-worker"),
            "--coordinator",
            self.url,
            "--name",
            name,
            "--slots",
            str(slots),
            "--agent",
            "command",
            "--agent-command",
            AGENT_COMMAND,
            "--work-dir",
            str(self.root / name),
            "--min-free-disk-mb",
            "0",
            "--grace-seconds",
            "1",
        ]
        if self.tls:
            cmd += ["--tls-ca", str(self.tls["ca"])]
            if "client_cert" in self.tls:
                cmd += ["--tls-cert", str(self.tls["client_cert"]), "--tls-key", str(self.tls["client_key"])]
        cmd += list(args)
        full_env = base_env()
        full_env.update(env or {})
        proc = Proc(name, cmd, self.root / f"{name}.log", full_env, cwd=self.root)
        self.workers.append(proc)
        return proc

    def stop_coordinator(self, sig: int = signal.SIGTERM) -> Optional[int]:
        assert self.coordinator is not None
        return self.coordinator.stop(sig)

    def logs(self) -> str:
        parts = []
        for p in ([self.coordinator] if self.coordinator else []) + self.workers:
            parts.append(f"--- {self.root.name}/{p.name} (pid {p.pid}, {'running' if p.alive() else f'exit {p.popen.returncode}'}) ---\n{p.tail()}")
        return "\n".join(parts)

    def close(self) -> None:
        for w in self.workers:
            if w.alive():
                try:
                    w.popen.send_signal(signal.SIGTERM)
                except ProcessLookupError:
                    pass
        for w in self.workers:
            w.stop()
        if self.coordinator is not None:
            self.coordinator.stop()
        if self in _LIVE:
            _LIVE.remove(self)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):  # type: ignore[no-untyped-def]
    outcome = yield
    report = outcome.get_result()
    if report.failed and _LIVE:
        report.sections.append(("orca process logs (tails)", "\n".join(c.logs() for c in _LIVE)))


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """The shared cluster: a coordinator and two workers of two slots each."""
    c = Cluster(tmp_path_factory.mktemp("cluster"))
    try:
        c.start()
        c.add_worker()
        c.add_worker()
        yield c
    finally:
        c.close()


@pytest.fixture(scope="session")
def client(cluster: Cluster):  # type: ignore[no-untyped-def]
    with cluster.client() as c:
        yield c


@pytest.fixture
def make_cluster(tmp_path: Path):  # type: ignore[no-untyped-def]
    """Makes clusters of the test's own (``make_cluster(name, **Cluster kwargs)``), closed at
    teardown."""
    made: List[Cluster] = []

    def make(name: str = "own", **kwargs: object) -> Cluster:
        c = Cluster(tmp_path / name, **kwargs)  # type: ignore[arg-type]
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """An empty project directory, the working_dir of a guide script."""
    p = tmp_path / "project"
    p.mkdir()
    return p


@pytest.fixture
def run_guide(cluster: Cluster):  # type: ignore[no-untyped-def]
    """Runs ``tests/guide/<name>`` as a subprocess in ``cwd`` with ORCA_COORDINATOR set; returns
    the CompletedProcess after checking it exited 0."""

    def run(name: str, cwd: Path, timeout: float = 90.0, env: Optional[Dict[str, str]] = None) -> subprocess.CompletedProcess:
        full_env = cluster.env()
        full_env.update(env or {})
        proc = subprocess.run(
            [sys.executable, str(GUIDE / name)],
            cwd=cwd,
            env=full_env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        assert proc.returncode == 0, f"{name} exited {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
        return proc

    return run
