"""Postfix: one container serves every selected Postfix cell, each on its own port.

Each cell is one ``master.cf`` smtpd service with ``-o`` overrides (protocols,
ciphers, TLS 1.3 suites, certificate, TLS mode, SASL, client certificates),
its own ``syslog_name`` (so its log lines can be told apart) and its own
cleanup service, whose ``virtual_alias_maps`` rewrites every recipient to a
per-cell capture address. The virtual delivery agent then writes the message
into that cell's Maildir, a bind-mounted host folder. Nothing is ever relayed
(every non-virtual transport is ``error``) and nothing is looked up in DNS.
SMTP AUTH is Cyrus SASL inside smtpd, checking a sasldb made at container start.

Combined with Dovecot (the mail flow: a :class:`DovecotLink` that Dovecot offers and
:meth:`PostfixBackend.accept_delivery` takes when a grid serves both), SMTP AUTH is answered by Dovecot's auth socket (``smtpd_sasl_type = dovecot``) and each
cell's cleanup rewrites every recipient to TWO addresses: the cell's capture address, as above (so
``Endpoint.messages()`` still shows what that cell received), and the test user's address, which the
``lmtp`` transport hands to Dovecot's LMTP socket (so IMAP/POP3 cells read it). Each message also carries
an ``X-Mailtls-Cell`` header naming the Postfix cell that accepted it. Both sockets live in a host folder
of the Dovecot's, mounted into this container; the entrypoint starts Postfix only once they exist.

Rendering is pure (:func:`render`, from the templates in templates/postfix/); :class:`PostfixBackend`
writes the files, starts the container and waits until every port passed a real exchange.

PYTEST_DONT_REWRITE
"""

from __future__ import annotations

import functools
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent import futures
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ServerStartError
from ..manifest import Endpoint
from ..policy import VERSIONS, Cell, CertProfile, Mode, Protocol
from ..templates import render as render_template
from ..tls import dh_params_files, dh_params_path
from .base import DeliveryLink, StartOptions
from .container import (
    FIRST_PORT,
    CertPaths,
    ContainerBackend,
    ContainerServer,
    Plan,
    PlanInput,
    check_render_input,
    container_ports,
    exited,
    safe_logs,
)

if TYPE_CHECKING:
    from ..diagnose import Rule
    from ..runtime import Container

__all__ = [
    "CAPTURE_DOMAIN",
    "CELL_HEADER",
    "FIRST_PORT",
    "MECHANISMS",
    "DovecotHandoff",
    "DovecotLink",
    "PostfixBackend",
    "PostfixServer",
    "RenderedConfig",
    "ServiceFiles",
    "cell_log_lines",
    "container_ports",
    "render",
    "unsupported_reason",
]

#: Mail domain of the per-cell capture addresses (``<cell id>@capture.mailtls.invalid``); never a real one.
CAPTURE_DOMAIN = "capture.mailtls.invalid"
#: Maildir (under the mail root) for mail no cell received: bounces, ``sendmail`` inside the container.
UNATTRIBUTED = "unattributed"
#: SASL mechanisms Cyrus offers here (sasldb keeps the password in plaintext, so CRAM-MD5 works).
MECHANISMS = ("PLAIN", "LOGIN", "CRAM-MD5")
#: SASL realm of a user name without "@" (Cyrus looks users up as user@realm).
LOCAL_REALM = "local.mailtls.invalid"
#: Header each message gets in the combined stack: the id of the Postfix cell that accepted it.
CELL_HEADER = "X-Mailtls-Cell"
#: Mail domain of a test user name without "@" (as ``Endpoint.address`` spells it).
USER_DOMAIN = "mailtls.test"

# Where things are inside the container.
ETC = "/mailtls/etc"  # rendered configuration + PKI copies (read-only mount)
MAIL_ROOT = "/mailtls/mail"  # one Maildir per cell (read-write mount of a host folder)
POSTFIX_ETC = "/etc/postfix"  # the entrypoint copies ETC/postfix/* here
SOCKETS = "/mailtls/sockets"  # combined stack: the Dovecot's socket folder (read-write mount)
MAIL_UID = 5000  # the image's "mailtls" user: virtual(8) refuses uid 0, so root hosts get this one

_SAFE_VALUE = re.compile(r"^[^\s{}]*$")
# What a stack mailbox may hold: it is written into a regexp map (no "$"), a texthash map and main.cf.
_ADDRESS = re.compile(r"^[A-Za-z0-9.!#%&*+=?^_`|~-]+@[A-Za-z0-9.-]+$")


# --------------------------------------------------------------------------- what cannot be served


def unsupported_reason(cell: Cell) -> str | None:
    """Why Postfix cannot serve ``cell`` (a sentence), or ``None`` if it can."""
    if cell.protocol is not Protocol.SMTP:
        return f"Postfix speaks SMTP only, not {cell.protocol} ({cell.service.name})"
    extra = [m for m in cell.auth.mechanisms if m not in MECHANISMS]
    if extra:
        return (
            f"the Postfix backend offers SASL mechanisms {', '.join(MECHANISMS)} (Cyrus sasldb); "
            f"{', '.join(extra)} would need an OAuth token service"
        )
    if cell.auth.client_cert:
        if cell.mode not in (Mode.STARTTLS_REQUIRED, Mode.IMPLICIT):
            return (
                "Postfix only demands client certificates with enforced TLS (smtpd_tls_req_ccert needs "
                "smtpd_tls_security_level=encrypt): use mode starttls-required or implicit"
            )
        assert cell.policy is not None
        if cell.policy.legacy:
            return (
                "Postfix raises OpenSSL's security level to 1 when it requires a client certificate, so "
                f"TLSv1/TLSv1.1 (policy {cell.policy.name}) cannot be negotiated together with mutual TLS"
            )
    return None


# --------------------------------------------------------------------------- rendering (pure)


#: Container paths of one certificate profile's files, as ``smtpd_tls_chain_files`` wants them.
ServiceFiles = CertPaths


@dataclass(frozen=True)
class DovecotHandoff:
    """The combined stack as :func:`render` needs it: every message also goes to ``mailbox`` over LMTP,
    and SASL is Dovecot's. Socket paths are container paths."""

    mailbox: str  # the test user's address: LMTP recipient of every accepted message
    auth_socket: str = f"{SOCKETS}/auth"
    lmtp_socket: str = f"{SOCKETS}/lmtp"


@dataclass(frozen=True)
class RenderedConfig:
    """Every file the container needs, by path relative to the mounted ``/mailtls/etc``."""

    files: dict[str, str]
    #: cell id -> Maildir folder name under the mail root
    maildirs: dict[str, str]
    #: cell id -> ``syslog_name`` of its services (log lines read ``<syslog_name>/smtpd[pid]: ...``)
    syslog_names: dict[str, str]


def render(
    cells: Sequence[Cell],
    *,
    ports: Sequence[int],
    cert_files: Mapping[CertProfile, ServiceFiles],
    client_ca_file: str | None,
    username: str,
    password: str,
    mail_uid: int = MAIL_UID,
    mail_gid: int = MAIL_UID,
    hostname: str = "mail.mailtls.test",
    dovecot: DovecotHandoff | None = None,
) -> RenderedConfig:
    """Render main.cf, master.cf, the maps, the OpenSSL configuration and the SASL (Cyrus) files.

    ``ports`` are container-internal, one per cell; ``cert_files`` and ``client_ca_file`` are container
    paths. ``mail_uid``/``mail_gid`` own the delivered files (the host user's, so it can read and delete
    them). With ``dovecot`` (the combined stack) SASL goes to Dovecot's auth socket instead of Cyrus, and
    every message also goes to ``dovecot.mailbox`` over LMTP. Raises ``ValueError`` for a cell Postfix
    cannot serve or an unusable user name/password/mailbox.
    """
    check_render_input(cells, ports, unsupported_reason, certs=cert_files, client_ca=bool(client_ca_file))
    if not username or any(ch.isspace() or ch in ":/'\"\\" for ch in username) or username.count("@") > 1:
        raise ValueError(f"unusable test user name {username!r}: no whitespace, quotes, ':' or '/', one '@' at most")
    if not password or "\n" in password or "\r" in password:
        raise ValueError("the test password must be non-empty and on one line")
    if mail_uid <= 0 or mail_gid < 0:
        raise ValueError(f"mail_uid must be > 0 (virtual(8) refuses root), got {mail_uid}")
    if dovecot is not None:
        local, at, domain = dovecot.mailbox.partition("@")
        if not local or not at or "@" in domain or not _ADDRESS.match(dovecot.mailbox):
            raise ValueError(f"unusable stack mailbox {dovecot.mailbox!r}: one user@domain address, no specials")
        for path in (dovecot.auth_socket, dovecot.lmtp_socket):
            if not path.startswith("/") or not _SAFE_VALUE.match(path) or "," in path:
                raise ValueError(f"socket paths must be absolute, without spaces or commas: {path!r}")

    maildirs = {cell.id: cell.id for cell in cells}
    syslog_names = {cell.id: f"postfix/{cell.id}" for cell in cells}
    master: list[_MasterService] = []
    openssl_sections: list[tuple[str, str]] = []
    for index, (cell, port) in enumerate(zip(cells, ports, strict=True)):
        suites_name = f"mailtls_cell{index}" if cell.policy is not None and cell.policy.ciphersuites else None
        if suites_name:
            assert cell.policy is not None and cell.policy.ciphersuites is not None
            openssl_sections.append((suites_name, cell.policy.ciphersuites))
        master.append(
            _service(
                cell,
                index=index,
                port=port,
                syslog_name=syslog_names[cell.id],
                cert=cert_files.get(cell.cert) if cell.cert is not None else None,
                client_ca_file=client_ca_file,
                openssl_name=suites_name,
                stack=dovecot is not None,
            )
        )
    mailboxes = [f"{UNATTRIBUTED}@{CAPTURE_DOMAIN} {UNATTRIBUTED}/"]
    mailboxes += [f"{_capture_address(cell)} {maildirs[cell.id]}/" for cell in cells]
    files = {
        "postfix/main.cf": _main_cf(hostname=hostname, uid=mail_uid, gid=mail_gid, dovecot=dovecot),
        "postfix/master.cf": render_template("postfix/master.cf.j2", services=master, stack=dovecot is not None),
        "postfix/mailboxes": "\n".join(mailboxes) + "\n",
        "postfix/auth-required.regexp": "/^/ 530 5.7.0 Authentication required\n",
        "postfix/openssl.cnf": render_template("postfix/openssl.cnf.j2", sections=openssl_sections),
        **dh_params_files(c.policy.dh_bits for c in cells if c.policy is not None),
    }
    if dovecot is None:
        files["sasl/smtpd.conf"] = render_template("postfix/smtpd.conf.j2")
        files.update(_sasl_user_files(username, password))
    else:
        files["postfix/transport"] = f"{dovecot.mailbox} lmtp:unix:{dovecot.lmtp_socket}\n"
        # Read by the entrypoint: Postfix starts once Dovecot's sockets exist (smtpd dies without auth).
        files["wait-for-sockets"] = f"{dovecot.auth_socket}\n{dovecot.lmtp_socket}\n"
        for index, cell in enumerate(cells):
            # Every recipient becomes two: the cell's capture address and the test user (delivered by LMTP).
            # Postfix expands an address into itself once and drops duplicates, so both stay single.
            files[f"postfix/cell-{index}.alias"] = f"/^/ {_capture_address(cell)}, {dovecot.mailbox}\n"
            files[f"postfix/cell-{index}.header"] = f"/^/ PREPEND {CELL_HEADER}: {cell.id}\n"
    return RenderedConfig(files=files, maildirs=maildirs, syslog_names=syslog_names)


def _capture_address(cell: Cell) -> str:
    return f"{cell.id}@{CAPTURE_DOMAIN}"


def _opt(name: str, value: str) -> str:
    """One ``-o`` line; values with spaces need master.cf's ``{ name = value }`` form (Postfix 3.0+)."""
    if _SAFE_VALUE.match(value):
        return f"  -o {name}={value}"
    if "{" in value or "}" in value or "\n" in value:
        raise ValueError(f"{name}: value {value!r} cannot be written into master.cf")
    return f"  -o {{ {name} = {value} }}"


def _protocols(min_version: str, max_version: str) -> str:
    # Postfix 3.6+ range syntax; an open top end keeps working if OpenSSL gains a version.
    if max_version == VERSIONS[-1]:
        return f">={min_version}"
    return f">={min_version},<={max_version}"


def _service(
    cell: Cell,
    *,
    index: int,
    port: int,
    syslog_name: str,
    cert: ServiceFiles | None,
    client_ca_file: str | None,
    openssl_name: str | None,
    stack: bool = False,
) -> _MasterService:
    cleanup = f"cleanup-{index}"
    opts: list[tuple[str, str]] = [("syslog_name", syslog_name), ("cleanup_service_name", cleanup)]
    if cell.mode is Mode.PLAIN:
        opts.append(("smtpd_tls_security_level", "none"))
    else:
        policy = cell.policy
        assert policy is not None and cert is not None
        level = "may" if cell.mode is Mode.STARTTLS else "encrypt"
        opts.append(("smtpd_tls_security_level", level))
        if cell.mode is Mode.IMPLICIT:
            opts.append(("smtpd_tls_wrappermode", "yes"))
        opts.append(("smtpd_tls_chain_files", f"{cert.key_file},{cert.cert_file}"))
        # "may" obeys smtpd_tls_protocols, "encrypt" and wrapper mode the mandatory one: set both alike.
        protocols = _protocols(policy.min_version, policy.max_version)
        opts += [("smtpd_tls_protocols", protocols), ("smtpd_tls_mandatory_protocols", protocols)]
        if policy.ciphers is not None or policy.legacy:
            # Both grades point at "high", whose list this service alone overrides; legacy lists
            # carry @SECLEVEL=0 so OpenSSL 3 signs TLSv1/1.1 handshakes at all.
            opts += [
                ("smtpd_tls_ciphers", "high"),
                ("smtpd_tls_mandatory_ciphers", "high"),
                ("tls_high_cipherlist", policy.openssl_ciphers()),
            ]
        if policy.dh_bits is not None:
            # The policy's DH group for DHE suites, this listener only (Postfix's default is OpenSSL's own choice).
            opts.append(("smtpd_tls_dh1024_param_file", f"{ETC}/{dh_params_path(policy.dh_bits)}"))
        if openssl_name is not None:
            # TLS 1.3 suites have no Postfix parameter: an OpenSSL config section chosen per listener.
            opts += [("tls_config_file", f"{POSTFIX_ETC}/openssl.cnf"), ("tls_config_name", openssl_name)]
        if cell.auth.client_cert:
            assert client_ca_file is not None
            opts += [
                ("smtpd_tls_ask_ccert", "yes"),
                ("smtpd_tls_req_ccert", "yes"),
                ("smtpd_tls_CAfile", client_ca_file),
            ]
    auth = cell.auth
    if auth.mechanisms:
        opts += [
            ("smtpd_sasl_auth_enable", "yes"),
            # On a plain cell, tls_only means AUTH is never offered: that is what the policy says.
            ("smtpd_tls_auth_only", "yes" if auth.tls_only else "no"),
            ("smtpd_sasl_mechanism_filter", ",".join(m.lower() for m in auth.mechanisms)),
        ]
    else:
        opts.append(("smtpd_sasl_auth_enable", "no"))
    if auth.required:
        # Refuse MAIL (not only RCPT) before AUTH, with RFC 4954's 530.
        permit = "permit_sasl_authenticated"
        if auth.client_cert and not auth.mechanisms:
            permit = "permit_tls_all_clientcerts"
        opts += [
            ("smtpd_delay_reject", "no"),
            ("smtpd_sender_restrictions", f"{permit},check_client_access,regexp:{POSTFIX_ETC}/auth-required.regexp"),
        ]
    else:
        # Anyone may send, to any recipient: every client counts as "my network" on this port only.
        opts.append(("mynetworks", "0.0.0.0/0"))
    if stack:
        # PREPEND from a client access table at DATA: once per message, whatever its headers.
        opts.append(("smtpd_data_restrictions", f"check_client_access,regexp:{POSTFIX_ETC}/cell-{index}.header"))
    aliases = f"regexp:{POSTFIX_ETC}/cell-{index}.alias" if stack else f"static:{_capture_address(cell)}"
    return _MasterService(
        cell_id=cell.id,
        port=port,
        smtpd_options=[_opt(name, value) for name, value in opts],
        cleanup=cleanup,
        cleanup_options=[_opt("syslog_name", syslog_name), _opt("virtual_alias_maps", aliases)],
    )


@dataclass(frozen=True)
class _MasterService:
    """A cell's two master.cf services (templates/postfix/master.cf.j2): its smtpd and its cleanup."""

    cell_id: str
    port: int
    smtpd_options: list[str]  # the -o lines
    cleanup: str
    cleanup_options: list[str]


def _sasl_user_files(username: str, password: str) -> dict[str, str]:
    # Cyrus splits "user@realm" and looks up (user, realm) in sasldb; a bare name gets LOCAL_REALM, which
    # smtpd_sasl_local_domain hands to Cyrus for bare names. The entrypoint reads these with saslpasswd2.
    user, _, realm = username.partition("@")
    return {"sasl-user": user, "sasl-realm": realm or LOCAL_REALM, "sasl-password": password}


def _main_cf(*, hostname: str, uid: int, gid: int, dovecot: DovecotHandoff | None = None) -> str:
    domains = [CAPTURE_DOMAIN]
    if dovecot is not None:
        domain = dovecot.mailbox.partition("@")[2].lower()
        if domain != CAPTURE_DOMAIN:
            domains.append(domain)
    return render_template(
        "postfix/main.cf.j2",
        hostname=hostname,
        uid=uid,
        gid=gid,
        min_uid=min(uid, 100),
        capture=CAPTURE_DOMAIN,
        domains=domains,
        unattributed=UNATTRIBUTED,
        mail_root=MAIL_ROOT,
        etc=POSTFIX_ETC,
        local_realm=LOCAL_REALM,
        dovecot=dovecot,
    )


# --------------------------------------------------------------------------- logs


# Postfix queue ids: short (upper-case hex) or long (no vowels, a "z" between time and inode parts).
# Neither matches NOQUEUE or a word such as "warning".
_QUEUE_ID = re.compile(
    r"\]: ([0-9A-F]{6,}|[0-9B-DF-HJ-NP-TV-Zb-df-hj-np-tv-z]{10,}z[0-9B-DF-HJ-NP-TV-Zb-df-hj-np-tv-y]+): "
)


def cell_log_lines(log: str, syslog_name: str) -> list[str]:
    """The lines of ``log`` about one cell: those of its services, and the queue-manager and delivery
    lines of the messages it accepted (found by queue id)."""
    tag = f" {syslog_name}/"
    own = [line for line in log.splitlines() if tag in line]
    queue_ids = {m.group(1) for line in own if (m := _QUEUE_ID.search(line))}
    if not queue_ids:
        return own
    out = []
    for line in log.splitlines():
        if tag in line:
            out.append(line)
            continue
        m = _QUEUE_ID.search(line)
        if m and m.group(1) in queue_ids:
            out.append(line)
    return out


# --------------------------------------------------------------------------- the backend


#: ``smtpd_sasl_type`` with a :class:`DovecotLink`: Postfix's own word for the protocol of its auth socket.
SASL_TYPE = "dovecot"

#: The Dovecot a Postfix hands mail and SASL to (the combined stack): a :class:`~.base.DeliveryLink`.
DovecotLink = DeliveryLink


class PostfixServer(ContainerServer[str]):
    """One Postfix container serving many cells.

    Its log is Postfix's maillog (SASL failures included); a cell's lines are those of its smtpd and
    cleanup services plus the queue and delivery lines of its mail. In the combined stack (``dovecot`` is
    set) each endpoint's ``messages()`` is still what that cell accepted (its capture Maildir); the same
    messages are in the Dovecot user's INBOX, with a :data:`CELL_HEADER` header naming the cell.
    """

    title = "Postfix"

    def __init__(
        self,
        container: Container,
        endpoints: list[Endpoint],
        syslog_names: Mapping[str, str],
        workdir: Path,
        dovecot: DovecotLink | None = None,
    ) -> None:
        super().__init__(container, endpoints, workdir, syslog_names)
        self.dovecot = dovecot

    def log_lines(self, log: str, key: str) -> list[str]:
        """The lines of the cell whose services log as ``key`` (its ``syslog_name``)."""
        return cell_log_lines(log, key)


@functools.cache
def _log_rules() -> tuple[Rule, ...]:
    """Postfix's log vocabulary for the diagnosis: what its lines about a failed connection mean."""
    from ..diagnose import CERT_CLASSES, OPENSSL_SERVER, rule

    return (
        rule(r"SASL \w+ authentication failed", "auth-failed", weight=5),
        rule(r"Must issue a STARTTLS command first", "starttls-required", weight=5),
        rule(
            r"No client certificate presented|client certificate verification failed",
            "client-certificate-required",
            weight=5,
        ),
        rule(r"non-SMTP command from .*\\x16|improper command pipelining after CONNECT", "wrong-tls-mode"),
        rule(r"lost connection after STARTTLS", *CERT_CLASSES, "client-certificate-required", hint=True),
        rule(r"Relay access denied|Authentication required", "auth-failed", "starttls-required"),
        *OPENSSL_SERVER,
    )


class PostfixBackend(ContainerBackend):
    """Real Postfix 3.7 (Debian bookworm) in Docker, one container for all Postfix cells.

    Alone it authenticates with Cyrus SASL and captures mail per cell. With ``dovecot`` (or after
    :meth:`accept_delivery` from a Dovecot of the same grid) it is the front of the combined stack.
    """

    name = "postfix"
    needs_docker = True
    title = "Postfix"
    services = ("smtp", "submission", "smtps")
    etc_path, mail_path, mail_uid = ETC, MAIL_ROOT, MAIL_UID
    remedies = {
        "versions": "smtpd_tls_protocols / smtpd_tls_mandatory_protocols = >=TLSv1.2",
        "chain": "smtpd_tls_chain_files = key.pem, cert.pem, intermediate.pem",
        "tls": "smtpd_tls_security_level = may (or encrypt) with a certificate",
    }

    @classmethod
    def log_rules(cls) -> tuple[Rule, ...]:
        return _log_rules()

    def cell_log_lines(self, log: str, key: Any) -> list[str]:
        return cell_log_lines(log, key)

    def __init__(self, *, dovecot: DovecotLink | None = None) -> None:
        self.dovecot = dovecot

    def accept_delivery(self, link: DeliveryLink, cells: Sequence[Cell]) -> bool:
        """A server of the grid takes mail and SASL (a Dovecot): hand them to it; this start then waits for
        that server's sockets (and its start)."""
        self.dovecot = link
        return True

    def unsupported(self, cell: Cell) -> str | None:
        """Why Postfix cannot serve ``cell``, or ``None``."""
        if cell.server != self.name:
            return f"the Postfix backend serves postfix cells, not {cell.server}"
        return unsupported_reason(cell)

    def plan(self, given: PlanInput) -> Plan:
        options, link = given.options, self.dovecot
        handoff = None if link is None else DovecotHandoff(link.mailbox or _address(options.username))
        config = render(
            given.cells,
            dovecot=handoff,
            **given.render_args(),
        )

        def extra(cell: Cell, port: int) -> dict[str, object]:
            out: dict[str, object] = {"syslog_name": config.syslog_names[cell.id]}
            if handoff is not None:
                # Postfix's name for the SASL protocol on the link's auth socket (smtpd_sasl_type).
                out.update(delivers_to=handoff.mailbox, sasl=SASL_TYPE)
            return out

        plan = Plan(
            files=config.files,
            maildirs=[UNATTRIBUTED, *config.maildirs.values()],
            mailbox=lambda cell: config.maildirs[cell.id],
            cell_keys=config.syslog_names,
            extra=extra,
        )
        if link is None:
            return plan

        def check_link() -> None:
            if link.started is None and not (link.sockets / "auth").is_socket():
                raise ServerStartError(
                    f"no Dovecot auth socket in {link.sockets}: start the Dovecot of this stack first "
                    "(DovecotBackend().start), or start both through pytest_mailtls.grid.Grid"
                )

        return replace(
            plan,
            shared={link.sockets: SOCKETS},
            # The entrypoint's own limit on waiting for the sockets; this process watches the Dovecot's start.
            environment={"MAILTLS_WAIT_SECONDS": str(int(max(options.ready_timeout, 600)))},
            prepare=check_link,
            ready=functools.partial(_ready_with_dovecot, link, options),
        )

    def serve(self, container: Container, endpoints: list[Endpoint], plan: Plan, given: PlanInput) -> PostfixServer:
        return PostfixServer(container, endpoints, plan.cell_keys, given.workdir, self.dovecot)


def _ready_with_dovecot(
    link: DovecotLink, options: StartOptions, container: Container, endpoints: list[Endpoint], started: float
) -> None:
    """Wait for the Dovecot's sockets, then for every port, then (ready means the flow works) for the
    Dovecot's own start; fail at once when either container dies or the Dovecot's start fails."""
    from ..readiness import wait_ready

    container_alive = exited(container, "Postfix")

    def alive() -> str | None:
        failure = _dovecot_failure(link)
        return failure if failure is not None else container_alive()

    _await_sockets(link, alive, options.cancel)
    wait_ready(endpoints, timeout=options.ready_timeout, logs=container.logs, alive=alive, cancel=options.cancel)
    if link.started is not None:
        # Ready means the flow works: the Dovecot's IMAP/POP3 and LMTP side must be up too.
        deadline = time.monotonic() + max(1.0, options.ready_timeout - (time.monotonic() - started))
        while not link.started.done():
            _raise_if_cancelled(options.cancel)
            if time.monotonic() >= deadline:
                raise ServerStartError(
                    "the Dovecot this Postfix hands mail to did not finish starting in time", safe_logs(container)
                )
            futures.wait([link.started], timeout=0.05)
        failure = link.started.exception()
        if failure is not None:
            raise ServerStartError(
                f"the Dovecot this Postfix hands mail to failed: {failure}", safe_logs(container)
            ) from failure


def _dovecot_failure(link: DovecotLink) -> str | None:
    """Why the Dovecot's start failed, once it has; ``None`` while it runs or after it succeeded."""
    if link.started is not None and link.started.done():
        failure = link.started.exception()
        if failure is not None:
            return f"the Dovecot it hands mail to did not start ({type(failure).__name__}: {failure})"
    return None


def _raise_if_cancelled(cancel: threading.Event | None) -> None:
    from ..runtime import StartCancelled, _closing

    if _closing.is_set() or (cancel is not None and cancel.is_set()):
        raise StartCancelled("Postfix start cancelled")


def _address(username: str) -> str:
    """The test user's mail address, as ``Endpoint.address`` spells it."""
    return username if "@" in username else f"{username}@{USER_DOMAIN}"


def _await_sockets(link: DovecotLink, alive: Callable[[], str | None], cancel: threading.Event | None = None) -> None:
    """Wait until the Dovecot's sockets exist (the entrypoint waits for them too, inside the container).

    No deadline of its own: the wait ends when the sockets appear, the Dovecot's start ends (its own
    deadlines bound it), this container dies, or ``cancel`` is set."""
    from ..runtime import copies_files

    wanted = [link.sockets / "auth", link.sockets / "lmtp"]
    if copies_files():
        # The folder is a volume on the engine: this host cannot see the sockets. A started Dovecot made them
        # (its readiness needs its login services), and the entrypoint inside the container checks again.
        wanted = []
        while link.started is None or not link.started.done():
            _raise_if_cancelled(cancel)
            if link.started is None:
                raise ServerStartError(f"no Dovecot sockets in {link.sockets}: start that Dovecot first")
            gone = alive()
            if gone:
                raise ServerStartError(f"Postfix gave up waiting for Dovecot's sockets in {link.sockets}: {gone}")
            time.sleep(0.02)
        failure = _dovecot_failure(link)
        if failure:
            raise ServerStartError(f"Postfix gave up waiting for Dovecot's sockets in {link.sockets}: {failure}")
    while not all(p.is_socket() for p in wanted):
        _raise_if_cancelled(cancel)
        if link.started is None:
            raise ServerStartError(f"no Dovecot sockets in {link.sockets}: start that Dovecot first")
        # Read the Dovecot's outcome ONCE per round, before anything else: it may end at any moment, and a
        # failure seen as "done" after a check that found it still running must still be named as such.
        finished = link.started.done()
        gone = _dovecot_failure(link) if finished else alive()
        if gone:
            raise ServerStartError(f"Postfix gave up waiting for Dovecot's sockets in {link.sockets}: {gone}")
        if finished and not all(p.is_socket() for p in wanted):
            missing = [str(p) for p in wanted if not p.is_socket()]
            raise ServerStartError(f"Dovecot started but these sockets are missing: {', '.join(missing)}")
        time.sleep(0.02)
