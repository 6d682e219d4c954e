"""The session recorder: a relay in front of every cell that passes bytes through and writes down what crossed.

One :class:`Recorder` per grid runs one asyncio loop in a daemon thread. :meth:`Recorder.front` opens a
listener on 127.0.0.1 for one endpoint and returns the endpoint clients should dial (the same cell, the
relay's port; ``extra["upstream_port"]`` keeps the server's own). Each accepted connection is relayed
to the server unchanged; a :class:`SessionAnalyzer` reads both directions (the cleartext dialogue until
TLS starts, then the TLS records) and, when the connection ends, one JSON line is appended to the
cell's sessions file (``extra["sessions_file"]``), after an ``open`` line written when it began, so that
readers in other processes (``mailtls up`` serving a manifest, xdist workers) know to wait for it.

The relay is passive here. :class:`Tap` is the seam for an active role (hostile-network cells): it sees
every chunk before it is forwarded and returns what to forward instead.
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
from typing import TYPE_CHECKING, Literal

from .dialogue import Dialogue
from .session import Alert, ClientHello, DialogueLine, ServerHello, Session, StartTLS
from .tlsrecords import TLSObserver

if TYPE_CHECKING:
    from ..manifest import Endpoint

__all__ = ["Recorder", "SessionAnalyzer", "Tap"]

Side = Literal["client", "server"]
_CHUNK = 65536
#: After one side closed, how long the other may go on before the relay cuts the connection.
HALF_CLOSE_GRACE = 10.0


class Tap:
    """What the relay does with each chunk: pass it on unchanged. Subclasses may rewrite or inject."""

    def client_to_server(self, analyzer: SessionAnalyzer, data: bytes) -> bytes:
        return data

    def server_to_client(self, analyzer: SessionAnalyzer, data: bytes) -> bytes:
        return data


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

    def __init__(self, endpoint: Endpoint, upstream: tuple[str, int], path: Path, tap: Tap) -> None:
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
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="mailtls-recorder", daemon=True)
        self._fronts: list[_Front] = []
        self._connections: set[asyncio.Task[None]] = set()
        self._ids = itertools.count(1)
        self._stopped = False
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_forever()

    # --- fronting ------------------------------------------------------------------------
    def front(self, endpoint: Endpoint) -> Endpoint:
        """Listen for ``endpoint``'s cell on a fresh 127.0.0.1 port; return the endpoint clients dial."""
        path = self.directory / f"{endpoint.id}.jsonl"
        path.touch()
        front = _Front(endpoint, (endpoint.host, endpoint.port), path, self._tap_for(endpoint))
        future = asyncio.run_coroutine_threadsafe(self._listen(front), self._loop)
        front.port = future.result(timeout=10)
        self._fronts.append(front)
        extra = {**endpoint.extra, "upstream_port": endpoint.port, "sessions_file": str(path)}
        return replace(endpoint, port=front.port, extra=extra)

    async def _listen(self, front: _Front) -> int:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        front.server = await asyncio.start_server(lambda r, w: self._accept(front, r, w), sock=sock, backlog=128)
        return int(sock.getsockname()[1])

    def _accept(self, front: _Front, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = self._loop.create_task(self._relay(front, reader, writer))
        self._connections.add(task)
        task.add_done_callback(self._connections.discard)

    # --- relaying ------------------------------------------------------------------------
    async def _relay(self, front: _Front, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername") or ("?", 0)
        cell = front.endpoint.cell
        analyzer = SessionAnalyzer(
            session_id=f"{os.getpid()}-{next(self._ids)}",
            cell=cell.id,
            protocol=str(cell.protocol),
            implicit=cell.mode.value == "implicit",
            client=f"{peer[0]}:{peer[1]}",
        )
        _nodelay(writer)
        s = analyzer.session
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
        closed: dict[str, object] = {"by": None, "how": None}
        try:
            up_reader, up_writer = await asyncio.open_connection(*front.upstream)
        except OSError as exc:
            s.upstream_error = f"{front.upstream[0]}:{front.upstream[1]}: {exc.strerror or exc}"
            writer.transport.abort()
            _append(front.path, {"event": "close", **analyzer.finish(closed_by="relay", close_how="rst").model_dump()})
            return
        _nodelay(up_writer)
        s.upstream_port = int(up_writer.get_extra_info("sockname")[1])

        async def pump(side: Side, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            tap = front.tap.client_to_server if side == "client" else front.tap.server_to_client
            while True:
                try:
                    data = await src.read(_CHUNK)
                except (ConnectionResetError, BrokenPipeError):
                    if closed["by"] is None:
                        closed.update(by=side, how="rst")
                    dst.transport.abort()  # pass the reset on
                    return
                if not data:
                    if closed["by"] is None:
                        closed.update(by=side, how="fin")
                    with contextlib.suppress(OSError, RuntimeError):
                        if dst.can_write_eof():
                            dst.write_eof()  # half-close: the other side may still answer
                    return
                out = tap(analyzer, data)
                analyzer.feed(side, data)
                if out:
                    dst.write(out)
                    try:
                        await dst.drain()
                    except (ConnectionResetError, BrokenPipeError):
                        if closed["by"] is None:
                            closed.update(by="server" if side == "client" else "client", how="rst")
                        return

        pumps = [
            asyncio.ensure_future(pump("client", reader, up_writer)),
            asyncio.ensure_future(pump("server", up_reader, writer)),
        ]
        try:
            _done, pending = await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
            if pending:  # one side closed: the other gets a while to finish its answer, then is cut
                _done, pending = await asyncio.wait(pending, timeout=HALF_CLOSE_GRACE)
                for task in pending:
                    task.cancel()
                if pending and closed["how"] != "rst":
                    closed["how"] = "timeout"
        except asyncio.CancelledError:
            for task in pumps:
                task.cancel()
            closed.update(by="relay", how=None)
        finally:
            for w in (writer, up_writer):
                w.transport.abort() if closed["how"] == "rst" else w.close()
            record = analyzer.finish(closed_by=closed["by"], close_how=closed["how"])  # type: ignore[arg-type]
            _append(front.path, {"event": "close", **record.model_dump()})

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
            tasks = list(self._connections)
            for task in tasks:
                task.cancel()
            if tasks:
                await asyncio.wait(tasks, timeout=2)

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


def _nodelay(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _append(path: Path, event: dict[str, object]) -> None:
    """One JSON line, in one write on an O_APPEND descriptor: readers never see two records interleaved."""
    line = (json.dumps(event, separators=(",", ":")) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)
