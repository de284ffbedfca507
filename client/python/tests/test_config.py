"""Settings resolution (no server): coordinator URL, token, TLS files; arguments over
variables over defaults; clear errors naming the argument or variable."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import orca
from orca._config import Endpoint, Settings, resolve


def test_defaults_to_the_local_coordinator_in_plaintext() -> None:
    s = resolve(environ={})
    assert (s.url, s.target, s.tls, s.token) == ("http://127.0.0.1:50051", "127.0.0.1:50051", False, None)
    assert s.metadata() == ()
    options = dict(s.channel_options())
    assert options["grpc.max_send_message_length"] == 64 << 20
    assert options["grpc.max_receive_message_length"] == 64 << 20


def test_the_argument_wins_over_orca_coordinator() -> None:
    env = {"ORCA_COORDINATOR": "http://10.0.0.1:7000"}
    assert resolve(environ=env).target == "10.0.0.1:7000"
    assert resolve("http://localhost:9", environ=env).target == "localhost:9"


def test_a_list_of_coordinators_keeps_every_url_in_order() -> None:
    s = resolve(environ={"ORCA_COORDINATOR": " http://a.example:1 , https://b.example ,http://[::1]:3/"})
    assert (s.url, s.target, s.tls) == ("http://a.example:1", "a.example:1", False), "url/target/tls: the first"
    assert s.urls == ("http://a.example:1", "https://b.example", "http://[::1]:3/")
    assert s.targets == ("a.example:1", "b.example:443", "[::1]:3")
    assert [e.tls for e in s.endpoints] == [False, True, False], "each URL's own scheme"
    one = resolve("http://h:1", environ={})
    assert one.endpoints == (Endpoint("http://h:1", "h:1", False),) and one.urls == ("http://h:1",)
    assert Settings(url="http://h:2", target="h:2", tls=False).targets == ("h:2",), "built by hand: the URL alone"


@pytest.mark.parametrize(
    "value,fragment",
    [
        ("http://a:1,,http://b:2", "element 2 of 'http://a:1,,http://b:2' is empty"),
        ("http://a:1, ", "element 2 of 'http://a:1,' is empty"),
        (",http://a:1", "element 1 of ',http://a:1' is empty"),
        ("http://a:1,b:2", "'b:2' is not an http:// or https:// URL"),
        ("http://a:1, http://b:99999", "'http://b:99999' has an invalid port"),
        ("http://a:1,http://:5", "'http://:5' has no host"),
        ("http://a:1,http://b:2/x", "'http://b:2/x' must be scheme://host:port"),
    ],
)
def test_every_url_of_a_list_is_checked(value: str, fragment: str) -> None:
    with pytest.raises(orca.ConfigError, match="^coordinator: " + re.escape(fragment)):
        resolve(value, environ={})
    with pytest.raises(orca.ConfigError, match="^ORCA_COORDINATOR: " + re.escape(fragment)):
        resolve(environ={"ORCA_COORDINATOR": value})


def test_tls_files_need_every_url_of_a_list_to_be_https(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_bytes(b"PEM ca")
    s = resolve("https://a:1,https://b:2", tls_ca=ca, environ={})
    assert s.root_certificates == b"PEM ca" and [e.tls for e in s.endpoints] == [True, True]
    with pytest.raises(orca.ConfigError, match=r"TLS files are set \(tls_ca\) but http://b:2 is not https://"):
        resolve("https://a:1,http://b:2", tls_ca=ca, environ={})
    mixed = resolve("http://a:1,https://b:2", environ={})
    assert not mixed.tls and [e.tls for e in mixed.endpoints] == [False, True]


def test_url_forms() -> None:
    assert resolve("https://orca.internal", environ={}).target == "orca.internal:443"
    assert resolve("http://orca.internal", environ={}).target == "orca.internal:80"
    assert resolve("http://[::1]:5/", environ={}).target == "[::1]:5"
    assert resolve("HTTPS://h:1", environ={}).tls


@pytest.mark.parametrize(
    "url,fragment",
    [
        ("127.0.0.1:50051", "is not an http:// or https:// URL"),
        ("grpc://h:1", "is not an http:// or https:// URL"),
        ("http://h:99999", "invalid port"),
        ("http://:5", "has no host"),
        ("http://h:5/api", "no path"),
        (" , ", "empty coordinator URL"),
    ],
)
def test_bad_urls_are_config_errors_naming_the_source(url: str, fragment: str) -> None:
    with pytest.raises(orca.ConfigError, match=fragment) as e:
        resolve(url, environ={})
    assert str(e.value).startswith("coordinator:")
    assert isinstance(e.value, ValueError)
    with pytest.raises(orca.ConfigError, match="^ORCA_COORDINATOR:"):
        resolve(environ={"ORCA_COORDINATOR": url if url.strip(" ,") else "ftp://x"})


def test_token_file_wins_over_orca_token_and_arguments_win_over_both(tmp_path: Path) -> None:
    f = tmp_path / "token"
    f.write_text("  from-file\n")
    env = {"ORCA_TOKEN_FILE": str(f), "ORCA_TOKEN": "from-env"}
    assert resolve(environ=env).token == "from-file"
    assert resolve(environ={"ORCA_TOKEN": " from-env "}).token == "from-env"
    assert resolve(token="arg", environ=env).token == "arg"
    g = tmp_path / "other"
    g.write_text("other-file")
    assert resolve(token_file=g, environ=env).token == "other-file"
    assert resolve(token="t", environ={}).metadata() == (("authorization", "Bearer t"),)
    with pytest.raises(orca.ConfigError, match="not both"):
        resolve(token="a", token_file=g, environ={})


def test_unusable_tokens_are_clear_errors(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.write_text(" \n")
    with pytest.raises(orca.ConfigError, match=r"^ORCA_TOKEN_FILE .*empty: the file is empty"):
        resolve(environ={"ORCA_TOKEN_FILE": str(empty)})
    with pytest.raises(orca.ConfigError, match=r"^ORCA_TOKEN_FILE .*missing: cannot read"):
        resolve(environ={"ORCA_TOKEN_FILE": str(tmp_path / "missing")})
    with pytest.raises(orca.ConfigError, match=r"^token_file .*: cannot read"):
        resolve(token_file=tmp_path, environ={})
    with pytest.raises(orca.ConfigError, match="printable ASCII"):
        resolve(token="two words", environ={})
    with pytest.raises(orca.ConfigError, match="^token: the token is empty"):
        resolve(token=" ", environ={})


def test_tls_files_are_read_and_need_https(tmp_path: Path) -> None:
    ca, cert, key = (tmp_path / n for n in ("ca.pem", "c.pem", "c.key"))
    for p in (ca, cert, key):
        p.write_bytes(b"PEM " + p.name.encode())
    s = resolve("https://h:1", environ={"ORCA_TLS_CA": str(ca), "ORCA_TLS_CERT": str(cert), "ORCA_TLS_KEY": str(key)})
    assert (s.root_certificates, s.certificate_chain, s.private_key) == (b"PEM ca.pem", b"PEM c.pem", b"PEM c.key")
    assert resolve("https://h:1", tls_ca=cert, environ={"ORCA_TLS_CA": str(ca)}).root_certificates == b"PEM c.pem"
    assert resolve("https://h:1", environ={}).root_certificates is None, "the system's roots"
    with pytest.raises(orca.ConfigError, match=r"TLS files are set \(ORCA_TLS_CA\) but http://h:1 is not https://"):
        resolve("http://h:1", environ={"ORCA_TLS_CA": str(ca)})
    with pytest.raises(orca.ConfigError, match="tls_cert and ORCA_TLS_KEY go together"):
        resolve("https://h:1", tls_cert=cert, environ={})
    with pytest.raises(orca.ConfigError, match=r"^ORCA_TLS_CA .*nope\.pem: cannot read"):
        resolve("https://h:1", environ={"ORCA_TLS_CA": str(tmp_path / "nope.pem")})


def test_the_client_takes_the_same_arguments_and_fails_before_connecting(tmp_path: Path) -> None:
    with pytest.raises(orca.ConfigError):
        orca.Client("localhost:1")
    with pytest.raises(orca.ConfigError):
        orca.AsyncClient("http://h:1", tls_ca=tmp_path / "ca.pem")
    with orca.Client("http://127.0.0.1:1", token="t") as c:
        assert c.coordinator == "http://127.0.0.1:1"
        assert c.settings.token == "t"
    with pytest.raises(orca.ConfigError, match="^coordinator: element 2 "):
        orca.Client("http://127.0.0.1:1,")
    with orca.Client("http://127.0.0.1:1,http://127.0.0.1:2") as c:
        assert c.coordinator == "http://127.0.0.1:1", "the first until a call picks the leader"
        assert c.settings.urls == ("http://127.0.0.1:1", "http://127.0.0.1:2")


def test_task_spec_builds_every_field() -> None:
    spec = orca.task_spec(
        "p",
        priority=-3,
        parent_task_id=-1,
        depends_on=[1, 2],
        context_files=[("a.txt", "text"), {"path": "b.bin", "contents": b"\x00"}, orca.ContextFile(path="c", contents=b"c")],
        expected_outputs=["out/x"],
        working_dir="/w",
        metadata={"k": [1, "two", None]},
        max_retries=2,
        retry_policy={"initial_backoff_ms": 10, "multiplier": 1.5, "max_backoff_ms": 100},
        timeout_seconds=9,
        required_labels={"gpu": "a100"},
        verification=[{"command": "true", "description": "d", "timeout": 5, "fail_on_error": True}],
        auto_verify=True,
        agent={"model": "m", "max_turns": 3},
        name="n",
    )
    assert spec.priority == -3 and spec.parent_task_id == -1 and list(spec.depends_on) == [1, 2]
    assert [(f.path, f.contents) for f in spec.context_files] == [("a.txt", b"text"), ("b.bin", b"\x00"), ("c", b"c")]
    assert spec.retry_policy.multiplier == 1.5 and spec.verification[0].timeout_seconds == 5
    assert spec.agent.max_turns == 3 and dict(spec.required_labels) == {"gpu": "a100"}
    assert orca.from_struct(spec.metadata) == {"k": [1.0, "two", None]}
    bare = orca.task_spec("p")
    assert not bare.HasField("priority") and not bare.HasField("max_retries") and not bare.HasField("parent_task_id")


@pytest.mark.parametrize(
    "kwargs,error,fragment",
    [
        ({"priority": True}, TypeError, "^priority: expected an int"),
        ({"depends_on": "12"}, TypeError, "^depends_on: expected a list"),
        ({"depends_on": [1.5]}, TypeError, r"^depends_on\[0\]"),
        ({"context_files": ["a.txt"]}, TypeError, r"^context_files\[0\]: expected"),
        ({"context_files": [("a", 5)]}, TypeError, r"^context_files\[0\]\.contents"),
        ({"expected_outputs": "out"}, TypeError, "^expected_outputs: expected a list"),
        ({"metadata": {"k": object()}}, ValueError, "^metadata: not a JSON object"),
        ({"max_retries": -1}, ValueError, "^max_retries: must not be negative"),
        ({"verification": [{"cmd": "x"}]}, ValueError, r"^verification\[0\]: unknown key 'cmd'"),
        ({"agent": {"model": 5}}, ValueError, "^agent:"),
        ({"required_labels": {"a": 1}}, TypeError, "^required_labels"),
    ],
)
def test_task_spec_refuses_bad_arguments_by_name(kwargs: dict, error: type, fragment: str) -> None:
    with pytest.raises(error, match=fragment):
        orca.task_spec("p", **kwargs)


def test_state_names() -> None:
    assert orca.state_name(orca.TASK_STATES["in_progress"]) == "in_progress"
    assert orca.job_state_name(orca.JOB_STATES["failed"]) == "failed"
    assert orca.is_final(orca.TASK_STATES["cancelled"]) and not orca.is_final(orca.TASK_STATES["waiting"])
