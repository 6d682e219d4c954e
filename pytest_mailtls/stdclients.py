"""The standard library's mail clients, connected to an endpoint: ``open_client``.

``smtplib``, ``imaplib`` and ``poplib`` dial ``endpoint.host`` but verify and send SNI for
``endpoint.server_hostname``, as a real client configured with that host name would. The protocol openings
themselves (greeting, capabilities, STARTTLS) are :mod:`pytest_mailtls.connect`'s.

PYTEST_DONT_REWRITE
"""

from __future__ import annotations

import contextlib
import imaplib
import poplib
import smtplib
import socket
import ssl
from typing import TYPE_CHECKING, Any

from .connect import CLIENT_NAME

if TYPE_CHECKING:
    from .manifest import Endpoint

__all__ = ["close_client", "open_client", "MailClient"]

MailClient = smtplib.SMTP | imaplib.IMAP4 | poplib.POP3


def open_client(
    endpoint: Endpoint,
    *,
    context: ssl.SSLContext | None = None,
    timeout: float = 10.0,
    starttls: bool | None = None,
) -> Any:
    """A connected ``smtplib.SMTP``, ``imaplib.IMAP4`` or ``poplib.POP3`` for ``endpoint``.

    Implicit cells get TLS from the first byte; STARTTLS cells are upgraded
    unless ``starttls=False``; plain cells stay plain. ``context`` defaults to
    ``endpoint.client_context()``. Stdlib exceptions propagate unchanged.
    """
    ctx = context if context is not None else endpoint.client_context()
    implicit = endpoint.mode == "implicit"
    upgrade = starttls if starttls is not None else endpoint.mode in ("starttls", "starttls-required")
    proto, name, ip, port = endpoint.protocol, endpoint.server_hostname, endpoint.host, endpoint.port
    if proto == "smtp":
        # local_hostname: without it smtplib asks DNS for this machine's name (socket.getfqdn)
        smtp: smtplib.SMTP = (
            smtplib.SMTP_SSL(context=ctx, timeout=timeout, local_hostname=CLIENT_NAME)
            if implicit
            else smtplib.SMTP(timeout=timeout, local_hostname=CLIENT_NAME)
        )
        smtp._host = name  # type: ignore[attr-defined]  # SNI and verification use the name, the socket the IP
        try:
            code, greeting = smtp.connect(ip, port)
            if code != 220:  # connect() returns a refusing greeting (421, 554); only smtplib's constructor raises
                raise smtplib.SMTPConnectError(code, greeting)
            if upgrade and not implicit:
                smtp.starttls(context=ctx)
            smtp.ehlo()
        except BaseException:
            with contextlib.suppress(OSError):
                smtp.close()
            raise
        return smtp
    if proto in _MAILBOX_CLIENTS:
        plain_cls, tls_cls, ctx_arg, upgrade_with, close_with = _MAILBOX_CLIENTS[proto]
        tls_kwargs: dict[str, Any] = {ctx_arg: ctx}
        client = _dialing(
            tls_cls if implicit else plain_cls, ip, name, port, timeout=timeout, **(tls_kwargs if implicit else {})
        )
        try:
            if upgrade and not implicit:
                getattr(client, upgrade_with)(**tls_kwargs)
        except BaseException:
            with contextlib.suppress(OSError):
                getattr(client, close_with)()
            raise
        return client
    raise ValueError(f"unknown protocol {proto!r}")


def _dialing(cls: type, ip: str, name: str, port: int, **kwargs: Any) -> Any:
    # The stdlib connects in __init__ using self.host for both the socket and SNI: set where to dial first.
    obj: Any = object.__new__(cls)
    obj._dial_host = ip
    obj.__init__(name, port, **kwargs)
    return obj


class _IMAP4(imaplib.IMAP4):
    _dial_host: str

    def _create_socket(self, timeout: float | None) -> socket.socket:
        return socket.create_connection((self._dial_host, self.port), timeout)


class _IMAP4_SSL(imaplib.IMAP4_SSL):
    _dial_host: str

    def _create_socket(self, timeout: float | None) -> socket.socket:
        # IMAP4_SSL calls IMAP4._create_socket directly (not super()), so dial here and wrap for the name.
        sock = socket.create_connection((self._dial_host, self.port), timeout)
        return self.ssl_context.wrap_socket(sock, server_hostname=self.host)


class _POP3(poplib.POP3):
    _dial_host: str

    def _create_socket(self, timeout: float) -> socket.socket:
        return socket.create_connection((self._dial_host, self.port), timeout)


class _POP3_SSL(poplib.POP3_SSL):
    _dial_host: str
    context: ssl.SSLContext  # set by POP3_SSL.__init__; typeshed does not declare it

    def _create_socket(self, timeout: float) -> socket.socket:
        sock = socket.create_connection((self._dial_host, self.port), timeout)
        return self.context.wrap_socket(sock, server_hostname=self.host)


# imaplib and poplib differ only in names: (plain class, implicit-TLS class, the keyword that takes the
# SSLContext in both the constructor and the upgrade, the STARTTLS method, the close method).
_MAILBOX_CLIENTS: dict[str, tuple[type, type, str, str, str]] = {
    "imap": (_IMAP4, _IMAP4_SSL, "ssl_context", "starttls", "shutdown"),
    "pop3": (_POP3, _POP3_SSL, "context", "stls", "close"),
}


def close_client(client: Any) -> None:
    """Drop a client of :func:`open_client` without a goodbye (best effort: the session may be dead already)."""
    with contextlib.suppress(Exception):
        if isinstance(client, imaplib.IMAP4):
            client.shutdown()
        else:
            client.close()
