"""Serve a set of cells: one server per backend, started side by side, stopped together.

The plugin and the CLI both serve through here, so a failed start, Ctrl-C or
the end of a run always tears down everything that was started. The work dir
and the PKI dir are registered with the runtime like containers, so a run that
dies leaves them to the next run's reaper; starts run in daemon threads that a
cancel event stops, so Ctrl-C or SIGTERM during a start ends it at once.

PYTEST_DONT_REWRITE
"""

from __future__ import annotations

import functools
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, wait
from pathlib import Path
from typing import Any

from .backends import REGISTRY, docker_servers, server_names
from .backends import get_backend as _get_backend
from .backends.base import Backend, Progress, RunningServer, StartOptions, no_progress
from .backends.stack import Peer, link_backends
from .errors import MailTLSError
from .manifest import Endpoint
from .matrix import filter_cells
from .pki import SessionPKI
from .policy import Cell
from .selection import ServerChoice, choose_servers, parse_servers
from .wire.recorder import Recorder

__all__ = [  # and DOCKER_SERVERS, answered by the registry (see __getattr__)
    "Grid",
    "ServerChoice",
    "choose_servers",
    "get_backend",
    "parse_servers",
]


def get_backend(name: str) -> Backend:
    """The backend called ``name`` (imported lazily: docker stays unimported until needed)."""
    if name not in REGISTRY:
        raise MailTLSError(f"unknown server {name!r}; choose from {', '.join(server_names())}")
    return _get_backend(name)


def __getattr__(name: str) -> Any:
    # DOCKER_SERVERS, kept for code written against earlier releases: the registry answers it.
    if name == "DOCKER_SERVERS":
        return docker_servers()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


_reaped = False


def _reap_once(progress: Progress, *, engine: bool) -> None:
    """Remove what earlier runs of this user that died left (killed pytest, lost CI job), once per process:
    their temp dirs always, their containers and networks when ``engine`` (a Docker server is planned)."""
    global _reaped
    if _reaped:
        return
    from . import runtime

    if engine:
        _reaped = True
        removed = runtime.reap_orphans(progress=progress)
    else:
        removed = runtime._reap_dirs(progress)
    if removed:
        progress(f"removed {len(removed)} thing(s) left by runs that died: {', '.join(removed)}")


def _hostile_problem(cell: Cell) -> str | None:
    """Why a hostile-network cell cannot be played (an unknown attack, or one that does not fit the cell)."""
    from .wire.attacks import NETWORKS

    attack = NETWORKS.get(cell.network or "")
    if attack is None:
        return f"unknown hostile network or fault {cell.network!r}; known: {', '.join(NETWORKS)}"
    if not attack.applies(cell):
        return f"the {attack.name} attack does not apply to {cell.protocol} in mode {cell.mode}"
    return None


# --------------------------------------------------------------------------- temp-dir registration


def _register_dirs(grid: Grid) -> None:
    """Register the grid's work dir (deleted at stop, or at exit, when the grid made it) and the PKI's dir
    with the runtime: a marker names this process, so if it dies the next run (or `mailtls reap`) deletes
    them. Called as soon as the work dir exists, before any key is written into it."""
    from .runtime import register_dir

    if not grid._registered and (grid._own_workdir or grid._disposable_workdir):
        register_dir(grid.workdir, remove_at_exit=grid._own_workdir)
        grid._registered = True
    if not grid._pki_registered and not _pki_inside(grid) and _disposable_pki(grid.pki):
        register_dir(grid.pki.directory)
        grid._pki_registered = True


def _disposable(path: Path) -> bool:
    """Whether a dead run's reaper may delete ``path`` whole: strictly inside the system temp dir (pytest's
    basetemp, mkdtemp), never the temp dir itself or a folder holding it."""
    temp = Path(tempfile.gettempdir()).resolve()
    resolved = path.resolve()
    return resolved != temp and resolved.is_relative_to(temp)


def _disposable_workdir(path: Path) -> bool:
    """A given work dir is the grid's to delete after a crash only when it is a fresh temp dir: missing or
    empty when the grid was made (``tmp_path_factory.mktemp``), not a folder of the user's."""
    return _disposable(path) and (not path.exists() or not any(path.iterdir()))


def _disposable_pki(pki: SessionPKI) -> bool:
    """The session PKI's dir may go after a crash when it is a temp dir holding nothing but what a
    :class:`SessionPKI` writes there."""
    from .pki import CA_KEY_NAME, LOCK_NAME, REVOCATION_DIR
    from .policy import CertProfile

    known = {
        "ca.pem",
        CA_KEY_NAME,
        LOCK_NAME,
        REVOCATION_DIR,
        "client",
        "foreign-client",
        *(str(p) for p in CertProfile),
    }
    return _disposable(pki.directory) and all(entry.name in known for entry in pki.directory.iterdir())


def _release_dirs(grid: Grid, *, keep_index: bool = False) -> None:
    """The counterpart of :func:`_register_dirs`, at stop: delete the work dir if the grid made it
    (``keep_index``: start threads still run and may write into it again; the reaper takes it then)."""
    from .runtime import release_dir

    if grid._pki_registered:
        grid._pki_registered = False
        release_dir(grid.pki.directory)
    if grid._registered:
        grid._registered = False
        release_dir(grid.workdir, remove=grid._own_workdir, keep_index=keep_index)
    elif grid._own_workdir:
        shutil.rmtree(grid.workdir, ignore_errors=True)


def _register_dirs_early(grid: Grid) -> None:
    """Register a work dir the grid made before anything is written into it (the PKI comes next)."""
    from .runtime import register_dir

    register_dir(grid.workdir, remove_at_exit=True)
    grid._registered = True


def _pki_inside(grid: Grid) -> bool:
    return grid.pki.directory.resolve().is_relative_to(grid.workdir.resolve())


# --------------------------------------------------------------------------- interruptible start

#: How long an interrupted start waits for its threads to notice before it removes what they made anyway.
CANCEL_GRACE = 0.5


def _prepare_pki(pki: SessionPKI, cells: Iterable[Cell], hostile: Iterable[Cell] = ()) -> None:
    """Make every key and certificate the starts will need, here in the main thread: a Ctrl-C during the
    slowest part of a start (key generation, serialized by the PKI anyway) then interrupts it at once, and
    no start thread is left writing keys into a work dir that the interrupted grid already removed. The
    certificates that ``hostile`` cells' relays present are made here too, not on the relay's loop."""
    from .wire.attacks import presented_profiles

    cells = list(cells)
    profiles = [c.cert for c in cells if c.cert is not None] + presented_profiles(hostile)
    pki.prepare(profiles, client=any(c.auth.client_cert for c in cells))


def _start_in_threads(jobs: dict[str, Callable[[], None]], futures: list[Future[None]]) -> None:
    """Run each job in its own daemon thread: a process interrupted during a start exits without waiting
    for a job (an image build can take minutes); the jobs' cancel event makes them end on their own. Each
    job's future is in ``futures`` before its thread starts, so an interrupt at any moment sees it."""
    for name, job in jobs.items():
        future: Future[None] = Future()
        future.set_running_or_notify_cancel()
        futures.append(future)

        def run(job: Callable[[], None] = job, future: Future[None] = future) -> None:
            try:
                job()
            except BaseException as exc:
                future.set_exception(exc)
            else:
                future.set_result(None)

        threading.Thread(target=run, name=f"mailtls-start-{name}", daemon=True).start()


def _wait_starts(futures: Sequence[Future[None]]) -> BaseException | None:
    """Wait for every start, in short slices so that Ctrl-C and SIGTERM are handled at once in the main
    thread; return the first error, as soon as one happens."""
    pending = set(futures)
    while pending:
        done, pending = wait(pending, timeout=0.1, return_when=FIRST_EXCEPTION)
        for future in done:
            error = future.exception()
            if error is not None:
                return error
    return None


def _abandon_starts(grid: Grid, futures: Sequence[Future[None]], *, interrupted: bool) -> None:
    """Cancel the starts in progress: remove their containers now (``interrupted``: from the runtime's
    detached janitor, so that the process exits at once), give their threads a moment to end, then stop
    what did start. A thread that ends later still cleans up after itself."""
    from .runtime import cancel_starts

    cancel_starts(grid._cancel, background=interrupted)
    _, running = wait(futures, timeout=CANCEL_GRACE if interrupted else None)
    # Interrupted, a start thread may yet write into the work dir (and so make it again): the index keeps
    # naming it, for the next run's reaper; the reaper drops the entry once the dir is gone.
    grid._stop(keep_index=interrupted or bool(running))


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
        self._registered = self._pki_registered = False
        self._disposable_workdir = workdir is not None and _disposable_workdir(Path(workdir))
        self.workdir = Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="mailtls-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.ready_timeout = ready_timeout
        self.progress = progress
        self.servers: dict[str, RunningServer] = {}
        self.skipped: dict[str, str] = {}  # cell id -> why its backend cannot serve it
        self._lock = threading.Lock()
        self._cancel = threading.Event()  # set when a start is interrupted or one server fails
        try:
            if self._own_workdir:
                _register_dirs_early(self)
            self.pki = pki or SessionPKI(self.workdir / "pki")
            _register_dirs(self)
        except BaseException:  # Ctrl-C during the CA's key generation: leave no dir behind
            _release_dirs(self)
            raise
        self.recorder: Recorder | None = None
        self._hostile: dict[str, list[Cell]] = {}  # base cell id -> hostile-network cells played in front of it
        self._own_pki = pki is None  # its revocation responder (if started) ends with the grid

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
        """Start one server per backend, concurrently; on any failure stop all and re-raise.

        A hostile-network cell is served by its base cell's real server, fronted by a relay of its own that plays
        the attack (the base cell is started for it even when it is not one of the grid's cells).
        """
        by_server: dict[str, list[Cell]] = {}
        self._hostile = {}
        for cell in self.cells:
            base = cell.base
            if cell.network is not None:
                why_not = _hostile_problem(cell)
                if why_not:
                    self.skipped[cell.id] = why_not
                    continue
                self._hostile.setdefault(base.id, []).append(cell)
            cells = by_server.setdefault(cell.server, [])
            if base not in cells:
                cells.append(base)
        plans: dict[str, tuple[Backend, list[Cell]]] = {}
        for name, cells in by_server.items():
            backend = get_backend(name)
            served = []
            for cell in cells:
                why = backend.unsupported(cell)
                if why:
                    self.skipped[cell.id] = why
                    for hostile in self._hostile.pop(cell.id, []):
                        self.skipped[hostile.id] = why
                else:
                    served.append(cell)
            if served:
                plans[name] = (backend, served)

        futures: list[Future[None]] = []
        try:
            _reap_once(self.progress, engine=any(name in docker_servers() for name in plans))
            _register_dirs(self)
            self._cancel.clear()
            relayed = [h for group in self._hostile.values() for h in group]
            _prepare_pki(self.pki, [c for _, cells in plans.values() for c in cells], relayed)
            if self.recorder is None:  # clients dial the recorder, which relays and writes down every session
                self.recorder = Recorder(self.workdir / "sessions")
            # Backends that work together (Postfix handing mail and SASL to Dovecot) learn about each other
            # before anything starts; each start's outcome is published to the others through its peer.
            peers = link_backends({name: (b, c, self.workdir / name) for name, (b, c) in plans.items()})
            _start_in_threads({name: functools.partial(self._start_one, plans, peers, name) for name in plans}, futures)
            first = _wait_starts(futures)
        except BaseException:  # Ctrl-C, SIGTERM (as KeyboardInterrupt or SystemExit): stop now, not after the starts
            from .runtime import signals_deferred

            with signals_deferred(self.progress):
                _abandon_starts(self, futures, interrupted=True)
            raise
        if first is not None:
            from .runtime import StartCancelled, signals_deferred

            with signals_deferred(self.progress):
                _abandon_starts(self, futures, interrupted=False)
                # Report the cause, not a sibling that was cancelled because of it.
                causes = [f.exception() for f in futures if f.done() and f.exception() is not None]
                first = next((e for e in causes if not isinstance(e, StartCancelled)), first)
            assert first is not None
            raise first
        return self

    def _start_one(self, plans: dict[str, tuple[Backend, list[Cell]]], peers: dict[str, Peer], name: str) -> None:
        """Start one backend's server (in its own thread); publish the outcome to its peers."""
        backend, cells = plans[name]
        self.progress(f"{name}: starting {len(cells)} cells")
        options = StartOptions(
            pki=self.pki,
            workdir=self.workdir / name,
            ready_timeout=self.ready_timeout,
            progress=lambda line: self.progress(line if line.startswith(f"{name}:") else f"{name}: {line}"),
            cancel=self._cancel,
        )
        try:
            options.workdir.mkdir(exist_ok=True)  # never re-creates a work dir removed by a cancel
            server = backend.start(cells, options)
        except BaseException as exc:
            peers[name].resolve(error=exc)
            if self._cancel.is_set() and self._own_workdir:
                shutil.rmtree(self.workdir, ignore_errors=True)  # what this thread wrote after the grid left
            raise
        with self._lock:
            cancelled = self._cancel.is_set()
            if not cancelled:
                self.servers[name] = server
        if cancelled:  # the grid gave up on this start while it finished: leave nothing behind
            server.stop()
            peers[name].resolve(error=MailTLSError(f"{name}: start cancelled"))
            if self._own_workdir:
                shutil.rmtree(self.workdir, ignore_errors=True)
            return
        recorder = self.recorder
        if recorder is not None:
            server.endpoints = [f for e in server.endpoints for f in self._fronts(recorder, e)]
        peers[name].resolve(server)
        self.progress(f"{name}: {len(server.endpoints)} cells ready")

    def _fronts(self, recorder: Recorder, endpoint: Endpoint) -> list[Endpoint]:
        """The recorder's front for ``endpoint``, and one per hostile-network cell played in front of its server."""
        from .wire.attacks import attack_named

        fronts = [recorder.front(endpoint)]
        for cell in self._hostile.get(endpoint.id, []):
            tap = attack_named(cell.network or "").tap(cell, pki=self.pki, server_hostname=endpoint.server_hostname)
            fronts.append(recorder.front(endpoint, cell=cell, tap=tap))
        return fronts

    def logs(self, server: str) -> str:
        running = self.servers.get(server)
        return running.logs() if running else ""

    def cell_logs(self, cell_id: str, since: float | None = None) -> list[str]:
        """Server log lines about one cell, where the backend can tell them apart (after the Unix time
        ``since``, if given)."""
        for server in self.servers.values():
            for endpoint in server.endpoints:
                if endpoint.id == cell_id:  # a hostile-network cell's lines are its real server's
                    return list(server.cell_logs(endpoint.cell.base.id, since))
        return []

    def stop(self) -> None:
        """Stop every server (best effort, never raises), then remove the work dir if we made it. A second
        Ctrl-C or a SIGTERM meanwhile waits until everything is removed."""
        self._stop()

    def _stop(self, *, keep_index: bool = False) -> None:
        from .runtime import signals_deferred

        with signals_deferred(self.progress):
            self._cancel.set()  # a start still finishing in a thread stops what it made
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
            if self._own_pki:
                self.pki.close()
            _release_dirs(self, keep_index=keep_index)

    def __enter__(self) -> Grid:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
