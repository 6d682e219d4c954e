"""Dovecot: one container serves every selected IMAP and POP3 cell, each on its own port.

Dovecot 2.3 cannot vary TLS settings per port inside one login service: ``ssl_*`` inside an
``inet_listener`` is an error, a ``local_name`` (SNI) block swaps the certificate but not the protocol
range, and ``local <ip>`` blocks match an IP, while every published port reaches the container's one IP.
What does work: a login process started with ``-k`` lets its environment override the configuration. So
each cell is its own login service (``type = login``, its own ``inet_listener``, its name as log prefix)
whose executable is the image's ``mailtls-login-env`` wrapper: it exports the cell's settings file
(``ssl``, ``ssl_min_protocol``, ciphers, TLS 1.3 suites, certificate, ``disable_plaintext_auth``, client
certificate checks, and ``OPENSSL_CONF`` with ``MaxProtocol``, since Dovecot has no maximum) and starts
``imap-login``/``pop3-login``. One master, one auth and one config process serve the whole grid, and no
login process exists until a client connects.

Mechanisms and client certificates are decided by the auth process, whose settings are global; two deny
passdbs keyed on protocol and local port make them per cell: ``<protocol>/<port>/<mechanism>`` for the
mechanisms a cell does not declare, ``<protocol>/<port>/`` (no valid certificate) on mutual-TLS cells. So a
cell accepts exactly its mechanisms, but advertises all those of the grid (the union). XOAUTH2/OAUTHBEARER
tokens are HS256 JWTs that :meth:`DovecotServer.mint_oauth_token` signs and Dovecot checks locally.

Modes: ``plain`` is ``ssl = no``; ``implicit`` an ``ssl = yes`` listener; ``starttls-required`` is
``ssl = required`` (LOGIN, USER/PASS and every AUTHENTICATE refused until STARTTLS, no AUTH= before it),
and so is ``starttls`` under a ``tls_only`` auth policy, which asks exactly that; ``starttls`` with
cleartext auth is ``ssl = yes`` with ``disable_plaintext_auth = no``.

Every cell reads and writes the test user's one Maildir, a bind-mounted host folder; the server can put
messages there (:meth:`DovecotServer.deliver`) and report flags, folders and expunges
(:meth:`DovecotServer.mailbox_state`). LMTP and auth sockets appear in ``<workdir>/sockets`` for a Postfix
container to hand mail and SASL to (the mail flow, ``backends/stack.py``); :meth:`DovecotBackend.link` then
offers that Postfix's mechanisms on the auth socket too. Every refusal ends in a deny passdb with
``nodelay``, so a wrong password is answered in milliseconds, and the per-IP auth penalty is off: every
client arrives from one address (the relay's 127.0.0.2 in a sealed container, else the Docker gateway).

Rendering is pure (:func:`render`, from the templates in templates/dovecot/); :class:`DovecotBackend`
writes the files, starts the container and waits until every port passed a real exchange.

PYTEST_DONT_REWRITE
"""

from __future__ import annotations

import base64
import email.policy
import functools
import os
import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import mailbox
from ..mailbox import (
    MailboxState,
    StoredMessage,
    decode_mailbox_name,
    deliver_to_maildir,
    encode_mailbox_name,
    folder_dir,
    read_mailbox_state,
)
from ..manifest import Endpoint
from ..policy import Cell, CertProfile, Mode, Protocol, version_index
from ..templates import render as render_template
from ..tls import dh_params_files, dh_params_path
from .base import DeliveryLink
from .container import (
    FIRST_PORT,
    CertPaths,
    ContainerBackend,
    ContainerServer,
    Plan,
    PlanInput,
    check_render_input,
    container_ports,
)

if TYPE_CHECKING:
    from ..diagnose import Rule
    from ..runtime import Container
    from .stack import Peer

__all__ = [
    "AUTH_SOCKET",
    "FIRST_PORT",
    "LMTP_SOCKET",
    "MECHANISMS",
    "OAUTH_ISSUER",
    "CertPaths",
    "DovecotBackend",
    "DovecotServer",
    "MailboxState",
    "RenderedConfig",
    "StoredMessage",
    "cell_log_lines",
    "container_ports",
    "decode_mailbox_name",
    "deliver_to_maildir",
    "encode_mailbox_name",
    "mint_jwt",
    "prepare_sockets",
    "read_mailbox_state",
    "render",
    "sockets_dir",
    "unsupported_reason",
]

#: SASL mechanisms this backend can offer (passwords are stored plaintext-equivalent, tokens checked locally).
MECHANISMS = ("PLAIN", "LOGIN", "CRAM-MD5", "XOAUTH2", "OAUTHBEARER")
#: ``iss`` of the tokens :func:`mint_jwt` makes; Dovecot accepts no other issuer.
OAUTH_ISSUER = "pytest-mailtls"
_OAUTH_MECHANISMS = frozenset({"XOAUTH2", "OAUTHBEARER"})

# Where things are inside the container.
ETC = "/mailtls/etc"  # rendered configuration + PKI copies (read-only mount)
MAIL_ROOT = "/mailtls/mail"  # the test user's Maildir lives here (read-write mount of a host folder)
SOCKETS = "/mailtls/sockets"  # LMTP and auth sockets for a Postfix container (read-write mount)
MAILDIR = "Maildir"  # the user's Maildir (INBOX) under the mail root
AUTH_SOCKET = "auth"  # file names under SOCKETS (and under sockets_dir() on the host)
LMTP_SOCKET = "lmtp"
MAIL_UID = 5000  # the image's "mailtls" user: Dovecot refuses mail access as root, so root hosts get this one
LOGIN_WRAPPER = "/usr/local/bin/mailtls-login-env"
DH_FILE = "/usr/share/dovecot/dh.pem"  # shipped by dovecot-core; DHE suites (legacy cells) need it

# Certificates OpenSSL refuses to load below security level 0: the server must present them all the same.
_SERVICE_NAME = re.compile(r"[^A-Za-z0-9_-]")
#: The one name in the "refuse" deny passdb: every failed lookup ends there, without delay
#: (see templates/dovecot/dovecot.conf.j2).
_REFUSE_KEY = "refused"


# --------------------------------------------------------------------------- what cannot be served


def unsupported_reason(cell: Cell) -> str | None:
    """Why Dovecot cannot serve ``cell`` (a sentence), or ``None`` if it can."""
    if cell.protocol not in (Protocol.IMAP, Protocol.POP3):
        return f"Dovecot serves IMAP and POP3 here, not {cell.protocol} ({cell.service.name})"
    extra = [m for m in cell.auth.mechanisms if m not in MECHANISMS]
    if extra:
        return f"the Dovecot backend offers SASL mechanisms {', '.join(MECHANISMS)}, not {', '.join(extra)}"
    return None


# --------------------------------------------------------------------------- rendering (pure)


@dataclass(frozen=True)
class RenderedConfig:
    """Every file the container needs, by path relative to the mounted ``/mailtls/etc``."""

    files: dict[str, str]
    #: cell id -> login service name (the prefix of that cell's log lines: ``<name>: Info: ...``)
    services: dict[str, str]


def render(
    cells: Sequence[Cell],
    *,
    ports: Sequence[int],
    cert_files: Mapping[CertProfile, CertPaths],
    client_ca_file: str | None,
    username: str,
    password: str,
    oauth_key: bytes,
    mail_uid: int = MAIL_UID,
    mail_gid: int = MAIL_UID,
    extra_mechanisms: Sequence[str] = (),
) -> RenderedConfig:
    """Render dovecot.conf, one settings file per cell, the OpenSSL caps, the user and deny tables, OAuth2.

    ``ports`` are container-internal, one per cell; ``cert_files`` and ``client_ca_file`` are container
    paths. ``oauth_key`` is the HMAC key of the XOAUTH2/OAUTHBEARER tokens. ``mail_uid``/``mail_gid`` own
    the mail files (the host user's, so it can read and delete them). ``extra_mechanisms`` are offered on
    the auth socket besides the cells' own (a Postfix of the same stack needs its cells' mechanisms there;
    the cells keep refusing what they do not declare). Raises ``ValueError`` for a cell Dovecot cannot
    serve, an unknown mechanism or an unusable user name.
    """
    check_render_input(cells, ports, unsupported_reason, certs=cert_files, client_ca=bool(client_ca_file))
    if not username or any(ch in username for ch in ":/\r\n\t "):
        raise ValueError(f"the test user name must be non-empty without ':', '/' or whitespace, got {username!r}")
    if not password or any(ch in password for ch in "\r\n"):
        raise ValueError("the test password must be non-empty, on one line")
    if not oauth_key:
        raise ValueError("oauth_key must not be empty")
    unknown = [m for m in extra_mechanisms if m not in MECHANISMS]
    if unknown:
        raise ValueError(f"unknown SASL mechanisms {unknown}; Dovecot offers {', '.join(MECHANISMS)} here")
    if mail_uid <= 0 or mail_gid < 0:
        raise ValueError(f"mail_uid must be > 0 (Dovecot refuses mail access as root), got {mail_uid}")

    services = _service_names(cells)
    # The auth process offers one global list: the union of what the cells declare.
    wanted = {m for c in cells for m in c.auth.mechanisms} | set(extra_mechanisms)
    offered = [m for m in MECHANISMS if m in wanted] or ["PLAIN"]
    files: dict[str, str] = {}
    logins: list[dict[str, object]] = []
    caps: set[str] = set()
    deny_mech: list[str] = []
    deny_cert: list[str] = []
    for cell, port in zip(cells, ports, strict=True):
        name = services[cell.id]
        settings, cap = _cell_settings(cell, cert_files, client_ca_file)
        files[f"cells/{name}.env"] = settings
        if cap:
            caps.add(cap)
        logins.append(
            {
                "cell_id": cell.id,
                "name": name,
                "protocol": str(cell.protocol),
                "port": port,
                "implicit": cell.mode is Mode.IMPLICIT,
            }
        )
        # Keyed on protocol too: SASL requests from a Postfix sharing the auth socket carry its own ports.
        deny_mech += [f"{cell.protocol}/{port}/{m}" for m in offered if m not in cell.auth.mechanisms]
        if cell.auth.client_cert:
            deny_cert.append(f"{cell.protocol}/{port}/")  # %{cert} is "valid" only for a certificate from the client CA
    for version in sorted(caps, key=version_index):
        # Dovecot 2.3 has no ssl_max_protocol: an OpenSSL configuration caps the login processes that read it.
        files[f"openssl/max-{version}.cnf"] = render_template("dovecot/openssl-cap.cnf.j2", version=version)
    files |= dh_params_files(c.policy.dh_bits for c in cells if c.policy is not None)
    files["deny-mechanism"] = "".join(f"{key}:{{PLAIN}}deny\n" for key in deny_mech)
    files["deny-without-cert"] = "".join(f"{key}:{{PLAIN}}deny\n" for key in deny_cert)
    files["refuse"] = f"{_REFUSE_KEY}:{{PLAIN}}deny\n"
    encoded = base64.b64encode(password.encode()).decode()
    files["passwd"] = f"{username.lower()}:{{PLAIN.b64}}{encoded}\n"
    files["oauth2.conf.ext"] = render_template("dovecot/oauth2.conf.ext.j2", etc=ETC, issuer=OAUTH_ISSUER)
    # Looked up as shared/<azp>/<alg>/<kid>; tokens carry neither azp nor kid, so both are "default".
    files["oauth/default/HS256/default"] = base64.b64encode(oauth_key).decode()

    tls_cells = [c for c in cells if c.cert is not None]
    default_cert = cert_files[tls_cells[0].cert] if tls_cells and tls_cells[0].cert is not None else None
    protocols = [p for p in ("imap", "pop3") if any(str(c.protocol) == p for c in cells)]
    # Warnings at start otherwise: anvil and auth must take a connection from every login process.
    client_limit = max(1000, 4 * len(cells) + 500)
    files["dovecot.conf"] = render_template(
        "dovecot/dovecot.conf.j2",
        count=len(cells),
        protocols=protocols,
        default_cert=default_cert,
        mechanisms=offered,
        password_mechanisms=[m for m in offered if m not in _OAUTH_MECHANISMS],
        oauth_mechanisms=[m for m in offered if m in _OAUTH_MECHANISMS],
        deny_mechanism=bool(deny_mech),
        deny_without_cert=bool(deny_cert),
        mail_uid=mail_uid,
        mail_gid=mail_gid,
        client_limit=client_limit,
        logins=logins,
        etc=ETC,
        dh_file=DH_FILE,
        refuse_key=_REFUSE_KEY,
        mail_root=MAIL_ROOT,
        maildir=MAILDIR,
        sockets=SOCKETS,
        auth_socket=AUTH_SOCKET,
        lmtp_socket=LMTP_SOCKET,
        wrapper=LOGIN_WRAPPER,
    )
    return RenderedConfig(files=files, services=services)


def _service_names(cells: Sequence[Cell]) -> dict[str, str]:
    """Login service names: the cell id (it prefixes the cell's log lines), made safe and unique."""
    names: dict[str, str] = {}
    taken: set[str] = set()
    for index, cell in enumerate(cells):
        name = _SERVICE_NAME.sub("-", cell.id)
        if name in taken:
            name = f"{name}-{index}"
        taken.add(name)
        names[cell.id] = name
    return names


def _ssl_setting(cell: Cell) -> str:
    """Dovecot's ``ssl`` for the cell's login processes.

    ``required`` refuses every authentication (LOGIN, USER/PASS, AUTHENTICATE, any mechanism) until TLS is
    up and drops AUTH= from the pre-TLS capabilities: that is starttls-required, and also what a tls_only
    auth policy asks of a STARTTLS port ("AUTH advertised and accepted only after TLS").
    """
    if not cell.mode.tls:
        return "no"
    if cell.mode is Mode.STARTTLS_REQUIRED or (cell.mode is Mode.STARTTLS and cell.auth.tls_only):
        return "required"
    return "yes"


def _cipher_list(cell: Cell) -> str:
    assert cell.policy is not None
    ciphers = cell.policy.openssl_ciphers()
    if "@SECLEVEL" in ciphers:
        return ciphers
    # Level 0 for certificates OpenSSL would not even load at Debian's level 2; level 2 spelled out
    # otherwise, so processes with their own OPENSSL_CONF get the same level as the rest.
    return ciphers + (
        ":@SECLEVEL=0" if cell.cert is not None and cell.cert.fault.max_seclevel is not None else ":@SECLEVEL=2"
    )


def _cell_settings(
    cell: Cell, cert_files: Mapping[CertProfile, CertPaths], client_ca_file: str | None
) -> tuple[str, str | None]:
    """The cell's settings file for ``mailtls-login-env`` and the protocol cap it needs (or ``None``)."""
    lines = [
        f"# {cell.id}: read by {LOGIN_WRAPPER} (KEY=value, or KEY<file for file contents)",
        f"LOGIN_GREETING=mailtls {cell.id} ready.",
        f"SSL={_ssl_setting(cell)}",
        f"DISABLE_PLAINTEXT_AUTH={'yes' if cell.auth.tls_only else 'no'}",
    ]
    cap = None
    if cell.policy is not None and cell.cert is not None:
        policy, files = cell.policy, cert_files[cell.cert]
        lines += [
            f"SSL_MIN_PROTOCOL={policy.min_version}",
            f"SSL_CIPHER_LIST={_cipher_list(cell)}",
            f"SSL_CERT<{files.cert_file}",
            f"SSL_KEY<{files.key_file}",
        ]
        if policy.dh_bits is not None:
            # ssl_dh is a login process's own setting: this cell's environment overrides the global one.
            lines.append(f"SSL_DH<{ETC}/{dh_params_path(policy.dh_bits)}")
        if policy.ciphersuites:
            lines.append(f"SSL_CIPHER_SUITES={policy.ciphersuites}")
        if policy.max_version != "TLSv1.3":
            cap = policy.max_version
            lines.append(f"OPENSSL_CONF={ETC}/openssl/max-{cap}.cnf")
        if cell.auth.client_cert:
            # The handshake asks for a certificate and checks it against the client CA; a missing or
            # foreign one is refused at authentication (the deny-without-cert passdb).
            lines += [
                "SSL_VERIFY_CLIENT_CERT=yes",
                "AUTH_SSL_REQUIRE_CLIENT_CERT=yes",
                "SSL_REQUIRE_CRL=no",
                f"SSL_CA<{client_ca_file}",
            ]
    for line in lines[1:]:
        if "\n" in line or "\r" in line:
            raise ValueError(f"{cell.id}: a setting spans lines: {line!r}")
    return "\n".join(lines) + "\n", cap


# --------------------------------------------------------------------------- OAuth2 tokens


def mint_jwt(key: bytes, username: str, *, lifetime: float = 3600.0, now: float | None = None) -> str:
    """An HS256 JWT for ``username`` from Dovecot's issuer :data:`OAUTH_ISSUER` (:func:`mailbox.mint_jwt`)."""
    return mailbox.mint_jwt(key, username, issuer=OAUTH_ISSUER, lifetime=lifetime, now=now)


_SESSION = re.compile(r"session=<([^>]+)>")


def cell_log_lines(log: str, service: str) -> list[str]:
    """The lines of ``log`` about one cell: its login service's lines (``<service>: ...``), and the mail
    and auth processes' lines of the sessions that service started (found by session id)."""
    tag = f" {service}: "
    lines = log.splitlines()
    own = [line for line in lines if tag in line or line.startswith(f"{service}: ")]
    sessions = {m.group(1) for line in own for m in _SESSION.finditer(line)}
    if not sessions:
        return own
    wanted = [f"<{s}>" for s in sessions]
    return [line for line in lines if tag in line or line.startswith(f"{service}: ") or any(w in line for w in wanted)]


# --------------------------------------------------------------------------- the backend


def sockets_dir(workdir: str | os.PathLike[str]) -> Path:
    """Host folder where a Dovecot started with ``workdir`` puts its auth and LMTP sockets."""
    return Path(workdir) / "sockets"


def prepare_sockets(folder: Path) -> None:
    """Make ``folder`` an empty, world-writable socket folder (containers of any uid use it). A socket left
    by an earlier run would let a Postfix connect before this Dovecot listens, so old entries go."""
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o777)
    for entry in folder.iterdir():
        if entry.is_socket() or entry.is_file():
            entry.unlink(missing_ok=True)


class DovecotServer(ContainerServer[str]):
    """One Dovecot container serving many IMAP/POP3 cells, all on the test user's one Maildir.

    Its log is every Dovecot process's (they log to stdout); a cell's lines are its login service's, plus
    the mail and auth lines of the sessions that service started.
    """

    title = "Dovecot"

    def __init__(
        self,
        container: Container,
        endpoints: list[Endpoint],
        services: Mapping[str, str],
        workdir: Path,
        *,
        username: str,
        oauth_key: bytes,
    ) -> None:
        super().__init__(container, endpoints, workdir, services)
        self.username = username
        #: Host path of the test user's Maildir (INBOX); every cell's ``Endpoint.mailbox``.
        self.maildir = workdir / "mail" / MAILDIR
        self._oauth_key = oauth_key

    @property
    def lmtp_socket(self) -> Path:
        """Host path of Dovecot's LMTP socket (mount ``<workdir>/sockets`` into a Postfix container)."""
        return sockets_dir(self.workdir) / LMTP_SOCKET

    @property
    def auth_socket(self) -> Path:
        """Host path of Dovecot's auth (SASL) socket, for Postfix's ``smtpd_sasl_type = dovecot``."""
        return sockets_dir(self.workdir) / AUTH_SOCKET

    def log_lines(self, log: str, key: str) -> list[str]:
        """The lines of the cell whose login service is named ``key``, with those of its sessions."""
        return cell_log_lines(log, key)

    def mint_oauth_token(self, username: str | None = None, *, lifetime: float = 3600.0) -> str:
        """A bearer token this server accepts for XOAUTH2/OAUTHBEARER as ``username`` (default: the test
        user). Tokens for other names are refused at login, as are expired ones (negative ``lifetime``)."""
        return mint_jwt(self._oauth_key, username if username is not None else self.username, lifetime=lifetime)

    def deliver(self, message: EmailMessage | bytes, to: str | None = None, folder: str = "INBOX") -> Path:
        """Put ``message`` into the test user's ``folder`` before a test; return the file written.

        Every address is the test user's mailbox here (as LMTP delivers); ``to`` is recorded in a
        ``Delivered-To`` header. ``folder`` nests with ``.`` (``Archive.2024``) and is created if missing.
        """
        data = message if isinstance(message, bytes) else message.as_bytes(policy=email.policy.default)
        if to is not None:
            if not to or any(ch in to for ch in "\r\n"):
                raise ValueError(f"invalid recipient {to!r}")
            data = f"Delivered-To: {to}\n".encode() + data
        if not self.container.copies:
            return deliver_to_maildir(self.maildir, data, folder=folder)
        # Copy mode: the live Maildir is in the container. Send the new message alone (and a new folder whole):
        # what a pull brought here may be stale, and sending it back would undo the server's own changes.
        self.container.pull(self.maildir)
        root = folder_dir(self.maildir, folder)
        known = root.is_dir()
        written = deliver_to_maildir(self.maildir, data, folder=folder)
        self.container.push(written if known else root)
        return written

    def mailbox_state(self, folder: str = "INBOX") -> MailboxState:
        """Messages of ``folder`` with UIDs and flags, and the user's folders, as stored right now."""
        return read_mailbox_state(self.container.pull(self.maildir), folder)


@functools.cache
def _log_rules() -> tuple[Rule, ...]:
    """Dovecot's log vocabulary for the diagnosis: what its lines about a failed connection mean."""
    from ..diagnose import CERT_CLASSES, OPENSSL_SERVER, rule

    return (
        rule(r"auth failed, \d+ attempts|Authentication failure|Password mismatch", "auth-failed", weight=5),
        rule(r"Plaintext authentication disallowed|disallowed plaintext auth", "starttls-required", weight=5),
        rule(
            r"didn't present valid SSL certificate|Client didn't present|No certificate was found",
            "client-certificate-required",
            weight=5,
        ),
        rule(r"Disconnected \(no auth attempts", *CERT_CLASSES, hint=True),
        *OPENSSL_SERVER,
    )


class DovecotBackend(ContainerBackend):
    """Real Dovecot 2.3 (Debian bookworm) in Docker, one container for all Dovecot cells.

    ``extra_mechanisms``: SASL mechanisms to offer on the auth socket besides the cells' own, for a
    Postfix that authenticates through it. :meth:`link` sets them from a Postfix of the same grid.
    """

    name = "dovecot"
    needs_docker = True
    title = "Dovecot"
    services = ("imap", "imaps", "pop3", "pop3s")
    etc_path, mail_path, mail_uid = ETC, MAIL_ROOT, MAIL_UID
    remedies = {
        "versions": "ssl_min_protocol = TLSv1.2",
        "chain": "ssl_cert = </path/fullchain.pem (leaf, then intermediates)",
        "tls": "ssl = yes (or required) with ssl_cert/ssl_key",
    }

    @classmethod
    def log_rules(cls) -> tuple[Rule, ...]:
        return _log_rules()

    def cell_log_lines(self, log: str, key: Any) -> list[str]:
        return cell_log_lines(log, key)

    def __init__(self, *, extra_mechanisms: Sequence[str] = ()) -> None:
        self.extra_mechanisms: tuple[str, ...] = tuple(extra_mechanisms)

    def link(self, peers: Mapping[str, Peer]) -> None:
        """Before a grid starts (``peers``: every server of it, this one included): offer to take the mail
        and SASL of the others (a Postfix accepts: :meth:`Backend.accept_delivery`), offer the mechanisms of
        the cells that authenticate through this Dovecot too, and empty the socket folder now, so that no
        server meets a stale socket of an earlier run."""
        me = next((p for p in peers.values() if p.backend is self), None)
        if me is None:
            return
        link = DeliveryLink(sockets_dir(me.workdir), me.started)
        users = [p for p in peers.values() if p is not me and p.backend.accept_delivery(link, p.cells)]
        if not users:
            return
        wanted = set(self.extra_mechanisms) | {m for p in users for c in p.cells for m in c.auth.mechanisms}
        self.extra_mechanisms = tuple(m for m in MECHANISMS if m in wanted)
        prepare_sockets(link.sockets)

    def unsupported(self, cell: Cell) -> str | None:
        """Why Dovecot cannot serve ``cell``, or ``None``."""
        if cell.server != self.name:
            return f"the Dovecot backend serves dovecot cells, not {cell.server}"
        return unsupported_reason(cell)

    def plan(self, given: PlanInput) -> Plan:
        oauth_key = secrets.token_bytes(32)
        config = render(
            given.cells,
            oauth_key=oauth_key,
            extra_mechanisms=self.extra_mechanisms,
            **given.render_args(),
        )
        sockets = sockets_dir(given.workdir)
        return Plan(
            files=config.files,
            maildirs=[MAILDIR],
            mailbox=lambda cell: MAILDIR,
            cell_keys=config.services,
            extra=lambda cell, port: {"service": config.services[cell.id]},
            shared={sockets: SOCKETS},
            prepare=lambda: prepare_sockets(sockets),
            keep={"oauth_key": oauth_key},
        )

    def serve(self, container: Container, endpoints: list[Endpoint], plan: Plan, given: PlanInput) -> DovecotServer:
        return DovecotServer(
            container,
            endpoints,
            plan.cell_keys,
            given.workdir,
            username=given.options.username,
            oauth_key=plan.keep["oauth_key"],
        )
