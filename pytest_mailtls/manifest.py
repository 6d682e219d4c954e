"""The JSON contract between running servers and everything else.

A manifest is ``{"version": 1, "cells": [record, ...]}``; each record describes
one endpoint (schema in docs/manifest.md). Fixtures, ``mailtls up``,
``mailtls messages``, probe, verify and certify all read and write it.

PYTEST_DONT_REWRITE
"""

from __future__ import annotations

import difflib
import getpass
import json
import os
import socket
import ssl
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import BeforeValidator, Field, TypeAdapter, ValidationError, field_validator

from . import capture
from .connect import set_version_range
from .errors import ManifestError, one_line
from .policy import DH_SIZES, LEGACY_VERSIONS, SERVICES, VERSIONS, AuthPolicy, Cell, CertProfile, Mode, TLSPolicy
from .records import Record, one_of, problem
from .tls import null_encryption

if TYPE_CHECKING:
    from .wire.session import Session

__all__ = [
    "Endpoint",
    "ManifestOwner",
    "write_manifest",
    "read_manifest",
    "find_endpoint",
    "check_replaceable",
    "Manifest",
    "EndpointRecord",
    "MANIFEST_VERSION",
]

MANIFEST_VERSION = 1
#: Seconds a reader waits for the first endpoint's port before calling the manifest stale.
PORT_CHECK_TIMEOUT = 2.0


def _process_start(pid: int) -> tuple[str, str] | None:
    """``(state, start time)`` of ``pid`` from /proc (start in clock ticks since boot); ``None`` if gone.

    The start time tells a reused pid apart from the process that wrote the manifest; the state tells a
    zombie (``Z``: dead, not yet reaped by its parent) from a live process, which ``kill(pid, 0)`` cannot.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[-1].split()
    return (fields[0], fields[19]) if len(fields) > 19 else None


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # a uid without a passwd entry (containers)
        return str(os.getuid())


def _process_id(value: object) -> object:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{value!r} is not a process id")
    return value


@dataclass(frozen=True)
class ManifestOwner:
    """The process that serves a manifest's cells: readers check it still runs before they use any cell."""

    pid: Annotated[int, Field(gt=0, description="its process id"), BeforeValidator(_process_id)]
    start: Annotated[
        str,
        Field(description="the kernel's start time of `pid` (clock ticks since boot): a reused pid is told apart"),
    ]
    host: Annotated[str, Field(description="the host name it runs on: a pid means nothing elsewhere")]
    user: Annotated[str, Field(description="the user it runs as")]
    command: Annotated[str, Field(description="`mailtls up`, `pytest`, or empty")] = ""

    @classmethod
    def current(cls, command: str = "") -> ManifestOwner:
        """This process."""
        pid = os.getpid()
        stat = _process_start(pid)
        return cls(pid, stat[1] if stat else "", socket.gethostname(), _user(), command)

    def to_json(self) -> dict[str, Any]:
        return _OWNER.dump_python(self)

    @classmethod
    def from_json(cls, data: Any, source: str) -> ManifestOwner:
        """The owner record of the manifest ``source``; a one-line :class:`ManifestError` if it is malformed."""
        if not isinstance(data, dict):
            raise ManifestError(f"{source}: owner: must be an object with pid, start, host, user")
        try:
            return _OWNER.validate_python(data)
        except ValidationError as exc:
            raise ManifestError(f"{source}: {problem(exc, at='owner')}") from None

    @property
    def here(self) -> bool:
        """Whether the owner ran on this host (a pid means nothing elsewhere)."""
        return self.host == socket.gethostname()

    def alive(self) -> bool:
        """Whether the owner still runs: same host, pid present, not a zombie, same start time."""
        if not self.here:
            return False
        stat = _process_start(self.pid)
        if stat is None:
            if Path("/proc/self/stat").exists():
                return False
            try:  # no /proc (not Linux): existence is all that can be told
                os.kill(self.pid, 0)
            except ProcessLookupError:
                return False
            except PermissionError:
                pass
            return True
        state, start = stat
        return state != "Z" and (not self.start or start == self.start)

    def describe(self) -> str:
        return f"{self.command or 'a pytest-mailtls process'} (pid {self.pid}, user {self.user}, host {self.host})"


@dataclass(frozen=True)
class Endpoint:
    """A served cell: where it listens and everything a client needs to talk to it.

    ``messages()`` returns what the cell received; ``client_context()`` builds
    an ``ssl.SSLContext`` that trusts the session CA (optionally pinned to one
    protocol version, with the security level legacy versions need).
    """

    cell: Cell
    host: str
    port: int
    server_hostname: str
    ca_file: str
    username: str
    password: str
    mailbox: str | None = None  # host path of the Maildir holding what this cell received
    client_cert_file: str | None = None  # for mutual TLS: PEM with the certificate (chain)
    client_key_file: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # backend specifics (container id, instance, ...)

    # --- identity ------------------------------------------------------------
    @property
    def id(self) -> str:
        return self.cell.id

    @property
    def server(self) -> str:
        return self.cell.server

    @property
    def service(self) -> str:
        return self.cell.service.name

    @property
    def protocol(self) -> str:
        return str(self.cell.protocol)

    @property
    def mode(self) -> Mode:
        return self.cell.mode

    @property
    def policy(self) -> TLSPolicy | None:
        return self.cell.policy

    @property
    def cert(self) -> CertProfile | None:
        return self.cell.cert

    @property
    def auth(self) -> AuthPolicy:
        return self.cell.auth

    @property
    def url(self) -> str:
        """``smtp://``/``smtps://`` (likewise imap(s), pop3(s)) URL of the endpoint."""
        scheme = self.protocol + ("s" if self.mode is Mode.IMPLICIT else "")
        return f"{scheme}://{self.server_hostname}:{self.port}"

    @property
    def address(self) -> str:
        """The test user's mail address."""
        return self.username if "@" in self.username else f"{self.username}@mailtls.test"

    # --- clients -------------------------------------------------------------
    def client_context(
        self,
        version: str | None = None,
        *,
        ciphers: str | None = None,
        check_hostname: bool = True,
        verify: bool = True,
        client_cert: bool | None = None,
    ) -> ssl.SSLContext:
        """A client context trusting the session CA.

        ``version`` pins both ends of the range (e.g. ``"TLSv1.1"``); legacy
        versions get ``@SECLEVEL=0`` as OpenSSL 3 requires, and so does a ``ciphers`` list of NULL-encryption
        suites only; on a cell with a small DH group (``dh_bits`` under 2048) a ``ciphers`` list gets
        ``@SECLEVEL=1``, the level that still takes the group (without ``ciphers`` the context stays a default
        client's, which refuses it with "dh key too small"). ``client_cert``
        defaults to presenting the session client certificate on mTLS cells.
        """
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        if verify:
            ctx.load_verify_locations(self.ca_file)
            ctx.check_hostname = check_hostname
        else:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        if version is not None:
            set_version_range(ctx, version, version)
        if ciphers is not None:
            policy = self.cell.policy
            if null_encryption(ciphers) and "@SECLEVEL" not in ciphers:
                ciphers += ":@SECLEVEL=0"  # OpenSSL 3 offers NULL-encryption suites at level 0 only
            elif policy is not None and policy.small_dh and "@SECLEVEL" not in ciphers:
                ciphers += ":@SECLEVEL=1"  # at level 2 OpenSSL 3 refuses a DH group under 2048 bits
            ctx.set_ciphers(ciphers)
        elif version in LEGACY_VERSIONS:
            ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
        if client_cert is None:
            client_cert = self.cell.auth.client_cert
        if client_cert and self.client_cert_file:
            ctx.load_cert_chain(self.client_cert_file, self.client_key_file)
        return ctx

    def compatible_context(self, *, verify: bool | None = None, client_cert: bool | None = None) -> ssl.SSLContext:
        """A client context that can complete a handshake with this cell.

        It offers exactly the cell's version range and cipher list, at OpenSSL security
        level 0 where legacy versions or weak certificates need it. ``verify`` defaults
        to whether the certificate profile verifies against the session CA.
        """
        policy, cert = self.cell.policy, self.cell.cert
        if policy is None or cert is None:
            raise ValueError(f"{self.id} is a plain cell: it has no TLS")
        ctx = self.client_context(verify=cert.verifies if verify is None else verify, client_cert=client_cert)
        set_version_range(ctx, policy.min_version, policy.max_version)
        base = policy.ciphers or "DEFAULT"
        ctx.set_ciphers(base if "@SECLEVEL" in base else base + ":@SECLEVEL=0")
        return ctx

    # --- captured mail -------------------------------------------------------
    def messages(self, count: int | None = None, *, timeout: float = 10.0) -> list[EmailMessage]:
        """Messages this cell received, oldest first, parsed.

        Servers deliver after they answer the client (Postfix queues, then delivers), so
        right after sending pass ``count``: the call then waits, at most ``timeout``
        seconds, until that many messages are there, and returns what arrived either way.
        """
        if self.mailbox is None:
            raise ManifestError(f"{self.id}: this endpoint captures no mail")
        deadline = time.monotonic() + timeout
        while True:
            found = capture.read_maildir(self._synced_mailbox())
            if count is None or len(found) >= count or time.monotonic() >= deadline:
                return found
            time.sleep(0.02)

    def clear(self) -> None:
        """Forget the messages received so far."""
        if self.mailbox is None:
            return
        mirror = self.extra.get("mail_mirror")
        if isinstance(mirror, dict):
            from .runtime import clear_in_container

            clear_in_container(str(mirror["container"]), str(mirror["path"]))
        capture.clear_maildir(self.mailbox)

    def _synced_mailbox(self) -> str:
        """The host Maildir, first brought up to date from the container holding the live one (a remote engine:
        ``extra["mail_mirror"]``, see :mod:`pytest_mailtls.transfer`)."""
        assert self.mailbox is not None
        mirror = self.extra.get("mail_mirror")
        if isinstance(mirror, dict):
            from .runtime import pull_from_container

            pull_from_container(str(mirror["container"]), str(mirror["path"]), self.mailbox)
        return self.mailbox

    # --- sessions on the wire --------------------------------------------------
    def sessions(self, *, since: float | None = None, wait: float = 2.0) -> list[Session]:
        """Every connection to this cell (since the test started, inside a test), as the wire showed it.

        Each :class:`~pytest_mailtls.wire.Session` says what the client offered (``offered_versions``,
        ``offered_ciphers``, ``sni``), what was negotiated (``tls_version``, ``cipher``), ``starttls``,
        ``credentials_in_clear``, ``message_accepted``, ``alerts``, ``closed_by`` and the cleartext
        ``dialogue``. Connections still open are waited for, at most ``wait`` seconds. ``since`` (epoch
        seconds) overrides the start of the test.
        """
        from .wire.session import read_sessions

        path = self.extra.get("sessions_file")
        if not path:
            raise ManifestError(f"{self.id}: this endpoint has no session recorder in front of it")
        if since is None:
            since = self.extra.get("sessions_since")
        return read_sessions(path, since=since, wait=wait)

    def last_session(self, *, wait: float = 2.0) -> Session:
        """The latest connection to this cell; ``LookupError`` when there was none (since the test started)."""
        found = self.sessions(wait=wait)
        if not found:
            raise LookupError(f"{self.id}: no connection reached this cell (since the test started)")
        return found[-1]

    # --- manifest ------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        """The endpoint's manifest record (:class:`EndpointRecord`), as JSON-ready data."""
        return EndpointRecord.of(self).model_dump()

    @classmethod
    def from_json(cls, record: Any, *, source: str = "manifest", index: int | None = None) -> Endpoint:
        """An endpoint from its manifest record; a :class:`ManifestError` naming ``source`` and the record if
        the record is malformed."""
        where = f"cells[{index}]" if index is not None else "record"
        if not isinstance(record, dict):
            raise ManifestError(one_line(f"{source}: {where}: a record is an object, got {type(record).__name__}"))
        cell_id = record.get("id")
        where += f" ({cell_id!r})" if cell_id is not None else ""
        try:
            return EndpointRecord.model_validate(record).endpoint()
        except ValidationError as exc:
            why = problem(exc)
        except ValueError as exc:  # a combination the cell model refuses (Cell, TLSPolicy invariants)
            why = str(exc) or type(exc).__name__
        raise ManifestError(one_line(f"{source}: {where} is malformed: {why}"))


# --- the records: the models are the schema (docs/schemas/manifest.json) ---------------------------------


def _port(value: object) -> object:
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or not 0 < value < 65536:
        raise ValueError(f"{value!r} is not a port number (1-65535)")
    return value


def _none_is_empty(value: object) -> object:
    return {} if value is None else value


class PolicyRecord(Record):
    """The cell's TLS policy: the versions and ciphers the server accepts."""

    name: str = Field(description="the policy's name in the matrix (`intermediate`, `tls12-only` ...)")
    min_version: str = Field(description="the lowest version accepted", json_schema_extra={"enum": list(VERSIONS)})
    max_version: str = Field(description="the highest version accepted", json_schema_extra={"enum": list(VERSIONS)})
    ciphers: str | None = Field(
        None, description="an OpenSSL cipher list for TLS <= 1.2 (`null`: the server's default)"
    )
    ciphersuites: str | None = Field(None, description="the TLS 1.3 suites (`null`: the server's default)")
    dh_bits: int | None = Field(
        None,
        description="the size of the finite-field DH group of the DHE suites, one fixed well-known group per size "
        "(`null`: the server's own)",
        json_schema_extra={"enum": [*DH_SIZES, None]},
    )

    @field_validator("min_version", "max_version")
    @classmethod
    def _version(cls, value: str) -> str:
        return one_of(VERSIONS, value)

    @classmethod
    def of(cls, policy: TLSPolicy) -> PolicyRecord:
        return cls(
            name=policy.name,
            min_version=policy.min_version,
            max_version=policy.max_version,
            ciphers=policy.ciphers,
            ciphersuites=policy.ciphersuites,
            dh_bits=policy.dh_bits,
        )

    def policy(self) -> TLSPolicy:
        return TLSPolicy(
            self.name, self.min_version, self.max_version, self.ciphers, self.ciphersuites, dh_bits=self.dh_bits
        )


class AuthRecord(Record):
    """Who may send or log in, and the test user's credentials."""

    name: str = Field("default", description="the auth policy's name in the matrix (`default`, `mtls` ...)")
    mechanisms: list[str] = Field(default_factory=list, description="the SASL mechanisms offered")
    username: str = Field(description="the test user's name (a mail address)")
    password: str = Field(description="the test user's password")
    tls_only: bool = Field(True, description="AUTH is offered and accepted only after TLS")
    required: bool = Field(True, description="SMTP refuses MAIL until the client authenticates")


class EndpointRecord(Record):
    """One served cell: where it listens and everything a client needs to talk to it (docs/manifest.md)."""

    id: str = Field(
        "",
        description="stable, readable cell id: `server-service-mode[-policy-cert][-auth][-network]` (auth left out when "
        "`default`); readers take the cell from the other keys",
    )
    server: str = Field(description="the server, a name of the server registry (`mailtls cells --servers ...`)")
    service: str = Field(
        description="the port role, by its usual port: "
        + ", ".join(f"`{s.name}` ({s.default_port})" for s in SERVICES.values()),
        json_schema_extra={"enum": list(SERVICES)},
    )
    protocol: str = Field("", description="`smtp`, `imap` or `pop3`, as the service speaks it")
    mode: Mode = Field(
        description="`plain` (no TLS), `starttls` (offered, optional), `starttls-required` (commands refused "
        "before it), `implicit` (TLS from the first byte)"
    )
    policy: PolicyRecord | None = Field(None, description="the TLS policy (below); `null` for plain cells")
    cert: CertProfile | None = Field(
        None, description="the certificate profile the server presents; `null` for plain cells"
    )
    client_cert: bool = Field(
        False, description="`true`: mutual TLS, a client certificate from the session CA is required"
    )
    network: str | None = Field(
        None,
        description="a hostile-network or fault cell: the attack or server fault a relay plays between client and "
        "server (`strip-capa`, `intercept`, `fault-rcpt-451`, ...; docs/hostile.md, docs/faults.md), the id's last "
        "part; `null` for ordinary cells",
    )
    host: str = Field(description="where to connect: always `127.0.0.1`")
    port: Annotated[int, Field(ge=1, le=65535), BeforeValidator(_port)] = Field(
        description="the port to connect to, one the engine or the OS chose"
    )
    server_hostname: str = Field(
        description="the name to verify and send as SNI (valid certificates name it, `mail.mailtls.test` and `127.0.0.1`)"
    )
    ca_file: str = Field(description="PEM of the session CA, the one to trust")
    auth: AuthRecord = Field(description="who may send or log in, and the test user's credentials (below)")
    mailbox: str | None = Field(
        None, description="host path of the Maildir holding what this cell received (`null` where none)"
    )
    client_cert_file: str | None = Field(
        None, description="PEM of a client certificate (chain) the servers accept, for mTLS cells"
    )
    client_key_file: str | None = Field(None, description="its private key")
    extra: Annotated[dict[str, Any], BeforeValidator(_none_is_empty)] = Field(
        default_factory=dict,
        description="backend specifics (container id, instance name, the session recorder's `sessions_file` and "
        "`upstream_port`, with a remote engine `mail_mirror`: where the live Maildir is); not part of the stable "
        "contract",
    )

    @field_validator("service")
    @classmethod
    def _service(cls, value: str) -> str:
        return one_of(tuple(SERVICES), value)

    @field_validator("network")
    @classmethod
    def _network(cls, value: str | None) -> str | None:
        from .wire.attacks import NETWORKS

        return None if value is None else one_of(tuple(NETWORKS), value)

    @classmethod
    def of(cls, endpoint: Endpoint) -> EndpointRecord:
        cell = endpoint.cell
        return cls(
            id=cell.id,
            server=cell.server,
            service=cell.service.name,
            protocol=str(cell.protocol),
            mode=cell.mode,
            policy=PolicyRecord.of(cell.policy) if cell.policy else None,
            cert=cell.cert,
            client_cert=cell.auth.client_cert,
            network=cell.network,
            host=endpoint.host,
            port=endpoint.port,
            server_hostname=endpoint.server_hostname,
            ca_file=endpoint.ca_file,
            auth=AuthRecord(
                name=cell.auth.name,
                mechanisms=list(cell.auth.mechanisms),
                username=endpoint.username,
                password=endpoint.password,
                tls_only=cell.auth.tls_only,
                required=cell.auth.required,
            ),
            mailbox=endpoint.mailbox,
            client_cert_file=endpoint.client_cert_file,
            client_key_file=endpoint.client_key_file,
            extra=endpoint.extra,
        )

    def endpoint(self) -> Endpoint:
        """The endpoint; ``ValueError`` for a combination the cell model refuses (a plain cell with a policy)."""
        auth = self.auth
        cell = Cell(
            server=self.server,
            service=SERVICES[self.service],
            mode=Mode(self.mode),
            policy=self.policy.policy() if self.policy else None,
            cert=CertProfile(self.cert) if self.cert else None,
            auth=AuthPolicy(
                auth.name, tuple(auth.mechanisms), auth.tls_only, auth.required, client_cert=self.client_cert
            ),
            network=self.network,
        )
        return Endpoint(
            cell=cell,
            host=self.host,
            port=self.port,
            server_hostname=self.server_hostname,
            ca_file=self.ca_file,
            username=auth.username,
            password=auth.password,
            mailbox=self.mailbox,
            client_cert_file=self.client_cert_file,
            client_key_file=self.client_key_file,
            extra=dict(self.extra),
        )


class Manifest(Record):
    """What ``mailtls up`` and the fixtures write: the served cells and the process that serves them."""

    version: int = Field(MANIFEST_VERSION, description="the manifest's version")
    owner: ManifestOwner | None = Field(
        None, description="the process that serves the cells (below); readers check it still runs"
    )
    cells: list[EndpointRecord] = Field(description="one record per served cell (below)")


_OWNER: TypeAdapter[ManifestOwner] = TypeAdapter(ManifestOwner)


def write_manifest(
    path: str | os.PathLike[str], endpoints: Iterable[Endpoint], *, owner: ManifestOwner | None = None
) -> Path:
    """Write the manifest atomically (readers never see half a file).

    ``owner`` (default: this process) is recorded so that readers can tell a manifest whose servers are
    gone from a live one before they use it.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    who = owner if owner is not None else ManifestOwner.current()
    doc = Manifest(owner=who, cells=[EndpointRecord.of(e) for e in endpoints]).model_dump()
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".manifest-", suffix=".json")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(doc, fh, indent=2)
            fh.write("\n")
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def _load(source: Path) -> dict[str, Any]:
    try:
        doc = json.loads(source.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ManifestError(
            f"{source}: no such manifest; start servers with `mailtls up --manifest {source}`"
        ) from None
    except IsADirectoryError:
        raise ManifestError(f"{source}: is a directory, not a manifest") from None
    except UnicodeDecodeError:
        raise ManifestError(f"{source}: not a manifest (not UTF-8 text)") from None
    except OSError as exc:
        raise ManifestError(f"{source}: cannot read: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise ManifestError(f"{source}: not valid JSON (line {exc.lineno}: {exc.msg})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("cells"), list):
        raise ManifestError(f"{source}: a manifest is an object with a 'cells' list")
    return doc


def read_manifest(path: str | os.PathLike[str], *, live: bool = False) -> list[Endpoint]:
    """Endpoints listed in a manifest written by ``mailtls up`` or the fixtures.

    With ``live`` the servers must still run: the owner process recorded in the manifest is alive (same
    host, same pid and start time, not a zombie) and the first endpoint's port accepts a TCP connection;
    otherwise a :class:`ManifestError` says which and how to start them again.
    """
    source = Path(path)
    doc = _load(source)
    endpoints = [Endpoint.from_json(r, source=str(source), index=i) for i, r in enumerate(doc["cells"])]
    if live:
        owner = ManifestOwner.from_json(doc["owner"], str(source)) if "owner" in doc else None
        _check_live(source, owner, endpoints)
    return endpoints


def _restart_hint(source: Path) -> str:
    return f"start them again with `mailtls up --manifest {source}`"


def _check_live(source: Path, owner: ManifestOwner | None, endpoints: Sequence[Endpoint]) -> None:
    if owner is not None and not owner.here:
        raise ManifestError(
            f"manifest {source} was written on host {owner.host}, not here ({socket.gethostname()}): its servers "
            f"listen there; {_restart_hint(source)} on this host"
        )
    if owner is not None and not owner.alive():
        raise ManifestError(
            f"manifest {source} was written by {owner.command or 'a pytest-mailtls process'} (pid {owner.pid}) "
            f"which is no longer running; {_restart_hint(source)}"
        )
    if not endpoints:
        return
    first = endpoints[0]
    try:
        with socket.create_connection((first.host, first.port), timeout=PORT_CHECK_TIMEOUT):
            pass
    except OSError as exc:
        why = exc.strerror or type(exc).__name__
        by = f" by {owner.describe()}" if owner is not None else ""
        raise ManifestError(
            one_line(
                f"manifest {source}{by}: its first cell {first.id} at {first.host}:{first.port} does not answer "
                f"({why}); the servers are gone: {_restart_hint(source)}"
            )
        ) from None


def check_replaceable(path: str | os.PathLike[str]) -> None:
    """Raise :class:`ManifestError` unless ``mailtls up`` may write ``path``.

    Refused: a manifest whose owner still runs (another ``mailtls up`` serves it), a file that is not a
    manifest, and a folder where the file cannot be written. A manifest whose owner is gone is replaced.
    """
    target = Path(path)
    if target.exists():
        try:
            doc = _load(target)
        except ManifestError as exc:
            raise ManifestError(f"{exc}; refusing to overwrite it: choose another --manifest") from None
        owner = ManifestOwner.from_json(doc["owner"], str(target)) if "owner" in doc else None
        if owner is not None and owner.pid != os.getpid() and owner.alive():
            raise ManifestError(
                f"manifest {target} belongs to {owner.describe()}, which is still running: stop it "
                f"(Ctrl-C, or `kill {owner.pid}`) or choose another --manifest"
            )
    parent = target.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not os.access(parent, os.W_OK | os.X_OK) or (target.exists() and not os.access(target, os.W_OK)):
        raise ManifestError(f"{target}: cannot write the manifest there (permission denied): choose another --manifest")


def find_endpoint(endpoints: Sequence[Endpoint], cell_id: str) -> Endpoint:
    for endpoint in endpoints:
        if endpoint.id == cell_id:
            return endpoint
    close = difflib.get_close_matches(cell_id, [e.id for e in endpoints], n=5, cutoff=0.6)
    hint = f" Similar: {', '.join(close)}" if close else ""
    raise ManifestError(f"no cell {cell_id!r} in the manifest.{hint}")
