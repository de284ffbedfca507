"""Tokens (``--auth-file``) and TLS (``--tls-cert``/``--tls-key``, ``--tls-client-ca``) with the
client's settings from arguments and ``ORCA_*`` variables."""

from __future__ import annotations

import hashlib
import subprocess
import time
from pathlib import Path
from typing import Dict

import pytest

import orca
from orchestrator import ClaudeOrchestrator

from conftest import Cluster, until

TOKENS = {
    "submitter": "py-submitter-token-1",
    "reader": "py-reader-token-2",
    "worker": "py-worker-token-3",
    "admin": "py-admin-token-4",
}


def auth_file(path: Path) -> Path:
    entries = []
    for role, token in TOKENS.items():
        digest = hashlib.sha256(token.encode()).hexdigest()
        entries.append(f'[[tokens]]\nname = "py-{role}"\nrole = "{role}"\nsha256 = "{digest}"\n')
    path.write_text("\n".join(entries))
    return path


@pytest.fixture
def secured(make_cluster, tmp_path: Path) -> Cluster:  # type: ignore[no-untyped-def]
    c = make_cluster("auth", coordinator_args=["--auth-file", str(auth_file(tmp_path / "auth.toml"))]).start()
    c.add_worker(env={"ORCA_TOKEN": TOKENS["worker"]})
    return c


def test_tokens_from_arguments_and_variables(secured: Cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with orca.Client(secured.url) as anonymous:
        with pytest.raises(orca.Unauthenticated):
            anonymous.get_job("x")
        started = time.monotonic()
        with pytest.raises(orca.Unauthenticated):
            list(anonymous.watch_job("x"))
        assert time.monotonic() - started < 5, "not retried"
    with orca.Client(secured.url, token="not-a-known-token") as stranger:
        with pytest.raises(orca.Unauthenticated):
            stranger.create_job("x")

    monkeypatch.setenv("ORCA_TOKEN", TOKENS["submitter"])
    with orca.Client(secured.url) as c:
        job = c.create_job("with ORCA_TOKEN")
        assert job.owner == "py-submitter"
        c.add_tasks(job.job_id, ["run by a worker holding a worker token"])
        assert c.wait(job.job_id, timeout=60).completed == 1

    token_file = tmp_path / "token"
    token_file.write_text(f"\n  {TOKENS['submitter']}  \n")
    monkeypatch.setenv("ORCA_TOKEN", "wrong-token")
    monkeypatch.setenv("ORCA_TOKEN_FILE", str(token_file))
    with orca.Client(secured.url) as c:
        assert c.get_job(job.job_id).job_id == job.job_id, "ORCA_TOKEN_FILE wins over ORCA_TOKEN"
    with orca.Client(secured.url, token=TOKENS["reader"]) as reader:
        assert reader.get_job(job.job_id).job_id == job.job_id, "the argument wins over both"
        with pytest.raises(orca.PermissionDenied):
            reader.create_job("readers do not submit")

    token_file.write_text("")
    with pytest.raises(orca.ConfigError, match="ORCA_TOKEN_FILE .* the file is empty"):
        orca.Client(secured.url)
    monkeypatch.delenv("ORCA_TOKEN_FILE")
    monkeypatch.delenv("ORCA_TOKEN")


def test_the_guide_api_takes_a_token_file(secured: Cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKENS["submitter"])
    monkeypatch.chdir(tmp_path)
    with ClaudeOrchestrator("secure", coordinator=secured.url, token_file=str(token_file), show_progress=False) as orch:
        job = orch.create_job("authenticated")
        orch.add_subtask(job, "hello")
        assert [r["status"] for r in orch.wait_and_collect(job).values()] == ["completed"]


def test_fleet_calls_by_role(secured: Cluster) -> None:
    with orca.Client(secured.url, token=TOKENS["admin"]) as admin, orca.Client(
        secured.url, token=TOKENS["submitter"]
    ) as submitter, orca.Client(secured.url, token=TOKENS["reader"]) as reader:
        (worker,) = until("the worker to connect", lambda: [w for w in reader.list_workers() if w.connected])
        assert submitter.get_stats().workers_connected == 1
        stream = reader.watch_fleet()
        assert next(stream).kind == orca.FleetEventKind.Value("FLEET_EVENT_KIND_SNAPSHOT")
        stream.close()
        for c in (submitter, reader):
            with pytest.raises(orca.PermissionDenied):
                c.drain_worker(worker.worker_id)
        assert admin.drain_worker(worker.worker_id).draining
        assert not admin.drain_worker(worker.worker_id, resume=True).draining

        # Without a job: a submitter lists its own jobs' tasks, a reader or admin every job's.
        mine = submitter.create_job("mine").job_id
        (my_task,) = submitter.add_tasks(mine, ["mine"])
        theirs = admin.create_job("theirs").job_id
        (their_task,) = admin.add_tasks(theirs, ["theirs"])
        seen = {t.task_id for t in submitter.list_tasks()}
        assert my_task in seen and their_task not in seen
        assert {my_task, their_task} <= {t.task_id for t in reader.list_tasks(None)}
        assert {my_task, their_task} <= {t.task_id for t in admin.list_tasks("")}
        with pytest.raises(orca.PermissionDenied):
            list(submitter.list_tasks(theirs))


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_certs(d: Path) -> Dict[str, Path]:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, signed by the CA."""
    d.mkdir()
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    openssl("req", "-x509", *ec, "-days", "30", "-keyout", "ca.key", "-out", "ca.pem", "-subj", "/CN=orca-py-test-ca", cwd=d)
    for name, san in (("server", "IP:127.0.0.1"), ("client", "DNS:py-client")):
        openssl("req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}",
                "-addext", f"subjectAltName={san}", cwd=d)
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                "-days", "30", "-copy_extensions", "copy", "-out", f"{name}.pem", cwd=d)
    openssl("req", "-x509", *ec, "-days", "30", "-keyout", "other.key", "-out", "other-ca.pem", "-subj", "/CN=other", cwd=d)
    return {n: d / f for n, f in [("ca", "ca.pem"), ("cert", "server.pem"), ("key", "server.key"),
                                  ("client_cert", "client.pem"), ("client_key", "client.key"), ("other_ca", "other-ca.pem")]}


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, Path]:
    return make_certs(tmp_path_factory.mktemp("tls") / "certs")


def test_tls_verified_against_orca_tls_ca(make_cluster, certs: Dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    c = make_cluster("tls", tls={"ca": certs["ca"], "cert": certs["cert"], "key": certs["key"]}).start()
    c.add_worker()
    assert c.url.startswith("https://127.0.0.1:")
    monkeypatch.setenv("ORCA_TLS_CA", str(certs["ca"]))
    with orca.Client(c.url) as client:
        job = client.create_job("over TLS").job_id
        client.add_tasks(job, ["encrypted"])
        assert client.wait(job, timeout=60).completed == 1

    with pytest.raises(orca.ConfigError, match=r"TLS files are set \(ORCA_TLS_CA\) but http://"):
        orca.Client(c.url.replace("https://", "http://"))
    monkeypatch.delenv("ORCA_TLS_CA")
    with orca.Client(c.url.replace("https://", "http://")) as plain:
        with pytest.raises(orca.Unavailable):
            plain.get_job(job)
    with orca.Client(c.url) as system_roots:
        with pytest.raises(orca.Unavailable):
            system_roots.get_job(job)
    with orca.Client(c.url, tls_ca=certs["other_ca"]) as wrong_ca:
        with pytest.raises(orca.Unavailable):
            wrong_ca.get_job(job)


def test_mutual_tls_needs_the_client_certificate(make_cluster, certs: Dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    tls = {"ca": certs["ca"], "cert": certs["cert"], "key": certs["key"], "client_ca": certs["ca"],
           "client_cert": certs["client_cert"], "client_key": certs["client_key"]}
    c = make_cluster("mtls", tls=tls).start()
    c.add_worker()
    monkeypatch.setenv("ORCA_TLS_CA", str(certs["ca"]))
    monkeypatch.setenv("ORCA_TLS_CERT", str(certs["client_cert"]))
    monkeypatch.setenv("ORCA_TLS_KEY", str(certs["client_key"]))
    with orca.Client(c.url) as client:
        job = client.create_job("mutual TLS").job_id
        client.add_tasks(job, ["both sides known"])
        assert client.wait(job, timeout=60).completed == 1
    monkeypatch.delenv("ORCA_TLS_CERT")
    monkeypatch.delenv("ORCA_TLS_KEY")
    with orca.Client(c.url) as anonymous:
        with pytest.raises((orca.Unavailable, orca.Unknown)):
            anonymous.get_job(job)
