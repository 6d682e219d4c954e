"""Serve a set of cells: one server per backend, started side by side, stopped together.

The plugin and the CLI both serve through here, so a failed start, Ctrl-C or
the end of a run always tears down everything that was started.
"""

from __future__ import annotations

import importlib
import shutil
import tempfile
import threading
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from .backends.base import Backend, Progress, RunningServer, StartOptions, no_progress
from .backends.stack import link_backends
from .errors import MailTLSError
from .manifest import Endpoint
from .matrix import filter_cells
from .pki import SessionPKI
from .policy import SERVERS, Cell
from .wire.recorder import Recorder

__all__ = [
    "DOCKER_SERVERS",
    "Grid",
    "ServerChoice",
    "choose_servers",
    "get_backend",
    "parse_servers",
]

#: Backends that need a Docker engine.
DOCKER_SERVERS: tuple[str, ...] = ("postfix", "dovecot", "james")

_BACKENDS = {
    "postfix": "pytest_mailtls.backends.postfix:PostfixBackend",
    "dovecot": "pytest_mailtls.backends.dovecot:DovecotBackend",
    "james": "pytest_mailtls.backends.james:JamesBackend",
    "embedded": "pytest_mailtls.backends.embedded:EmbeddedBackend",
}


def get_backend(name: str) -> Backend:
    """The backend called ``name`` (imported lazily: docker stays unimported until needed)."""
    try:
        target = _BACKENDS[name]
    except KeyError:
        raise MailTLSError(f"unknown server {name!r}; choose from {', '.join(SERVERS)}") from None
    module, _, cls = target.partition(":")
    backend: Backend = getattr(importlib.import_module(module), cls)()
    return backend


def parse_servers(value: str | Sequence[str] | None) -> list[str] | None:
    """``"postfix,dovecot"`` -> ``["postfix", "dovecot"]``; ``None``/``"auto"`` -> ``None`` (auto)."""
    if value is None:
        return None
    items = [s.strip() for s in (value.split(",") if isinstance(value, str) else value) if s.strip()]
    if not items or items == ["auto"]:
        return None
    for item in items:
        if item not in SERVERS:
            raise MailTLSError(
                f"unknown server {item!r} in --mailtls-servers/--servers; choose from {', '.join(SERVERS)} or 'auto'"
            )
    return list(dict.fromkeys(items))


@dataclass(frozen=True)
class ServerChoice:
    servers: list[str]
    note: str | None  # said once to the user when auto fell back to the embedded backend
    engine_problem: str | None


def choose_servers(requested: Sequence[str] | None) -> ServerChoice:
    """Resolve ``auto`` (None): the containerized servers if a Docker engine answers, else embedded."""
    from .runtime import engine_problem

    needs_engine = requested is None or any(s in DOCKER_SERVERS for s in requested)
    problem = engine_problem() if needs_engine else None
    if requested is not None:
        return ServerChoice(list(requested), None, problem)
    if problem is None:
        return ServerChoice(list(DOCKER_SERVERS), None, None)
    note = (
        "No Docker engine is reachable: serving the grid with the embedded backend (SMTP cells in this process). "
        "For Postfix, Dovecot and James start an engine (as root: `bash containers/base/start-engine.sh` in a "
        "checkout) or point DOCKER_HOST at one."
    )
    return ServerChoice(["embedded"], note, problem)


_reaped = False


def _reap_once(progress: Progress) -> None:
    """Remove containers of earlier runs that died (killed pytest, lost CI job), once per process."""
    global _reaped
    if _reaped:
        return
    _reaped = True
    from .runtime import reap_orphans

    removed = reap_orphans(progress=progress)
    if removed:
        progress(f"removed {len(removed)} container(s) left by runs that died: {', '.join(removed)}")


class Grid:
    """Running servers for ``cells``: one per backend.

    >>> with Grid(cells, workdir=tmp) as grid:
    ...     for endpoint in grid.endpoints: ...
    """

    def __init__(
        self,
        cells: Iterable[Cell],
        *,
        workdir: str | Path | None = None,
        pki: SessionPKI | None = None,
        ready_timeout: float = 90.0,
        progress: Progress = no_progress,
    ) -> None:
        self.cells = list(cells)
        self._own_workdir = workdir is None
        self.workdir = Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="mailtls-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.pki = pki or SessionPKI(self.workdir / "pki")
        self.ready_timeout = ready_timeout
        self.progress = progress
        self.servers: dict[str, RunningServer] = {}
        self.skipped: dict[str, str] = {}  # cell id -> why its backend cannot serve it
        self._lock = threading.Lock()
        self.recorder: Recorder | None = None

    @property
    def endpoints(self) -> list[Endpoint]:
        by_id = {e.id: e for server in self.servers.values() for e in server.endpoints}
        return [by_id[c.id] for c in self.cells if c.id in by_id]

    def endpoint(self, cell_id: str) -> Endpoint:
        for server in self.servers.values():
            for endpoint in server.endpoints:
                if endpoint.id == cell_id:
                    return endpoint
        reason = self.skipped.get(cell_id, "it is not part of this grid")
        raise MailTLSError(f"cell {cell_id} is not served: {reason}")

    def find(self, **criteria: str | Sequence[str]) -> list[Endpoint]:
        """Endpoints whose cells match, like the ``mailtls`` marker: ``grid.find(policy="modern")``."""
        ids = {c.id for c in filter_cells([e.cell for e in self.endpoints], criteria)}
        return [e for e in self.endpoints if e.id in ids]

    def start(self) -> Grid:
        """Start one server per backend, concurrently; on any failure stop all and re-raise."""
        by_server: dict[str, list[Cell]] = {}
        for cell in self.cells:
            by_server.setdefault(cell.server, []).append(cell)
        plans: dict[str, tuple[Backend, list[Cell]]] = {}
        for name, cells in by_server.items():
            backend = get_backend(name)
            served = []
            for cell in cells:
                why = backend.unsupported(cell)
                if why:
                    self.skipped[cell.id] = why
                else:
                    served.append(cell)
            if served:
                plans[name] = (backend, served)

        if any(name in DOCKER_SERVERS for name in plans):
            _reap_once(self.progress)
        recorder = self.recorder = Recorder(self.workdir / "sessions")
        # Backends that work together (Postfix handing mail and SASL to Dovecot) learn about each other
        # before anything starts; each start's outcome is published to the others through its peer.
        peers = link_backends({name: (b, c, self.workdir / name) for name, (b, c) in plans.items()})

        def start_one(name: str) -> None:
            backend, cells = plans[name]
            self.progress(f"{name}: starting {len(cells)} cells")
            options = StartOptions(
                pki=self.pki,
                workdir=self.workdir / name,
                ready_timeout=self.ready_timeout,
                progress=lambda line: self.progress(line if line.startswith(f"{name}:") else f"{name}: {line}"),
            )
            try:
                options.workdir.mkdir(parents=True, exist_ok=True)
                server = backend.start(cells, options)
            except BaseException as exc:
                peers[name].resolve(error=exc)
                raise
            with self._lock:
                self.servers[name] = server
            # Clients dial the recorder, which relays to the server and writes down every session.
            server.endpoints = [recorder.front(e) for e in server.endpoints]
            peers[name].resolve(server)
            self.progress(f"{name}: {len(server.endpoints)} cells ready")

        try:
            with ThreadPoolExecutor(max_workers=max(1, len(plans))) as pool:
                futures = [pool.submit(start_one, name) for name in plans]
                errors = [f.exception() for f in futures]
            first = next((e for e in errors if e is not None), None)
            if first is not None:
                raise first
        except BaseException:
            self.stop()
            raise
        return self

    def logs(self, server: str) -> str:
        running = self.servers.get(server)
        return running.logs() if running else ""

    def cell_logs(self, cell_id: str) -> list[str]:
        """Server log lines about one cell, where the backend can tell them apart."""
        for server in self.servers.values():
            if any(e.id == cell_id for e in server.endpoints):
                return list(server.cell_logs(cell_id))
        return []

    def stop(self) -> None:
        """Stop every server (best effort, never raises), then remove the work dir if we made it."""
        with self._lock:
            servers, self.servers = list(self.servers.values()), {}
        recorder, self.recorder = self.recorder, None
        if recorder is not None:
            recorder.stop()
        for server in servers:
            try:
                server.stop()
            except Exception as exc:  # teardown is best-effort; report and go on
                self.progress(f"warning: could not stop a server cleanly: {exc}")
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Grid:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
