"""The session recorder: a relay in front of every cell that passes bytes through and writes down what crossed.

One :class:`Recorder` per grid runs one asyncio loop in a daemon thread. :meth:`Recorder.front` opens a
listener on 127.0.0.1 for one endpoint and returns the endpoint clients should dial (the same cell, the
relay's port; ``extra["upstream_port"]`` keeps the server's own). Each accepted connection is relayed
to the server unchanged; a :class:`SessionAnalyzer` reads both directions (the cleartext dialogue until
TLS starts, then the TLS records) and, when the connection ends, one JSON line is appended to the
cell's sessions file (``extra["sessions_file"]``), after an ``open`` line written when it began, so that
readers in other processes (``mailtls up`` serving a manifest, xdist workers) know to wait for it.

The relay is passive by default. A hostile-network cell (:mod:`pytest_mailtls.wire.attacks`) fronts its
server with an *active* :class:`Tap`: one instance per connection sees every chunk, from either side, and
decides what reaches the other (rewritten, withheld, answered itself, or a reset), through the
connection's :class:`Link`. The session then records what the *client* sent and what the client received,
so it shows what the client did after the attack. The passive path never calls a tap.

PYTEST_DONT_REWRITE
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Literal, cast

from ..upstream import describe, is_socket, open_connection
from .dialogue import Dialogue
from .session import Alert, ClientHello, DialogueLine, ServerHello, Session, StartTLS
from .tlsrecords import TLSObserver

if TYPE_CHECKING:
    from ..manifest import Endpoint
    from ..policy import Cell

__all__ = ["Link", "Recorder", "SessionAnalyzer", "Tap"]

Side = Literal["client", "server"]
_CHUNK = 65536
#: After one side closed, how long the other may go on before the relay cuts the connection.
HALF_CLOSE_GRACE = 10.0


class Link:
    """What an active tap can do on its connection (implemented by the relay's connection)."""

    analyzer: SessionAnalyzer
    cell: Cell

    def to_client(self, data: bytes, *, record: bool = True) -> None:
        """Send ``data`` to the client; the session records it as what the client received from the server
        (``record=False``: bytes the tap writes down itself, e.g. lines injected where TLS is due)."""
        raise NotImplementedError

    def to_server(self, data: bytes) -> None:
        """Send ``data`` to the server (held until the server's end is connected)."""
        raise NotImplementedError

    def reset(self) -> None:
        """Cut both ends with a TCP reset, as a middlebox that drops a connection does."""
        raise NotImplementedError

    def close(self) -> None:
        """Close both ends in order (FIN), once what was sent has gone out, as a server that hangs up does."""
        raise NotImplementedError

    def later(self, delay: float, callback: Callable[[], None]) -> None:
        """Call ``callback`` on the relay's loop after ``delay`` seconds (unless the connection ended)."""
        raise NotImplementedError

    def pass_eof(self) -> None:
        """Pass on the server's FIN that the tap held (:meth:`Tap.hold_eof`), if it came."""
        raise NotImplementedError

    def note(self, event: str) -> None:
        """Write down what the network did, in the session's ``attack`` list."""
        raise NotImplementedError


class Tap:
    """What the relay does with a connection's bytes. This base is passive (and never called: the relay
    forwards by itself); an active tap sets ``active`` and returns a fresh per-connection tap from
    :meth:`opened`, whose :meth:`from_client` and :meth:`from_server` decide what crosses."""

    active: ClassVar[bool] = False

    def opened(self, link: Link) -> Tap:
        """The tap for one new connection (the client's end is up; the server's may still be connecting)."""
        return self

    def from_client(self, link: Link, data: bytes) -> None:
        link.to_server(data)

    def from_server(self, link: Link, data: bytes) -> None:
        link.to_client(data)

    def closed(self, session: Session) -> None:
        """The connection ended: add what the tap learnt to the session record."""
        return None

    def hold_eof(self) -> bool:
        """The server sent FIN: whether it must wait until the tap has delivered what it still holds of the server's
        bytes (it then calls :meth:`Link.pass_eof`)."""
        return False


class SessionAnalyzer:
    """Reads one connection's bytes, both ways, into a :class:`Session`."""

    def __init__(self, *, session_id: str, cell: str, protocol: str, implicit: bool, client: str) -> None:
        self.session = Session(id=session_id, cell=cell, protocol=protocol, client=client, opened=time.time())
        self.dialogue: Dialogue | None = None if implicit else Dialogue(protocol)
        self.tls = TLSObserver()
        self._tls_active = implicit

    def feed(self, side: Side, data: bytes) -> None:
        if not data:
            return
        s = self.session
        if side == "client":
            s.bytes_from_client += len(data)
            if s.first_byte is None:
                s.first_byte = time.time()
        else:
            s.bytes_from_server += len(data)
        if not self._tls_active:
            assert self.dialogue is not None
            data = self.dialogue.feed(side, data)
            if not self.dialogue.tls_from_here or not data:
                return
            self._tls_active = True
        if s.tls_started is None:
            s.tls_started = time.time()
        if not self.tls.settled:
            self.tls.feed(side, data)

    def finish(
        self, *, closed_by: Side | Literal["relay"] | None, close_how: Literal["fin", "rst", "timeout"] | None
    ) -> Session:
        """The session record, with what the dialogue and the TLS observer learnt."""
        s = self.session
        s.closed = time.time()
        s.closed_by = closed_by
        s.close_how = close_how
        d = self.dialogue
        if d is not None:
            s.dialogue = [DialogueLine(dir=ln.dir, t=ln.t, text=ln.text) for ln in d.lines]
            s.dialogue_dropped = d.dropped
            s.starttls_offered = d.starttls_offered
            s.starttls = StartTLS(**vars(d.starttls)) if d.starttls else None
            s.tls_before_starttls = d.tls_before_starttls
            s.credentials = list(d.credentials)
            s.auth_answers = list(d.auth_answers)
            s.mail_commands = list(d.mail_commands)
            s.message_accepted = d.message_accepted
            s.rejections = list(d.rejections)
            s.sent_after_starttls = [_mask(line) for line in d.after_starttls]
        t = self.tls
        s.not_tls = t.not_tls
        if t.not_tls:
            s.first_client_bytes = t.first_client_bytes[:40].decode("latin-1")
        if t.client_hello is not None:
            s.client_hello = ClientHello(**vars(t.client_hello))
        if t.server_hello is not None and not t.server_hello.hello_retry:
            s.server_hello = ServerHello(version=t.server_hello.version, cipher=t.server_hello.cipher)
        s.alerts = [Alert(**vars(a)) for a in t.alerts]
        s.client_certificate = t.client_certificate
        s.client_finished = t.client_finished
        s.handshake_completed = t.handshake_completed
        s.client_app_data = t.client_app_data
        return s


class _Front:
    """One cell's listener."""

    def __init__(self, endpoint: Endpoint, upstream: tuple[str, int], path: Path, tap: Tap | None) -> None:
        self.endpoint = endpoint
        self.upstream = upstream
        self.path = path
        self.tap = tap
        self.server: asyncio.base_events.Server | None = None
        self.port = 0


class Recorder:
    """Relays in front of cells, recording every session; one event-loop thread for all of them."""

    def __init__(self, directory: str | os.PathLike[str], *, tap_for: Callable[[Endpoint], Tap] | None = None) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._tap_for = tap_for or (lambda endpoint: Tap())
        self._loop = _new_loop()
        self._thread = threading.Thread(target=self._run, name="mailtls-recorder", daemon=True)
        self._fronts: list[_Front] = []
        self._live: set[_Connection] = set()
        self._ids = itertools.count(1)
        self._stopped = False
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_forever()

    # --- fronting ------------------------------------------------------------------------
    def front(self, endpoint: Endpoint, *, cell: Cell | None = None, tap: Tap | None = None) -> Endpoint:
        """Listen for ``endpoint``'s cell on a fresh 127.0.0.1 port; return the endpoint clients dial.

        ``cell`` and ``tap``: a hostile-network cell in front of ``endpoint``'s server, played by an active tap
        (the endpoint returned is that cell's, on the relay's port; ``endpoint`` itself is left as it is).
        """
        served = endpoint if cell is None else replace(endpoint, cell=cell)
        path = self.directory / f"{served.id}.jsonl"
        path.touch()
        tap = tap if tap is not None else self._tap_for(served)
        front = _Front(served, (endpoint.host, endpoint.port), path, tap if tap.active else None)
        future = asyncio.run_coroutine_threadsafe(self._listen(front), self._loop)
        front.port = future.result(timeout=10)
        self._fronts.append(front)
        extra = {
            **served.extra,
            "upstream_host": endpoint.host,
            "upstream_port": endpoint.port,
            "sessions_file": str(path),
        }
        return replace(served, host="127.0.0.1", port=front.port, extra=extra)

    async def _listen(self, front: _Front) -> int:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        front.server = await self._loop.create_server(lambda: _ClientSide(self, front), sock=sock, backlog=128)
        return int(sock.getsockname()[1])

    def _session_id(self) -> str:
        return f"{os.getpid()}-{next(self._ids)}"

    # --- stopping ------------------------------------------------------------------------
    def stop(self) -> None:
        """Close every listener and connection (each open session is written, closed by ``relay``)."""
        if self._stopped:
            return
        self._stopped = True

        async def shutdown() -> None:
            for front in self._fronts:
                if front.server is not None:
                    front.server.close()
            for conn in list(self._live):
                conn.finish(closed_by="relay", close_how=None)

        if self._loop.is_running():
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(timeout=5)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)
        with contextlib.suppress(RuntimeError):
            self._loop.close()

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _Connection(Link):
    """One relayed connection: the client's transport, the server's, the analyzer, and how it ended."""

    def __init__(self, recorder: Recorder, front: _Front, client: asyncio.Transport) -> None:
        self.recorder, self.front, self.client = recorder, front, client
        self.upstream: asyncio.Transport | None = None
        peer = client.get_extra_info("peername") or ("?", 0)
        cell = front.endpoint.cell
        self.analyzer = SessionAnalyzer(
            session_id=recorder._session_id(),
            cell=cell.id,
            protocol=str(cell.protocol),
            implicit=cell.mode.value == "implicit",
            client=f"{peer[0]}:{peer[1]}",
        )
        self.closed_by: Side | Literal["relay"] | None = None
        self.close_how: Literal["fin", "rst", "timeout"] | None = None
        self.eof: set[Side] = set()
        self.pending: list[bytes] = []  # what the client sent before the server side was connected
        self.eof_held = False  # the server's FIN, held by the tap (Tap.hold_eof)
        self.done = False
        self.grace: asyncio.TimerHandle | None = None
        s = self.analyzer.session
        _append(
            front.path,
            {
                "event": "open",
                "id": s.id,
                "cell": s.cell,
                "protocol": s.protocol,
                "client": s.client,
                "opened": s.opened,
            },
        )
        recorder._live.add(self)
        self.cell = cell
        self.tap: Tap | None = None
        if front.tap is not None:  # a hostile network: the tap decides what crosses
            self.analyzer.session.network = cell.network
            self.tap = front.tap.opened(self)

    def data(self, side: Side, data: bytes) -> None:
        if self.tap is not None:
            if side == "client":
                self.analyzer.feed("client", data)  # what the client sent; what it received is fed by to_client
                self.tap.from_client(self, data)
            else:
                self.tap.from_server(self, data)
            return
        if side == "client":
            if self.upstream is None:
                self.pending.append(data)
            else:
                self.upstream.write(data)
        else:
            self.client.write(data)
        self.analyzer.feed(side, data)

    # --- Link: what an active tap does -----------------------------------------------------
    def to_client(self, data: bytes, *, record: bool = True) -> None:
        if "server" in self.eof and not self.eof_held:
            return  # the client was told the server is done (write_eof): nothing more can go its way
        if data and not self.done:
            self.client.write(data)
            if record:
                self.analyzer.feed("server", data)

    def to_server(self, data: bytes) -> None:
        if not data or self.done or "client" in self.eof:
            return  # after the client's FIN the server got write_eof: a tap's late bytes (a TLS close) have nowhere to go
        if self.upstream is None:
            self.pending.append(data)
        else:
            self.upstream.write(data)

    def reset(self) -> None:
        self.finish(closed_by="relay", close_how="rst")

    def pass_eof(self) -> None:
        if self.eof_held and not self.done:
            self.eof_held = False
            with contextlib.suppress(OSError, RuntimeError, NotImplementedError):
                if not self.client.is_closing() and self.client.can_write_eof():
                    self.client.write_eof()

    def close(self) -> None:
        self.finish(closed_by="relay", close_how="fin")

    def later(self, delay: float, callback: Callable[[], None]) -> None:
        def call() -> None:
            if not self.done:
                callback()

        self.recorder._loop.call_later(delay, call)

    def note(self, event: str) -> None:
        self.analyzer.session.attack.append(event)

    def half_closed(self, side: Side) -> None:
        """``side`` sent FIN: pass it on; the other side gets a while to finish its answer."""
        if self.closed_by is None:
            self.closed_by, self.close_how = side, "fin"
        self.eof.add(side)
        other = self.upstream if side == "client" else self.client
        if side == "server" and self.tap is not None and self.tap.hold_eof():
            self.eof_held = True  # the tap passes it on once the server's last bytes are out
        elif other is not None and not other.is_closing():
            with contextlib.suppress(OSError, RuntimeError, NotImplementedError):
                if other.can_write_eof():
                    other.write_eof()
        if len(self.eof) == 2:
            self.finish()
        elif self.grace is None:
            self.grace = self.recorder._loop.call_later(HALF_CLOSE_GRACE, self._timeout)

    def _timeout(self) -> None:
        self.close_how = "timeout" if self.close_how != "rst" else self.close_how
        self.finish()

    def lost(self, side: Side, exc: Exception | None) -> None:
        if self.done:
            return
        if exc is not None:  # a reset (or another error) rather than an orderly close
            if self.closed_by is None or side not in self.eof:
                self.closed_by, self.close_how = (
                    (side, "rst") if self.closed_by is None else (self.closed_by, self.close_how)
                )
            other = self.upstream if side == "client" else self.client
            if other is not None:
                other.abort()  # pass the reset on
        self.finish()

    def finish(
        self,
        *,
        closed_by: Side | Literal["relay"] | None = None,
        close_how: Literal["fin", "rst", "timeout"] | None = None,
    ) -> None:
        if self.done:
            return
        self.done = True
        if self.grace is not None:
            self.grace.cancel()
        if closed_by is not None:
            self.closed_by, self.close_how = closed_by, close_how
        for transport in (self.client, self.upstream):
            if transport is not None and not transport.is_closing():
                if self.close_how == "rst":
                    transport.abort()
                else:
                    transport.close()
        self.recorder._live.discard(self)
        record = self.analyzer.finish(closed_by=self.closed_by, close_how=self.close_how)
        if self.tap is not None:
            with contextlib.suppress(Exception):  # a tap's bookkeeping must never lose the record
                self.tap.closed(record)
        _append(self.front.path, '{"event":"close",' + record.model_dump_json()[1:])


class _ClientSide(asyncio.Protocol):
    """The client's end of a relayed connection; connects the server's end when a client arrives."""

    def __init__(self, recorder: Recorder, front: _Front) -> None:
        self.recorder, self.front = recorder, front
        self.conn: _Connection | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass asyncio's
        _nodelay(transport)
        self.conn = _Connection(self.recorder, self.front, transport)
        transport.pause_reading()  # until the server's end is connected
        self.recorder._loop.create_task(self._connect_upstream(transport))

    async def _connect_upstream(self, transport: asyncio.Transport) -> None:
        conn = self.conn
        assert conn is not None
        host, port = self.front.upstream
        try:
            upstream, _ = await open_connection(self.recorder._loop, lambda: _ServerSide(conn), host, port)
        except OSError as exc:
            conn.analyzer.session.upstream_error = f"{describe(host, port)}: {exc.strerror or exc}"
            conn.finish(closed_by="relay", close_how="rst")
            return
        if conn.done:
            upstream.close()
            return
        _nodelay(upstream)
        conn.upstream = upstream
        if not is_socket(host):  # through a unix socket the server sees the container relay's port instead
            conn.analyzer.session.upstream_port = int(upstream.get_extra_info("sockname")[1])
        for chunk in conn.pending:
            upstream.write(chunk)
        conn.pending.clear()
        if "client" in conn.eof and upstream.can_write_eof():
            upstream.write_eof()
        if not transport.is_closing():
            transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        if self.conn is not None:
            self.conn.data("client", data)

    def eof_received(self) -> bool:
        if self.conn is not None:
            self.conn.half_closed("client")
        return True  # keep our writing side open: the server may still answer

    def connection_lost(self, exc: Exception | None) -> None:
        if self.conn is not None:
            self.conn.lost("client", exc)

    def pause_writing(self) -> None:  # the client reads slowly: stop reading the server
        if self.conn is not None and self.conn.upstream is not None:
            self.conn.upstream.pause_reading()

    def resume_writing(self) -> None:
        if self.conn is not None and self.conn.upstream is not None and not self.conn.upstream.is_closing():
            self.conn.upstream.resume_reading()


class _ServerSide(asyncio.Protocol):
    """The server's end of a relayed connection."""

    def __init__(self, conn: _Connection) -> None:
        self.conn = conn

    def data_received(self, data: bytes) -> None:
        self.conn.data("server", data)

    def eof_received(self) -> bool:
        self.conn.half_closed("server")
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.conn.lost("server", exc)

    def pause_writing(self) -> None:  # the server reads slowly: stop reading the client
        self.conn.client.pause_reading()

    def resume_writing(self) -> None:
        if not self.conn.client.is_closing():
            self.conn.client.resume_reading()


def _mask(line: str) -> str:
    """A pipelined line as the transcript shows it: credentials never written down."""
    words = line.split(" ", 2)
    upper = [w.upper() for w in words]
    if upper[0] in ("AUTH", "PASS", "APOP") or (len(upper) > 1 and upper[1] in ("LOGIN", "AUTHENTICATE")):
        return " ".join(words[:2]) + " ***"
    return line


def _new_loop() -> asyncio.AbstractEventLoop:
    """uvloop where it is installed (libuv: about half the per-chunk cost of the stock loop), else asyncio's own."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    return loop


def _nodelay(transport: asyncio.BaseTransport) -> None:
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _append(path: Path, event: dict[str, object] | str) -> None:
    """One JSON line (an object, or its JSON text), in one write on an O_APPEND descriptor: readers never see two
    records interleaved."""
    text = event if isinstance(event, str) else json.dumps(event, separators=(",", ":"))
    line = (text + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)
