"""The JSON contract between running servers and everything else.

A manifest is ``{"version": 1, "cells": [record, ...]}``; each record describes
one endpoint (schema in docs/manifest.md). Fixtures, ``mailtls up``,
``mailtls messages``, probe, verify and certify all read and write it.
"""

from __future__ import annotations

import difflib
import json
import os
import ssl
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import capture
from .connect import set_version_range
from .errors import ManifestError
from .policy import LEGACY_VERSIONS, SERVICES, AuthPolicy, Cell, CertProfile, Mode, TLSPolicy

if TYPE_CHECKING:
    from .wire.session import Session

__all__ = ["Endpoint", "write_manifest", "read_manifest", "find_endpoint", "MANIFEST_VERSION"]

MANIFEST_VERSION = 1


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
        versions get ``@SECLEVEL=0`` as OpenSSL 3 requires. ``client_cert``
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
            found = capture.read_maildir(self.mailbox)
            if count is None or len(found) >= count or time.monotonic() >= deadline:
                return found
            time.sleep(0.02)

    def clear(self) -> None:
        """Forget the messages received so far."""
        if self.mailbox is not None:
            capture.clear_maildir(self.mailbox)

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
        cell = self.cell
        return {
            "id": cell.id,
            "server": cell.server,
            "service": cell.service.name,
            "protocol": str(cell.protocol),
            "mode": str(cell.mode),
            "policy": cell.policy.to_json() if cell.policy else None,
            "cert": str(cell.cert) if cell.cert else None,
            "client_cert": cell.auth.client_cert,
            "host": self.host,
            "port": self.port,
            "server_hostname": self.server_hostname,
            "ca_file": self.ca_file,
            "auth": cell.auth.to_json(username=self.username, password=self.password),
            "mailbox": self.mailbox,
            "client_cert_file": self.client_cert_file,
            "client_key_file": self.client_key_file,
            "extra": self.extra,
        }

    @classmethod
    def from_json(cls, record: dict[str, Any]) -> Endpoint:
        try:
            auth_data = record["auth"]
            cell = Cell(
                server=record["server"],
                service=SERVICES[record["service"]],
                mode=Mode(record["mode"]),
                policy=TLSPolicy.from_json(record["policy"]) if record.get("policy") else None,
                cert=CertProfile(record["cert"]) if record.get("cert") else None,
                auth=AuthPolicy.from_json(auth_data, client_cert=bool(record.get("client_cert"))),
            )
            return cls(
                cell=cell,
                host=record["host"],
                port=int(record["port"]),
                server_hostname=record["server_hostname"],
                ca_file=record["ca_file"],
                username=auth_data["username"],
                password=auth_data["password"],
                mailbox=record.get("mailbox"),
                client_cert_file=record.get("client_cert_file"),
                client_key_file=record.get("client_key_file"),
                extra=dict(record.get("extra") or {}),
            )
        except (KeyError, ValueError, TypeError) as exc:
            raise ManifestError(f"manifest record {record.get('id', '?')!r} is malformed: {exc!r}") from None


def write_manifest(path: str | os.PathLike[str], endpoints: Iterable[Endpoint]) -> Path:
    """Write the manifest atomically (readers never see half a file)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    doc = {"version": MANIFEST_VERSION, "cells": [e.to_json() for e in endpoints]}
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


def read_manifest(path: str | os.PathLike[str]) -> list[Endpoint]:
    """Endpoints listed in a manifest written by ``mailtls up`` or the fixtures."""
    source = Path(path)
    try:
        doc = json.loads(source.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ManifestError(
            f"{source}: no such manifest; start servers with `mailtls up --manifest {source}`"
        ) from None
    except json.JSONDecodeError as exc:
        raise ManifestError(f"{source}: not valid JSON (line {exc.lineno}: {exc.msg})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("cells"), list):
        raise ManifestError(f"{source}: a manifest is an object with a 'cells' list")
    return [Endpoint.from_json(r) for r in doc["cells"]]


def find_endpoint(endpoints: Sequence[Endpoint], cell_id: str) -> Endpoint:
    for endpoint in endpoints:
        if endpoint.id == cell_id:
            return endpoint
    close = difflib.get_close_matches(cell_id, [e.id for e in endpoints], n=5, cutoff=0.6)
    hint = f" Similar: {', '.join(close)}" if close else ""
    raise ManifestError(f"no cell {cell_id!r} in the manifest.{hint}")
