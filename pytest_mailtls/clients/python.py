"""The standard library's clients: smtplib, imaplib, poplib, configured from a profile.

Connections go through :func:`pytest_mailtls.connect.open_client` (dial the
endpoint's IP, verify and send SNI for its host name), so these adapters only
decide the TLS context, whether to STARTTLS, and what to do once connected.

PYTEST_DONT_REWRITE
"""

from __future__ import annotations

import imaplib
import poplib
import smtplib
import socket
import ssl
import time
from typing import Any

from ..manifest import Endpoint
from ..oracle import ClientProfile
from ..policy import Mode
from ..stdclients import open_client
from ..tls import set_version_range
from .base import Client, ClientResult, OutgoingMessage, Transcript, wait_for_delivery

__all__ = ["PythonClient", "PYTHON_PROFILES", "python_context"]

#: Built-in profiles: a careful client per protocol, one speaking all three, and one that must be caught.
PYTHON_PROFILES: dict[str, ClientProfile] = {
    "python-smtplib": ClientProfile(
        "python-smtplib", protocols=("smtp",), description="smtplib with a verifying context, STARTTLS required"
    ),
    "python-imaplib": ClientProfile(
        "python-imaplib", protocols=("imap",), description="imaplib with a verifying context, STARTTLS required"
    ),
    "python-poplib": ClientProfile(
        "python-poplib", protocols=("pop3",), description="poplib with a verifying context, STLS required"
    ),
    "python": ClientProfile(
        "python", description="smtplib, imaplib and poplib with a verifying context, STARTTLS required"
    ),
    "python-unsafe": ClientProfile(
        "python-unsafe",
        verify=False,
        check_hostname=False,
        starttls="opportunistic",
        description="verification off, STARTTLS only when offered, logs in wherever AUTH is offered: must be caught",
    ),
}


def python_context(profile: ClientProfile, endpoint: Endpoint) -> ssl.SSLContext:
    """The ``ssl.SSLContext`` a client with ``profile`` uses against ``endpoint``."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if profile.verify:
        if profile.trusts_ca:
            ctx.load_verify_locations(endpoint.ca_file)
        else:
            ctx.load_default_certs()
        ctx.check_hostname = profile.check_hostname
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    versions = profile.effective_versions or profile.versions
    set_version_range(ctx, versions[0], versions[-1])  # TLSv1/1.1 are deprecated, and that is the point
    ciphers = profile.cipher_string()
    if ciphers:
        ctx.set_ciphers(ciphers)
    if profile.client_cert and endpoint.client_cert_file:
        ctx.load_cert_chain(endpoint.client_cert_file, endpoint.client_key_file)
    return ctx


class PythonClient(Client):
    """smtplib / imaplib / poplib, picked by the endpoint's protocol."""

    def __init__(self, profile: ClientProfile, *, timeout: float = 10.0) -> None:
        self.profile = profile
        self.name = profile.name
        self.timeout = timeout

    def context(self, endpoint: Endpoint) -> ssl.SSLContext:
        """The context of one session (a subclass may check more, e.g. load a CRL)."""
        return python_context(self.profile, endpoint)

    def run(self, endpoint: Endpoint, *, send: bool = True) -> ClientResult:
        steps = Transcript()
        start = time.monotonic()
        conn: Any = None
        plaintext_known = False
        try:
            ctx = self.context(endpoint)
            steps.add(f"connect {endpoint.host}:{endpoint.port} as {endpoint.server_hostname} ({endpoint.mode})")
            if endpoint.mode is Mode.IMPLICIT and not self.profile.implicit_tls:
                plaintext_known = True
                conn = self._open_plaintext(endpoint)
            else:
                upgrade = self._upgrade(endpoint.mode)
                conn = open_client(endpoint, context=ctx, starttls=upgrade, timeout=self.timeout)
            version, cipher = _negotiated(conn)
            steps.add(f"TLS: {version} {cipher}" if version else "no TLS: the session runs in plaintext")
            self._session(conn, endpoint, send=send, steps=steps)
            version, cipher = _negotiated(conn) if version is None else (version, cipher)
            return ClientResult(
                ok=True,
                negotiated_version=version,
                cipher=cipher,
                duration=time.monotonic() - start,
                transcript=str(steps),
                tls=version is not None,
            )
        except Exception as exc:
            steps.add(f"error: {type(exc).__name__}: {exc}")
            version, cipher = _negotiated(conn) if conn is not None else (None, None)
            tls: bool | None = version is not None if conn is not None else None
            if plaintext_known:
                tls = False
            return ClientResult(
                ok=False,
                error_text=_describe(exc),
                exception_type=f"{type(exc).__module__}.{type(exc).__qualname__}",
                negotiated_version=version,
                cipher=cipher,
                duration=time.monotonic() - start,
                transcript=str(steps),
                tls=tls,
            )
        finally:
            _close(conn)

    def _upgrade(self, mode: Mode) -> bool:
        if mode in (Mode.STARTTLS, Mode.STARTTLS_REQUIRED):
            return self.profile.starttls != "never"
        # On a plain port a client that requires TLS asks anyway, and the library refuses for it.
        return mode is Mode.PLAIN and self.profile.starttls == "required"

    def _open_plaintext(self, endpoint: Endpoint) -> Any:
        """A plaintext client on a port that expects TLS (a misconfigured client)."""
        proto = endpoint.protocol
        if proto == "smtp":
            smtp = smtplib.SMTP(timeout=self.timeout)
            smtp.connect(endpoint.host, endpoint.port)
            return smtp
        if proto == "imap":
            return imaplib.IMAP4(endpoint.host, endpoint.port, timeout=self.timeout)
        return poplib.POP3(endpoint.host, endpoint.port, timeout=self.timeout)

    def _session(self, conn: Any, endpoint: Endpoint, *, send: bool, steps: Transcript) -> None:
        user, password = endpoint.username, endpoint.password
        if isinstance(conn, smtplib.SMTP):
            conn.ehlo_or_helo_if_needed()
            steps.add("EHLO: " + " ".join(sorted(conn.esmtp_features)))
            if self.profile.sends_credentials and conn.has_extn("auth"):
                conn.login(user, password)
                steps.add(f"AUTH as {user}: accepted")
            if send:
                message = OutgoingMessage.for_endpoint(endpoint, self.name)
                conn.sendmail(message.sender, [message.recipient], message.as_bytes())
                steps.add(f"message {message.message_id} accepted")
                conn.quit()
                problem = wait_for_delivery(endpoint, message.message_id)
                if problem is not None:
                    raise DeliveryError(problem)
                if endpoint.mailbox is not None:
                    steps.add("message found in the cell's mailbox")
            else:
                conn.quit()
        elif isinstance(conn, imaplib.IMAP4):
            conn.login(user, password)
            steps.add(f"LOGIN as {user}: accepted")
            typ, data = conn.select("INBOX", readonly=True)
            steps.add(f"SELECT INBOX: {typ} {data[0]!r}")
            if typ != "OK":  # imaplib returns a refusal (NO) as a value, it does not raise
                raise imaplib.IMAP4.error(f"SELECT INBOX refused: {typ} {data[0]!r}")
            conn.logout()
        else:
            conn.user(user)
            conn.pass_(password)
            steps.add(f"USER/PASS as {user}: accepted")
            steps.add(f"STAT: {conn.stat()}")
            conn.quit()


class DeliveryError(Exception):
    """The server accepted a message that never reached the cell's mailbox."""


def _negotiated(conn: Any) -> tuple[str | None, str | None]:
    sock = getattr(conn, "sock", None)
    if isinstance(sock, ssl.SSLSocket):
        try:
            cipher = sock.cipher()
            return sock.version(), cipher[0] if cipher else None
        except (OSError, ValueError):
            return None, None
    return None, None


def _describe(exc: BaseException) -> str:
    text = str(exc) or repr(exc)
    if isinstance(exc, ssl.SSLCertVerificationError) and exc.verify_message:
        text = f"{text} (verify code {exc.verify_code}: {exc.verify_message})"
    if isinstance(exc, socket.timeout | TimeoutError):
        text = f"timed out: {text}"
    cause = exc.__cause__ or exc.__context__
    if cause is not None and str(cause) and str(cause) not in text:
        text += f" (caused by {type(cause).__name__}: {cause})"
    return text


def _close(conn: Any) -> None:
    if conn is None:
        return
    try:
        if isinstance(conn, imaplib.IMAP4):
            conn.shutdown()
        else:
            conn.close()
    except Exception:  # the connection may already be gone; closing is best-effort
        pass
