"""A TLS-terminating relay inside a tap: TLS with the client under a certificate the network chooses, TLS with the
real server behind, the plaintext in between read as the mail dialogue.

Interception (``intercept``) presents a certificate from another CA: a client that finishes that handshake
talks to the interceptor, and :attr:`MITM.inner` shows what it said (credentials included, masked). Response
injection (``inject-response``) presents the cell's own valid certificate, as EAST's test servers do, only to
see what the client does with lines injected before the handshake: :attr:`MITM.early_command` is set when the
client sent a second command over TLS before the server answered the first (it read the injected lines as
answers). A fault (``fault-*``) presents the cell's own valid certificate too and rewrites the server's answers
inside TLS: its plaintext tap (``plain``) sees the dialogue both ways as a tap sees a cleartext connection, through
a :class:`~pytest_mailtls.wire.recorder.Link` onto the two TLS sessions. All use :class:`ssl.SSLObject` over memory
BIOs, on the relay's loop.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable

from ..dialogue import Dialogue
from ..recorder import Link, SessionAnalyzer, Tap
from ..session import DialogueLine, Session

__all__ = ["MITM"]


class MITM:
    """One connection's two TLS sessions and the plaintext between them."""

    def __init__(
        self,
        link: Link,
        *,
        server_context: ssl.SSLContext,
        upstream_context: ssl.SSLContext,
        server_hostname: str,
        protocol: str,
        greeting_expected: bool,
        note: Callable[[str], None],
    ) -> None:
        self.link, self.note = link, note
        self._c_in, self._c_out = ssl.MemoryBIO(), ssl.MemoryBIO()
        self._client = server_context.wrap_bio(self._c_in, self._c_out, server_side=True)
        self._s_in, self._s_out = ssl.MemoryBIO(), ssl.MemoryBIO()
        self._server = upstream_context.wrap_bio(self._s_in, self._s_out, server_hostname=server_hostname)
        self.client_ready = self.server_ready = False
        self.failed = False
        self._to_server = bytearray()  # client plaintext waiting for the server's handshake
        self._to_client = bytearray()
        self.inner = Dialogue(protocol)
        if not greeting_expected:
            self.inner._queue.clear()  # after STARTTLS no greeting comes: the client speaks first
        self.client_lines = 0
        self.answered = False  # server plaintext has reached the client since TLS began
        self.early_command: str | None = None
        self._pending_line = bytearray()
        # hold_first_answer: how long the server's first answer inside TLS is withheld. Without it, whether a
        # client that took injected lines for answers sends its next command before the real answer arrives is
        # a race it loses only when the server is slow; held, the second command comes during the hold.
        self.hold_first_answer = 0.0
        self._holding = self._held = False
        #: A tap on the plaintext inside TLS (it decides what crosses, as on a cleartext connection); ``None``:
        #: the plaintext crosses unchanged.
        self.plain: Tap | None = None
        self.plain_link = _PlainLink(self)
        #: Whether a finished client handshake is noted as what the network did (a fault's relay stands in for the
        #: server itself: its handshake is no event; a failed one still is).
        self.announce = True

    def record(self, session: Session) -> None:
        """Write what the client said and was told inside TLS into its session record (credentials masked)."""
        inner = self.inner
        session.inner_dialogue = [DialogueLine(dir=ln.dir, t=ln.t, text=ln.text) for ln in inner.lines]
        session.inner_credentials = list(inner.credentials)
        session.inner_message_accepted = inner.message_accepted
        session.inner_rejections = list(inner.rejections)

    def start(self) -> None:
        """Open the TLS session toward the server (its ClientHello goes out now)."""
        self._pump()

    def from_client(self, data: bytes) -> None:
        self._c_in.write(data)
        self._pump()

    def from_server(self, data: bytes) -> None:
        self._s_in.write(data)
        self._pump()

    # --- the engine -----------------------------------------------------------------------
    def _pump(self) -> None:
        if self.failed:
            return
        if not self.client_ready:
            self.client_ready = self._handshake(self._client, "client")
        if not self.server_ready:
            self.server_ready = self._handshake(self._server, "server")
        if self.failed:
            self._flush()
            self.link.reset()
            return
        if self.client_ready:
            data = _read_all(self._client)
            if data:
                self._client_plaintext(data)
                if self.plain is not None:
                    self.plain.from_client(self.plain_link, data)
                else:
                    self._to_server += data
        if self.server_ready:
            data = _read_all(self._server)
            if data:
                if self.plain is not None:
                    self.plain.from_server(self.plain_link, data)
                else:
                    self.send_client(data)
        self._deliver()

    def send_client(self, data: bytes) -> None:
        """Plaintext for the client, over its TLS session (the inner dialogue records it as the server's)."""
        self.inner.feed("server", data)
        self._to_client += data

    def send_server(self, data: bytes) -> None:
        """Plaintext for the server, over the network's own TLS session with it."""
        self._to_server += data

    def _deliver(self) -> None:
        if self.failed:
            return
        if self.server_ready and self._to_server:
            self._server.write(bytes(self._to_server))
            self._to_server.clear()
        if self.client_ready and self._to_client:
            if self.hold_first_answer and not self._held:
                if not self._holding:
                    self._holding = True
                    self.note(f"withheld the server's first answer inside TLS {self.hold_first_answer} s")
                    self.link.later(self.hold_first_answer, self._release)
            else:
                self._client.write(bytes(self._to_client))
                self._to_client.clear()
                self.answered = True
        self._flush()

    def _release(self) -> None:
        self._holding, self._held = False, True
        self._pump()

    def _flush(self) -> None:
        out = self._c_out.read()
        if out:
            self.link.to_client(out)
        out = self._s_out.read()
        if out:
            self.link.to_server(out)

    def _handshake(self, obj: ssl.SSLObject, side: str) -> bool:
        try:
            obj.do_handshake()
        except ssl.SSLWantReadError:
            return False
        except (ssl.SSLError, OSError) as exc:
            reason = getattr(exc, "reason", None) or str(exc)
            who = "the client" if side == "client" else "the server"
            self.note(f"{who}'s handshake with the interceptor failed ({reason})")
            self.failed = True
            return False
        if side == "client" and self.announce:
            cipher = obj.cipher()
            self.note(
                f"the client finished its handshake with the interceptor ({obj.version()} {cipher[0] if cipher else '?'})"
            )
        return True

    def _client_plaintext(self, data: bytes) -> None:
        self.inner.feed("client", data)
        self._pending_line += data
        while (index := self._pending_line.find(b"\n")) >= 0:
            line = bytes(self._pending_line[: index + 1])
            del self._pending_line[: index + 1]
            self.client_lines += 1
            watching = self.hold_first_answer > 0  # only response injection asks (a fault's client may pipeline)
            if watching and self.client_lines == 2 and not self.answered and self.early_command is None:
                shown = self.inner.lines[-1].text if self.inner.lines else line.decode("latin-1").strip()
                self.early_command = shown
                self.note(
                    f"the client sent {shown!r} over TLS before the server had answered its first command: "
                    "it took the injected lines for answers"
                )


class _PlainLink(Link):
    """The plaintext inside TLS, as a :class:`Link` for :attr:`MITM.plain`: sends go through the two TLS sessions,
    the rest (resets, timers, notes) is the connection's own."""

    def __init__(self, mitm: MITM) -> None:
        self.mitm = mitm
        self.cell = mitm.link.cell
        self.analyzer: SessionAnalyzer = mitm.link.analyzer

    def to_client(self, data: bytes, *, record: bool = True) -> None:
        if data:
            self.mitm.send_client(data)
            self.mitm._deliver()

    def to_server(self, data: bytes) -> None:
        if data:
            self.mitm.send_server(data)
            self.mitm._deliver()

    def reset(self) -> None:
        self.mitm.link.reset()

    def close(self) -> None:
        self.mitm.link.close()

    def later(self, delay: float, callback: Callable[[], None]) -> None:
        self.mitm.link.later(delay, callback)

    def note(self, event: str) -> None:
        self.mitm.note(event)


def _read_all(obj: ssl.SSLObject) -> bytes:
    out = bytearray()
    while True:
        try:
            chunk = obj.read(65536)
        except (ssl.SSLWantReadError, ssl.SSLZeroReturnError):
            break
        except (ssl.SSLError, OSError):
            break
        if not chunk:
            break
        out += chunk
    return bytes(out)
