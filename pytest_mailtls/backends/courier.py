"""Courier IMAP and POP3: one container serves every selected Courier cell, each on its own port.

Courier runs a protocol server under ``couriertcpd``, which reads its settings from the environment (Debian's
start scripts source ``/etc/courier/imapd`` and ``imapd-ssl`` into it). So each cell is its own ``couriertcpd``
started with the cell's own environment (:func:`render` writes one file per cell; the image's entrypoint sources
it): its port, ``imaplogin``/``courierpop3login``, STARTTLS on or off (``IMAP_STARTTLS``/``POP3_STARTTLS``),
required or not (``IMAP_TLS_REQUIRED``/``POP3_TLS_REQUIRED``: LOGINDISABLED and no login before STARTTLS), the
mechanisms advertised before and after TLS (``IMAP_CAPABILITY``/``IMAP_CAPABILITY_TLS``,
``POP3AUTH``/``POP3AUTH_TLS``), and the TLS settings ``couriertls`` reads. Implicit cells run ``couriertls -server
-tcpd`` in front of the login process (``IMAP_TLS=1``/``POP3_TLS=1``), as Debian's ``imapd-ssl`` does.

Debian builds ``couriertls`` against GnuTLS, not OpenSSL: it reads ``TLS_PRIORITY`` (a GnuTLS priority string)
and ignores the OpenSSL build's ``TLS_PROTOCOL``, ``TLS_STARTTLS_PROTOCOL`` and ``TLS_CIPHER_LIST``.
:func:`gnutls_priority` turns a cell's policy into one; a cipher list whose key exchanges, ciphers and MACs a
priority string cannot select without also allowing other suites is refused (:func:`unsupported_reason`).
``TLS_CERTFILE`` is the presented chain and ``TLS_PRIVATE_KEYFILE`` its key; mutual TLS is
``TLS_VERIFYPEER=REQUIREPEER`` with ``TLS_TRUSTCERTS`` the client CA (no certificate, no handshake).

Logins go to ``authdaemond`` with the userdb module: one user, the test user, its password stored as
``{SHA256}`` (courier-authlib checks it), its Maildir the bind-mounted host folder every cell shares.

PYTEST_DONT_REWRITE
"""

from __future__ import annotations

import base64
import functools
import hashlib
import re
import shlex
import ssl
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..manifest import Endpoint
from ..policy import Cell, CertProfile, Mode, Protocol, TLSPolicy
from ..tls import EVERYTHING, TLS13_SUITES, dh_params_files, dh_params_path, expand_ciphers, local_ciphers
from .container import (
    CertPaths,
    ContainerBackend,
    ContainerServer,
    Plan,
    PlanInput,
    check_render_input,
)

if TYPE_CHECKING:
    from ..diagnose import Rule
    from ..runtime import Container

__all__ = [
    "MECHANISMS",
    "CourierBackend",
    "CourierServer",
    "RenderedConfig",
    "cell_log_lines",
    "gnutls_priority",
    "render",
    "unsupported_reason",
]

#: SASL mechanisms this backend offers (Courier's IMAP LOGIN and POP3 USER/PASS are always there too).
MECHANISMS = ("PLAIN", "LOGIN")

ETC = "/mailtls/etc"  # rendered settings + PKI copies (read-only mount)
#: Where the entrypoint copies ETC/pki, owned by the "courier" user: imaplogin and courierpop3login start
#: couriertls for STARTTLS as that user, which must read the key (the mounted copies are the host user's, 0600).
PKI = "/run/mailtls/pki"
MAIL_ROOT = "/mailtls/mail"  # the test user's home; its Maildir (INBOX) is MAIL_ROOT/Maildir (read-write mount)
MAILDIR = "Maildir"
MAIL_UID = 5000  # the image's "mailtls" user: Courier will not open mail as root, so root hosts get this one
DH_FILE = "/etc/courier/dhparams.pem"  # made when courier-base is installed; DHE suites (legacy cells) need it
_CELL_NAME = re.compile(r"[^A-Za-z0-9_-]")
#: IMAP capabilities besides STARTTLS, LOGINDISABLED and AUTH= (Debian's IMAP_CAPABILITY without the AUTH= words).
_IMAP_CAPABILITY = "IMAP4rev1 UIDPLUS CHILDREN NAMESPACE THREAD=ORDEREDSUBJECT THREAD=REFERENCES SORT QUOTA IDLE"

# --------------------------------------------------------------------------- GnuTLS priority strings

#: OpenSSL names (``ssl.SSLContext.get_ciphers()``) -> GnuTLS priority keywords.
_KX = {
    ("kx-ecdhe", "auth-rsa"): "ECDHE-RSA",
    ("kx-ecdhe", "auth-ecdsa"): "ECDHE-ECDSA",
    ("kx-dhe", "auth-rsa"): "DHE-RSA",
    ("kx-rsa", "auth-rsa"): "RSA",
}
_CIPHER: dict[str | None, str] = {
    "aes-128-gcm": "AES-128-GCM",
    "aes-256-gcm": "AES-256-GCM",
    "chacha20-poly1305": "CHACHA20-POLY1305",
    "aes-128-cbc": "AES-128-CBC",
    "aes-256-cbc": "AES-256-CBC",
    "aes-128-ccm": "AES-128-CCM",
    "aes-256-ccm": "AES-256-CCM",
    "camellia-128-cbc": "CAMELLIA-128-CBC",
    "camellia-256-cbc": "CAMELLIA-256-CBC",
    "des-ede3-cbc": "3DES-CBC",
    None: "NULL",  # eNULL suites: GnuTLS only enables them when a priority string names +NULL
}
_MAC = {None: "AEAD", "sha1": "SHA1", "sha256": "SHA256", "sha384": "SHA384"}
#: TLS 1.3 suites -> the GnuTLS cipher that selects each (GnuTLS has one cipher list for every version).
_SUITE_CIPHER = {
    "TLS_AES_256_GCM_SHA384": "AES-256-GCM",
    "TLS_AES_128_GCM_SHA256": "AES-128-GCM",
    "TLS_CHACHA20_POLY1305_SHA256": "CHACHA20-POLY1305",
    "TLS_AES_128_CCM_SHA256": "AES-128-CCM",
    "TLS_AES_128_CCM_8_SHA256": "AES-128-CCM-8",
}
#: What OpenSSL offers at TLS 1.3 when a policy names no suites.
_DEFAULT_SUITES = ("TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256", "TLS_AES_128_GCM_SHA256")


def _gnutls_version(version: str) -> str:
    return "VERS-TLS1.0" if version == "TLSv1" else f"VERS-TLS{version.removeprefix('TLSv')}"


@dataclass(frozen=True)
class _Plan:
    """A policy as GnuTLS sees it: the priority string, or why none says it."""

    priority: str
    problem: str | None = None


@functools.cache
def _cipher_info() -> dict[str, tuple[str, str, str]]:
    """OpenSSL cipher name -> its GnuTLS (key exchange, cipher, MAC), for the suites GnuTLS has."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.set_ciphers(EVERYTHING)
    out: dict[str, tuple[str, str, str]] = {}
    for c in ctx.get_ciphers():
        kx = _KX.get((c["kea"], c["auth"]))
        cipher = _CIPHER.get(c["symmetric"])
        mac = _MAC.get(c["digest"])
        if c["protocol"] != "TLSv1.3" and kx and cipher and mac:
            out[c["name"]] = (kx, cipher, mac)
    return out


@functools.cache
def _plan(policy: TLSPolicy) -> _Plan:
    versions = ":".join(f"+{_gnutls_version(v)}" for v in policy.versions)
    head = f"NORMAL:-VERS-ALL:{versions}"
    has13 = "TLSv1.3" in policy.versions
    below13 = [v for v in policy.versions if v != "TLSv1.3"]
    allowed = expand_ciphers(policy.openssl_ciphers()) if policy.ciphers is not None else None
    everything = frozenset(c for v in below13 for c in local_ciphers(v))
    info = _cipher_info()
    normal = {n for n, (_, c, _) in info.items() if c != "NULL"}  # NORMAL never enables a NULL cipher
    if policy.ciphersuites is None and (allowed is None or not below13 or normal <= allowed):
        return _Plan(head)  # GnuTLS's own choice (every suite it has is allowed), as an OpenSSL server's default
    suites = policy.ciphersuites.split(":") if policy.ciphersuites else list(_DEFAULT_SUITES)
    unknown = [s for s in suites if s not in _SUITE_CIPHER]
    if has13 and unknown:
        return _Plan(head, f"GnuTLS has no TLS 1.3 suite {', '.join(unknown)}")
    ciphers13 = {_SUITE_CIPHER[s] for s in suites} if has13 else set()
    kx: set[str] = set()
    ciphers: set[str] = set(ciphers13)
    macs: set[str] = {"AEAD"} if has13 else set()
    if below13:
        chosen = [n for n in (allowed if allowed is not None else everything) if n in info]
        if not chosen:
            return _Plan(head, f"GnuTLS implements none of the ciphers {policy.ciphers!r}")
        for name in chosen:
            k, c, m = info[name]
            kx.add(k)
            ciphers.add(c)
            macs.add(m)
        # A priority string selects key exchanges, ciphers and MACs separately: every combination is on.
        on = {n for n, (k, c, m) in info.items() if k in kx and c in ciphers and m in macs}
        extra = sorted(on - (allowed if allowed is not None else everything))
        if extra:
            return _Plan(
                head,
                f"a GnuTLS priority string selects key exchanges, ciphers and MACs apart: {policy.ciphers!r}"
                f"{' with its TLS 1.3 suites' if has13 else ''} would also allow {', '.join(extra[:4])}",
            )
    if has13:
        on13 = {s for s, c in _SUITE_CIPHER.items() if c in ciphers and s in TLS13_SUITES}
        if on13 != set(suites) & set(TLS13_SUITES):
            more = ", ".join(sorted(on13 - set(suites)))
            return _Plan(head, f"GnuTLS has one cipher list for every version: TLS 1.3 would also allow {more}")
        if not kx:
            kx = {"ECDHE-RSA", "ECDHE-ECDSA"}  # GnuTLS negotiates TLS 1.3 only with an (EC)DHE key exchange on
    parts = [head, "-KX-ALL", *(f"+{k}" for k in sorted(kx))]
    parts += ["-CIPHER-ALL", *(f"+{c}" for c in sorted(ciphers)), "-MAC-ALL", *(f"+{m}" for m in sorted(macs))]
    return _Plan(":".join(parts))


def gnutls_priority(policy: TLSPolicy) -> str:
    """The ``TLS_PRIORITY`` that makes couriertls accept exactly ``policy`` (``ValueError`` if none can)."""
    plan = _plan(policy)
    if plan.problem:
        raise ValueError(f"policy {policy.name}: {plan.problem}")
    return plan.priority


# --------------------------------------------------------------------------- what cannot be served


def unsupported_reason(cell: Cell) -> str | None:
    """Why Courier cannot serve ``cell`` (a sentence), or ``None`` if it can."""
    if cell.protocol not in (Protocol.IMAP, Protocol.POP3):
        return f"Courier serves IMAP and POP3 here, not {cell.protocol} ({cell.service.name})"
    auth = cell.auth
    extra = [m for m in auth.mechanisms if m not in MECHANISMS]
    if extra:
        return f"the Courier backend offers SASL mechanisms {', '.join(MECHANISMS)}, not {', '.join(extra)}"
    if not auth.mechanisms or not auth.required:
        return f"Courier {cell.protocol.upper()} always takes a password login: an auth policy without one"
    if cell.mode is Mode.PLAIN and auth.tls_only:
        return "Courier refuses logins before TLS only on a port that offers STARTTLS (IMAP_TLS_REQUIRED)"
    if auth.client_cert and not cell.tls:
        return "mutual TLS needs a TLS mode"
    if cell.policy is not None and cell.policy.small_dh:
        return (
            f"policy {cell.policy.name}: GnuTLS follows RFC 7919, so a client naming FFDHE groups (every OpenSSL 3 "
            "client that may speak TLS 1.3, JSSE) gets ffdhe2048 instead of the TLS_DHPARAMS group, or, with the "
            f"FFDHE groups taken out of the priority string (-GROUP-DH-ALL), no DHE suite at all: the {cell.policy.dh_bits}"
            "-bit group would reach only clients that name no FFDHE group"
        )
    if cell.policy is not None:
        problem = _plan(cell.policy).problem
        if problem:
            return f"policy {cell.policy.name}: {problem}"
    return None


# --------------------------------------------------------------------------- rendering (pure)


@dataclass(frozen=True)
class RenderedConfig:
    """Every file the container needs, by path relative to the mounted ``/mailtls/etc``."""

    files: dict[str, str]
    #: cell id -> the cell's name (the prefix of its log lines: ``<name>: ...``)
    names: dict[str, str]


def _cell_names(cells: Sequence[Cell]) -> dict[str, str]:
    names: dict[str, str] = {}
    taken: set[str] = set()
    for index, cell in enumerate(cells):
        name = _CELL_NAME.sub("-", cell.id)
        if name in taken:
            name = f"{name}-{index}"
        taken.add(name)
        names[cell.id] = name
    return names


def _tls_required(cell: Cell) -> bool:
    """No login before STARTTLS: starttls-required, and a TLS-only auth policy on a STARTTLS port (which asks
    exactly that of IMAP and POP3, whose base logins cannot be withheld otherwise)."""
    return cell.mode is Mode.STARTTLS_REQUIRED or (cell.mode is Mode.STARTTLS and cell.auth.tls_only)


def _cell_env(
    cell: Cell, port: int, cert_files: Mapping[CertProfile, CertPaths], client_ca_file: str | None
) -> dict[str, str]:
    imap = cell.protocol is Protocol.IMAP
    prefix = "IMAP" if imap else "POP3"
    mechanisms = [m for m in MECHANISMS if m in cell.auth.mechanisms]
    before = [] if cell.auth.tls_only else mechanisms
    env = {
        "PORT": str(port),
        "LOGIN": "imaplogin" if imap else "courierpop3login",
        "IMPLICIT": "1" if cell.mode is Mode.IMPLICIT else "0",
        f"{prefix}_STARTTLS": "YES" if cell.mode in (Mode.STARTTLS, Mode.STARTTLS_REQUIRED) else "NO",
        f"{prefix}_TLS_REQUIRED": "1" if _tls_required(cell) else "0",
    }
    if cell.mode is Mode.IMPLICIT:
        env[f"{prefix}_TLS"] = "1"
    if imap:
        env["IMAP_CAPABILITY"] = " ".join([_IMAP_CAPABILITY, *(f"AUTH={m}" for m in before)])
        env["IMAP_CAPABILITY_TLS"] = " ".join([_IMAP_CAPABILITY, *(f"AUTH={m}" for m in mechanisms)])
    else:
        env["POP3AUTH"] = " ".join(before)
        env["POP3AUTH_TLS"] = " ".join(mechanisms)
    if cell.policy is not None and cell.cert is not None:
        files = cert_files[cell.cert]
        env |= {
            "TLS_PRIORITY": gnutls_priority(cell.policy),
            "TLS_CERTFILE": files.cert_file,
            "TLS_PRIVATE_KEYFILE": files.key_file,
            "TLS_DHPARAMS": DH_FILE if cell.policy.dh_bits is None else f"{ETC}/{dh_params_path(cell.policy.dh_bits)}",
            "TLS_VERIFYPEER": "NONE",
        }
        if cell.auth.client_cert:
            assert client_ca_file is not None
            env |= {"TLS_VERIFYPEER": "REQUIREPEER", "TLS_TRUSTCERTS": client_ca_file}
    return env


def _env_file(comment: str, env: Mapping[str, str]) -> str:
    lines = [f"# {comment}"]
    for key, value in env.items():
        if "\n" in value or "\r" in value:
            raise ValueError(f"{comment}: setting {key} spans lines: {value!r}")
        lines.append(f"{key}={shlex.quote(value)}")
    return "\n".join(lines) + "\n"


def password_hash(password: str) -> str:
    """The test password as courier-authlib checks it in a userdb ``systempw`` field."""
    return "{SHA256}" + base64.b64encode(hashlib.sha256(password.encode()).digest()).decode()


def render(
    cells: Sequence[Cell],
    *,
    ports: Sequence[int],
    cert_files: Mapping[CertProfile, CertPaths],
    client_ca_file: str | None,
    username: str,
    password: str,
    mail_uid: int = MAIL_UID,
    mail_gid: int = MAIL_UID,
) -> RenderedConfig:
    """Render the shared and per-cell environment files, authdaemonrc and the userdb of the test user.

    ``ports`` are container-internal, one per cell; ``cert_files`` and ``client_ca_file`` are container paths;
    ``mail_uid``/``mail_gid`` own the mail files. Raises ``ValueError`` for a cell Courier cannot serve or an
    unusable user name or password.
    """
    check_render_input(cells, ports, unsupported_reason, certs=cert_files, client_ca=bool(client_ca_file))
    if not username or any(ch in username for ch in "|\t\r\n /") or username != username.lower():
        raise ValueError(f"the test user name must be lower-case, non-empty, without '|', '/' or spaces: {username!r}")
    if not password or any(ch in password for ch in "\r\n"):
        raise ValueError("the test password must be non-empty, on one line")
    if mail_uid <= 0 or mail_gid < 0:
        raise ValueError(f"mail_uid must be > 0 (Courier will not open mail as root), got {mail_uid}")
    names = _cell_names(cells)
    files: dict[str, str] = {}
    for cell, port in zip(cells, ports, strict=True):
        env = _cell_env(cell, port, cert_files, client_ca_file)
        files[f"cells/{names[cell.id]}.env"] = _env_file(f"{cell.id}: sourced by the image's entrypoint", env)
    files |= dh_params_files(c.policy.dh_bits for c in cells if c.policy is not None)
    files["common.env"] = _env_file(
        "every cell: sourced before the cell's own file",
        {
            "COURIERTLS": "/usr/bin/couriertls",
            "MAILDIRPATH": MAILDIR,
            "IMAP_EMPTYTRASH": "",
            "IMAP_IDLE_TIMEOUT": "60",
            "IMAP_KEYWORDS": "1",
            "IMAP_USELOCKS": "1",
            "IMAP_UMASK": "022",
            "IMAP_MAILBOX_SANITY_CHECK": "0",  # the Maildir belongs to the host user, not to the login uid
            "DEBUG_LOGIN": "0",
        },
    )
    files["authdaemonrc"] = 'authmodulelist="authuserdb"\ndaemons=3\nauthdaemonvar=/run/courier/authdaemon\n'
    files["userdb"] = (
        f"{username}\tuid={mail_uid}|gid={mail_gid}|home={MAIL_ROOT}|mail={MAIL_ROOT}/{MAILDIR}"
        f"|systempw={password_hash(password)}\n"
    )
    return RenderedConfig(files=files, names=names)


# --------------------------------------------------------------------------- logs


def cell_log_lines(log: str, name: str) -> list[str]:
    """The lines of ``log`` about the cell named ``name`` (every line its processes write starts ``<name>: ``)."""
    tag = f"{name}: "
    return [line for line in log.splitlines() if line.startswith(tag)]


@functools.cache
def _log_rules() -> tuple[Rule, ...]:
    """Courier's log vocabulary for the diagnosis, as its processes write it (imaplogin, courierpop3login and
    couriertls on GnuTLS; measured on Debian bookworm): a wrong password is ``LOGIN FAILED``; a missing client
    certificate ``Certificate is required.`` / ``No certificate was found.``; GnuTLS says ``No supported cipher
    suites have been found.`` for a version it does not speak as for a cipher it lacks; a client that rejects the
    certificate leaves ``Decryption has failed.`` (its alert, read by GnuTLS); and every failed handshake ends in
    ``Unexpected SSL connection shutdown.``, the only line a STARTTLS handshake leaves."""
    from ..diagnose import CERT_CLASSES, rule

    return (
        rule(r"LOGIN FAILED|authentication error", "auth-failed", weight=5),
        rule(r"STARTTLS required", "starttls-required", weight=5),
        rule(r"Certificate is required|No certificate was found", "client-certificate-required", weight=5),
        rule(r"No supported cipher suites have been found", "protocol-version-mismatch", "no-shared-cipher"),
        rule(r"Decryption has failed|A TLS fatal alert has been received", *CERT_CLASSES, hint=True),
        rule(
            r"Unexpected SSL connection shutdown",
            *CERT_CLASSES,
            "protocol-version-mismatch",
            "no-shared-cipher",
            "client-certificate-required",
            hint=True,
        ),
        rule(r"An unexpected TLS packet was received|unexpected TLS packet", "wrong-tls-mode", weight=1),
    )


# --------------------------------------------------------------------------- the backend


class CourierServer(ContainerServer[str]):
    """One Courier container serving many IMAP/POP3 cells, all on the test user's one Maildir."""

    title = "Courier"

    def __init__(
        self, container: Container, endpoints: list[Endpoint], names: Mapping[str, str], workdir: Path
    ) -> None:
        super().__init__(container, endpoints, workdir, names)
        #: Host path of the test user's Maildir (INBOX); every cell's ``Endpoint.mailbox``.
        self.maildir = workdir / "mail" / MAILDIR

    def log_lines(self, log: str, key: str) -> list[str]:
        return cell_log_lines(log, key)


class CourierBackend(ContainerBackend):
    """Real Courier IMAP 5.0 and POP3 (Debian bookworm, couriertls on GnuTLS) in Docker, one container for all."""

    name = "courier"
    needs_docker = True
    title = "Courier"
    services = ("imap", "imaps", "pop3", "pop3s")
    etc_path, pki_path, mail_path, mail_uid = ETC, PKI, MAIL_ROOT, MAIL_UID  # the entrypoint copies ETC/pki to PKI
    remedies = {
        "versions": "TLS_PRIORITY=NORMAL:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2 (GnuTLS builds; TLS_PROTOCOL=TLSv1.2 "
        "with OpenSSL) in /etc/courier/imapd-ssl and pop3d-ssl",
        "chain": "TLS_CERTFILE=/path/fullchain.pem (leaf, then intermediates; the key in it or TLS_PRIVATE_KEYFILE)",
        "tls": "IMAPDSTARTTLS=YES / IMAPDSSLSTART=YES (POP3DSTARTTLS / POP3DSSLSTART) with TLS_CERTFILE",
    }

    @classmethod
    def log_rules(cls) -> tuple[Rule, ...]:
        return _log_rules()

    def cell_log_lines(self, log: str, key: Any) -> list[str]:
        return cell_log_lines(log, key)

    def unsupported(self, cell: Cell) -> str | None:
        if cell.server != self.name:
            return f"the Courier backend serves courier cells, not {cell.server}"
        return unsupported_reason(cell)

    def plan(self, given: PlanInput) -> Plan:
        config = render(
            given.cells,
            **given.render_args(),
        )
        return Plan(
            files=config.files,
            maildirs=[MAILDIR],
            mailbox=lambda cell: MAILDIR,
            cell_keys=config.names,
            extra=lambda cell, port: {"service": config.names[cell.id]},
        )

    def serve(self, container: Container, endpoints: list[Endpoint], plan: Plan, given: PlanInput) -> CourierServer:
        return CourierServer(container, endpoints, plan.cell_keys, given.workdir)
