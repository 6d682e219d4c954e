"""Raw ClientHello questions: which suite does the server pick from these, at this version?

A full handshake answers that question with a lot of work on both sides (key exchange, Finished
messages, a round trip over TLS). The ServerHello alone answers it: the server names the version
and the suite it chose, or sends an alert. So the probe sends a ClientHello and reads no further
than the ServerHello (or the alert), then closes: one round trip per question after the opening.

The hello is the local OpenSSL's own (built through a memory BIO by a client context for exactly
that version, with the SNI name): the same extensions, signature algorithms, groups and key share
a real OpenSSL client sends, so the server decides as it would for one. Only the cipher-suite list
is replaced, by any suites at all, TLS 1.3 suites and suites OpenSSL 3 no longer builds included
(which Python's ``ssl`` cannot offer one by one).

PYTEST_DONT_REWRITE
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import socket
import ssl
from collections.abc import Iterable
from dataclasses import dataclass

from .tls import client_context, suite_ids
from .wire.tlsrecords import TLSObserver

__all__ = ["Answer", "HelloTemplate", "hello_template", "ask", "server_dh_bits"]

_SIGNALLING = (0x00FF, 0x5600)  # TLS_EMPTY_RENEGOTIATION_INFO_SCSV, TLS_FALLBACK_SCSV: kept as OpenSSL put them
_READ = 16384
_KEY_SHARE = 51  # the TLS 1.3 key_share extension


@dataclass(frozen=True)
class Answer:
    """What the server said to one ClientHello: the version and suite it chose, or why not."""

    version: str | None = None  # e.g. "TLSv1.2"; None: no ServerHello
    suite: str | None = None  # OpenSSL name (TLS 1.3: the IANA-style name OpenSSL uses)
    refusal: str | None = None  # why there is no usable answer (alert, hang-up, another version)
    hello_retry: bool = False  # TLS 1.3: a HelloRetryRequest (it names the suite too)
    unknown: bool = False  # the question could not be asked (no connection): no answer either way
    alert: str | None = None  # the alert the server refused with, e.g. "handshake_failure"

    @property
    def accepted(self) -> bool:
        return self.refusal is None and self.suite is not None

    @property
    def no_such_version(self) -> bool:
        """The server refused the version itself (alert protocol_version), whatever the suites."""
        return self.alert == "protocol_version"


@dataclass(frozen=True)
class HelloTemplate:
    """The local OpenSSL's ClientHello for one version and SNI name, its suite list cut out."""

    version: str
    record_version: bytes  # the record layer's version field
    head: bytes  # client_version, random, session id
    tail: bytes  # compression methods and extensions
    signalling: tuple[int, ...]

    def hello(self, suites: Iterable[str]) -> bytes:
        """The ClientHello record offering ``suites`` (OpenSSL names; unknown names are a ``KeyError``)."""
        ids = suite_ids()
        numbers = [ids[name] for name in suites] + list(self.signalling)
        suite_bytes = (2 * len(numbers)).to_bytes(2, "big") + b"".join(n.to_bytes(2, "big") for n in numbers)
        body = self.head + suite_bytes + self.tail
        handshake = b"\x01" + len(body).to_bytes(3, "big") + body
        return b"\x16" + self.record_version + len(handshake).to_bytes(2, "big") + handshake

    def without_key_shares(self) -> HelloTemplate:
        """The same hello with an empty TLS 1.3 ``key_share`` list (RFC 8446 4.2.8 allows it: the client asks
        the server to pick a group). A TLS 1.3 server then answers with a HelloRetryRequest, which names
        the suite it chose, instead of a full ServerHello flight: no key exchange, no certificate, no
        signature on its side."""
        n = self.tail[0]
        pos = 1 + n + 2  # compression methods, extensions length
        extensions = b""
        while pos + 4 <= len(self.tail):
            kind = int.from_bytes(self.tail[pos : pos + 2], "big")
            length = int.from_bytes(self.tail[pos + 2 : pos + 4], "big")
            data = self.tail[pos + 4 : pos + 4 + length]
            pos += 4 + length
            if kind == _KEY_SHARE:
                data = b"\x00\x00"
            extensions += kind.to_bytes(2, "big") + len(data).to_bytes(2, "big") + data
        tail = self.tail[: 1 + n] + len(extensions).to_bytes(2, "big") + extensions
        return dataclasses.replace(self, tail=tail)


@functools.lru_cache(maxsize=64)
def hello_template(version: str, server_hostname: str | None) -> HelloTemplate:
    """The ClientHello the local OpenSSL sends at ``version`` only (every cipher, security level 0),
    with ``server_hostname`` as SNI (None, or an IP address: no SNI, as OpenSSL does)."""
    ctx = client_context(version)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname=server_hostname)
    with contextlib.suppress(ssl.SSLWantReadError):  # it waits for the ServerHello: the hello is written
        obj.do_handshake()
    record = outgoing.read()
    if len(record) < 9 or record[0] != 0x16 or record[5] != 0x01:
        raise RuntimeError(f"the local OpenSSL wrote no ClientHello for {version}")
    length = int.from_bytes(record[3:5], "big")
    if len(record) != 5 + length:
        raise RuntimeError(f"the local OpenSSL's {version} ClientHello spans several records")
    body = record[9:]
    pos = 2 + 32
    pos += 1 + body[pos]  # session id
    suites_len = int.from_bytes(body[pos : pos + 2], "big")
    numbers = [int.from_bytes(body[pos + 2 + i : pos + 4 + i], "big") for i in range(0, suites_len, 2)]
    return HelloTemplate(
        version=version,
        record_version=record[1:3],
        head=body[:pos],
        tail=body[pos + 2 + suites_len :],
        signalling=tuple(n for n in numbers if n in _SIGNALLING),
    )


def ask(sock: socket.socket, template: HelloTemplate, suites: Iterable[str]) -> Answer:
    """Send a ClientHello offering ``suites`` on ``sock`` (TLS starts now) and read the answer.

    Reads no further than the ServerHello or an alert. A ServerHello at another version than the
    template's counts as a refusal (a client offering only that version would abort). Socket
    errors other than a timeout or a reset propagate.
    """
    sock.sendall(template.hello(suites))
    observer = TLSObserver()
    first = True
    while observer.server_hello is None and not observer.alerts:
        try:
            data = sock.recv(_READ)
        except TimeoutError:
            return Answer(refusal="no answer to the ClientHello before the timeout")
        except ConnectionResetError:
            return Answer(refusal="the server reset the connection after the ClientHello")
        if not data:
            return Answer(refusal="the server closed the connection after the ClientHello")
        if first and data[0] not in (0x15, 0x16):
            return Answer(refusal=f"the server answered the ClientHello with something else than TLS: {data[:40]!r}")
        first = False
        observer.feed("server", data)
    if observer.server_hello is None:
        alert = observer.alerts[0]
        return Answer(refusal=f"the server refused: alert {alert.description}", alert=alert.description)
    hello = observer.server_hello
    if hello.version != template.version:
        return Answer(version=hello.version, suite=hello.cipher, refusal=f"the server answered at {hello.version}")
    return Answer(version=hello.version, suite=hello.cipher, hello_retry=hello.hello_retry)


def server_dh_bits(
    sock: socket.socket, template: HelloTemplate, suites: Iterable[str]
) -> tuple[str | None, int | None]:
    """Send a ClientHello offering ``suites`` on ``sock`` (TLS starts now) and read the server's first flight up to
    its ServerHelloDone: (the suite it chose, the size in bits of its DH group's prime), the size ``None`` when the
    suite has no finite-field DHE key exchange; (None, None) when the server refused or hung up. TLS <= 1.2 only
    (TLS 1.3 encrypts the rest of the flight)."""
    sock.sendall(template.hello(suites))
    observer = TLSObserver()
    while not observer.server_hello_done and not observer.alerts and not observer.tls13:
        try:
            data = sock.recv(_READ)
        except (TimeoutError, ConnectionResetError):
            break
        if not data:
            break
        observer.feed("server", data)
    hello = observer.server_hello
    return (hello.cipher if hello else None), observer.server_dh_bits
