"""Connection settings, read like the Rust CLI reads them: an argument wins over its
environment variable, which wins over the default.

| argument | variable | default |
| --- | --- | --- |
| ``coordinator`` | ``ORCA_COORDINATOR`` | ``http://127.0.0.1:50051`` (or a comma-separated list) |
| ``token_file`` / ``token`` | ``ORCA_TOKEN_FILE`` (wins) / ``ORCA_TOKEN`` | none |
| ``tls_ca`` | ``ORCA_TLS_CA`` | the system's roots |
| ``tls_cert``, ``tls_key`` | ``ORCA_TLS_CERT``, ``ORCA_TLS_KEY`` | none (mutual TLS when set) |

Everything is checked here, before a channel exists, and a bad value is a `ConfigError`
naming the argument or variable it came from. ``coordinator`` may be a comma-separated list
of URLs, the coordinators sharing one database (a leader and its standbys): each URL is
checked alike, and the clients find the leader among them (`orca._leader`).
"""

from __future__ import annotations

import os
import urllib.parse
from dataclasses import dataclass
from typing import Any, List, Mapping, Optional, Tuple, Union

import grpc

from orca.errors import ConfigError

#: The coordinator address when neither the argument nor ORCA_COORDINATOR is set.
DEFAULT_COORDINATOR = "http://127.0.0.1:50051"
#: Largest gRPC message sent or accepted, either way (the contract's limit).
MAX_MESSAGE_BYTES = 64 << 20
#: Reconnect delays of the channel itself, matching the watch backoff (100 ms up to 5 s).
RECONNECT_MIN_MS = 100
RECONNECT_MAX_MS = 5000

PathLike = Union[str, "os.PathLike[str]"]


@dataclass(frozen=True)
class Endpoint:
    """One coordinator URL of the list."""

    #: The URL as given (surrounding spaces dropped).
    url: str
    #: ``host:port`` for gRPC.
    target: str
    #: ``https://``: TLS; ``http://``: plaintext.
    tls: bool


@dataclass(frozen=True)
class Settings:
    """Resolved connection settings."""

    #: The first coordinator URL of the list (the only one, usually).
    url: str
    #: ``host:port`` of `url` for gRPC.
    target: str
    #: Whether `url` is ``https://``.
    tls: bool
    root_certificates: Optional[bytes] = None
    certificate_chain: Optional[bytes] = None
    private_key: Optional[bytes] = None
    token: Optional[str] = None
    #: Every coordinator URL of the list, in order, each with its own scheme; the first is
    #: `url`. Left empty, it is `url` alone.
    endpoints: Tuple[Endpoint, ...] = ()

    def __post_init__(self) -> None:
        if not self.endpoints:
            object.__setattr__(self, "endpoints", (Endpoint(self.url, self.target, self.tls),))

    @property
    def urls(self) -> Tuple[str, ...]:
        """Every coordinator URL, in the order given."""
        return tuple(e.url for e in self.endpoints)

    @property
    def targets(self) -> Tuple[str, ...]:
        """``host:port`` of every coordinator URL, in the order given."""
        return tuple(e.target for e in self.endpoints)

    def channel_options(self) -> List[Tuple[str, Any]]:
        return [
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.initial_reconnect_backoff_ms", RECONNECT_MIN_MS),
            ("grpc.min_reconnect_backoff_ms", RECONNECT_MIN_MS),
            ("grpc.max_reconnect_backoff_ms", RECONNECT_MAX_MS),
            # Like the Rust client: the coordinator is reached directly, never through an
            # http_proxy/https_proxy of the environment.
            ("grpc.enable_http_proxy", 0),
        ]

    def credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            root_certificates=self.root_certificates,
            private_key=self.private_key,
            certificate_chain=self.certificate_chain,
        )

    def metadata(self) -> Tuple[Tuple[str, str], ...]:
        """Metadata sent with every call: ``authorization: Bearer <token>`` when a token is set."""
        if self.token is None:
            return ()
        return (("authorization", f"Bearer {self.token}"),)


def _env(environ: Mapping[str, str], name: str) -> Optional[str]:
    value = environ.get(name)
    return value if value else None


def parse_coordinator(value: str, source: str = "coordinator") -> Tuple[str, str, bool]:
    """``(url, target, tls)`` of the first URL of a coordinator list (every URL is checked)."""
    first = parse_coordinators(value, source)[0]
    return first.url, first.target, first.tls


def parse_coordinators(value: str, source: str = "coordinator") -> Tuple[Endpoint, ...]:
    """Every URL of a comma-separated coordinator list, in order; an empty element (``a,,b``,
    a trailing comma) or a bad URL is a `ConfigError` naming ``source`` and the element."""
    parts = [p.strip() for p in value.split(",")]
    if not any(parts):
        raise ConfigError(f"{source}: empty coordinator URL (expected http://host:port or https://host:port)")
    endpoints = []
    for i, part in enumerate(parts):
        if not part:
            raise ConfigError(
                f"{source}: element {i + 1} of {value.strip()!r} is empty "
                "(a comma-separated list of http://host:port or https://host:port)"
            )
        endpoints.append(_parse_url(part, source))
    return tuple(endpoints)


def _parse_url(url: str, source: str) -> Endpoint:
    """One coordinator URL: ``http://host[:port]`` or ``https://host[:port]``, nothing more."""
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme not in ("http", "https"):
        raise ConfigError(
            f"{source}: {url!r} is not an http:// or https:// URL "
            "(http:// is plaintext, https:// is TLS; e.g. http://127.0.0.1:50051)"
        )
    parts = urllib.parse.urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        raise ConfigError(f"{source}: {url!r} has an invalid port") from None
    host = parts.hostname
    if not host:
        raise ConfigError(f"{source}: {url!r} has no host")
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username or parts.password:
        raise ConfigError(f"{source}: {url!r} must be scheme://host:port with no path, query or user")
    tls = scheme == "https"
    if port is None:
        port = 443 if tls else 80
    target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return Endpoint(url, target, tls)


def _read(path: PathLike, source: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise ConfigError(f"{source} {os.fspath(path)}: cannot read: {e.strerror or e}") from None


def _check_token(token: str, source: str) -> str:
    token = token.strip()
    if not token:
        raise ConfigError(f"{source}: the token is empty")
    if not all(0x21 <= ord(c) <= 0x7E for c in token):
        raise ConfigError(f"{source}: the token must be printable ASCII without spaces")
    return token


def _token(
    token: Optional[str], token_file: Optional[PathLike], environ: Mapping[str, str]
) -> Optional[str]:
    if token is not None and token_file is not None:
        raise ConfigError("give token or token_file, not both")
    if token_file is not None:
        return _token_from_file(token_file, "token_file")
    if token is not None:
        return _check_token(token, "token")
    env_file = _env(environ, "ORCA_TOKEN_FILE")
    if env_file is not None:
        return _token_from_file(env_file, "ORCA_TOKEN_FILE")
    env_token = _env(environ, "ORCA_TOKEN")
    if env_token is not None and env_token.strip():
        return _check_token(env_token, "ORCA_TOKEN")
    return None


def _token_from_file(path: PathLike, source: str) -> str:
    text = _read(path, source).decode("utf-8", errors="replace")
    if not text.strip():
        raise ConfigError(f"{source} {os.fspath(path)}: the file is empty (it must hold the token)")
    return _check_token(text, f"{source} {os.fspath(path)}")


def resolve(
    coordinator: Optional[str] = None,
    *,
    token: Optional[str] = None,
    token_file: Optional[PathLike] = None,
    tls_ca: Optional[PathLike] = None,
    tls_cert: Optional[PathLike] = None,
    tls_key: Optional[PathLike] = None,
    environ: Optional[Mapping[str, str]] = None,
) -> Settings:
    """Settings from the arguments, then ``environ`` (default `os.environ`), then defaults."""
    env = os.environ if environ is None else environ
    if coordinator is not None:
        endpoints = parse_coordinators(coordinator, "coordinator")
    elif _env(env, "ORCA_COORDINATOR") is not None:
        endpoints = parse_coordinators(env["ORCA_COORDINATOR"], "ORCA_COORDINATOR")
    else:
        endpoints = parse_coordinators(DEFAULT_COORDINATOR)
    first = endpoints[0]

    def pick(arg: Optional[PathLike], name: str, var: str) -> Tuple[Optional[PathLike], str]:
        if arg is not None:
            return arg, name
        return _env(env, var), var

    ca, ca_src = pick(tls_ca, "tls_ca", "ORCA_TLS_CA")
    cert, cert_src = pick(tls_cert, "tls_cert", "ORCA_TLS_CERT")
    key, key_src = pick(tls_key, "tls_key", "ORCA_TLS_KEY")
    named = [src for value, src in ((ca, ca_src), (cert, cert_src), (key, key_src)) if value is not None]
    plain = [e.url for e in endpoints if not e.tls]
    if named and plain:
        raise ConfigError(
            f"TLS files are set ({', '.join(named)}) but {plain[0]} is not https://; use https:// for TLS"
        )
    if not any(e.tls for e in endpoints):
        return Settings(first.url, first.target, False, token=_token(token, token_file, env), endpoints=endpoints)
    if (cert is None) != (key is None):
        raise ConfigError(f"{cert_src} and {key_src} go together (a client certificate and its key)")
    return Settings(
        first.url,
        first.target,
        first.tls,
        root_certificates=_read(ca, ca_src) if ca is not None else None,
        certificate_chain=_read(cert, cert_src) if cert is not None else None,
        private_key=_read(key, key_src) if key is not None else None,
        token=_token(token, token_file, env),
        endpoints=endpoints,
    )
