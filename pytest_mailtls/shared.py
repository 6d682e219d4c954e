"""One grid for a whole pytest-xdist run, whatever ``-n``.

The controller makes a private directory for the run and hands its path to every worker
(``pytest_configure_node``). The first worker that needs container cells writes what it needs into it and
starts the *grid daemon* (``python -m pytest_mailtls.shared DIR CONTROLLER_PID``) under a file lock; the
daemon starts one container per server kind, writes a manifest and serves until the controller stops it at
the end of the session, or until the controller is gone (it checks every quarter second). Every worker,
the first included, attaches to that manifest. The PKI lives in the same directory, shared
(:meth:`SessionPKI.open_shared`), so every worker trusts the CA the servers use.

Per-test capture stays per test: a test holds its cell's lock (a file lock, released by the kernel if its
worker dies) from set-up to teardown, so ``messages()``, ``clear()`` and ``sessions()`` see that test's
mail and connections only, while tests on other cells run in parallel.

A dead worker leaves nothing: the containers belong to the daemon, the locks to the kernel. A dead
controller makes the daemon stop the grid; the run's directory is registered with the runtime's reaper.

PYTEST_DONT_REWRITE
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import MailTLSError, ServerStartError, one_line
from .manifest import Endpoint, ManifestOwner, find_endpoint, read_manifest, write_manifest
from .matrix import filter_cells

if TYPE_CHECKING:
    from .pki import SessionPKI

__all__ = ["SharedRun", "AttachedGrid", "CombinedGrid", "WORKERINPUT_KEY", "start_shared_dir", "stop_shared_dir"]

#: The key of ``workerinput`` that carries the run's directory and the controller's pid.
WORKERINPUT_KEY = "mailtls_shared"
START_LOCK = "start.lock"

REQUEST, MANIFEST, READY, ERROR, PIDFILE, LOGS, LOG = (
    "request.json",
    "manifest.json",
    "ready",
    "error",
    "daemon.pid",
    "cell-logs.json",
    "daemon.log",
)
#: The head start (:meth:`SharedRun.prepare`): the session's settings, the prepared daemon's pid (kept even
#: when a worker had to spawn another), and the marker a worker leaves when the run needs no containers.
PREPARE, PREPARED_PID, UNNEEDED = "prepare.json", "prepared.pid", "unneeded"

#: How long the controller waits for the daemon to remove its containers before it kills it.
STOP_WAIT = 60.0
#: How often the daemon looks whether its controller still runs.
WATCH_EVERY = 0.25
#: How often a prepared daemon looks for the request.
POLL_EVERY = 0.02


def start_shared_dir() -> Path:
    """In the controller: a private directory for the run, registered with the reaper (this process)."""
    from . import runtime

    directory = Path(tempfile.mkdtemp(prefix="mailtls-xdist-"))
    directory.chmod(0o700)
    runtime.register_dir(directory, remove_at_exit=True)
    return directory


def stop_shared_dir(directory: Path, *, say: Any = None) -> None:
    """In the controller, once every worker is done: stop the daemon (if one was started), remove the dir."""
    from . import runtime

    # The daemon that serves, and a prepared one that a worker found unneeded (it leaves on its own, soon).
    for pid in dict.fromkeys(p for p in (_read_pid(directory), _read_pid(directory, PREPARED_PID)) if p is not None):
        if _alive(pid) and not _stop_daemon(pid) and say is not None:
            say(
                f"the shared grid (pid {pid}) did not stop in {STOP_WAIT:.0f} s; killed, `mailtls reap` removes the rest"
            )
    runtime.release_dir(directory, remove=True)


def _stop_daemon(pid: int) -> bool:
    """SIGTERM the daemon and wait until it has removed its grid; SIGKILL after :data:`STOP_WAIT`."""
    with suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_WAIT
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if not _alive(pid):
        return True
    with suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    return False


@dataclass(frozen=True)
class SharedRun:
    """What a worker knows of its run's shared grid: the directory and the controller's pid."""

    directory: Path
    controller: int

    @classmethod
    def of(cls, config: Any) -> SharedRun | None:
        """The shared run of a pytest-xdist worker (``None`` outside xdist, and in the controller)."""
        data = getattr(config, "workerinput", {}).get(WORKERINPUT_KEY)
        if not data:
            return None
        return cls(Path(data["dir"]), int(data["controller"]))

    def pki(self) -> SessionPKI:
        from .pki import SessionPKI

        return SessionPKI.open_shared(self.directory / "pki")

    def request(
        self,
        cells: Sequence[Any],
        *,
        matrix: str | None,
        select: str | None,
        servers: Sequence[str],
        ready_timeout: float,
        guess: bool = False,
    ) -> None:
        """Start the run's grid for ``cells`` (cells or their ids) unless it is started already for them;
        return at once (see :meth:`attach`).

        Workers call this as soon as their collection is done, so the servers start while pytest-xdist
        still waits for the slower workers to collect. The controller may call it with ``guess`` before any
        worker has collected (the cells of the previous run, from pytest's cache): a worker that needs a
        cell the guess lacks stops that grid and starts the right one. Without a guess the controller may
        have started a prepared daemon (:meth:`prepare`): it gets the request, no second daemon starts."""
        wanted = {
            "matrix": matrix,
            "select": select,
            "servers": list(servers),
            "cells": [getattr(c, "id", c) for c in cells],
            "ready_timeout": ready_timeout,
        }
        with self._start_lock():
            path = self.directory / REQUEST
            if path.exists():
                current = json.loads(path.read_text())
                if guess or _covers(current, wanted):
                    return
                self._restart()  # the controller's guess does not cover this run
            _write_atomic(path, json.dumps(wanted))
            if not self._prepared_waiting():
                self._spawn()
            # else: the prepared daemon takes the request (it checks, under this lock, that it is still the one)

    def prepare(self, settings: dict[str, Any]) -> bool:
        """In the controller, before any worker has collected (a cold run: no guess): start the daemon now in
        *prepare* mode. It does what does not depend on the cells (imports, the engine, the PKI of every
        container cell of the session's selection) and then waits for the first worker's request, which
        :meth:`request` hands it instead of spawning a daemon. False when a daemon exists already."""
        with self._start_lock():
            if (self.directory / REQUEST).exists() or _read_pid(self.directory) is not None:
                return False
            _write_atomic(self.directory / PREPARE, json.dumps(settings))
            self._spawn(prepare=True)
        return True

    def unneeded(self) -> None:
        """In a worker whose tests need no container: a prepared daemon waiting for a request leaves now.
        (Every worker collects the same tests: if one needs no container, none does.)"""
        with self._start_lock():
            if (self.directory / PREPARE).exists() and not (self.directory / REQUEST).exists():
                (self.directory / UNNEEDED).touch()

    def _prepared_waiting(self) -> bool:
        """A prepared daemon that will take the request: alive, named by the pid file, not told to leave.
        Under the start lock; the daemon takes a request under it too, so it cannot leave in between."""
        if not (self.directory / PREPARE).exists() or (self.directory / UNNEEDED).exists():
            return False
        pid = _read_pid(self.directory)
        return pid is not None and pid == _read_pid(self.directory, PREPARED_PID) and _alive(pid)

    def _start_lock(self) -> Any:
        import filelock

        return filelock.FileLock(str(self.directory / START_LOCK), mode=0o600)

    def current_request(self) -> dict[str, Any] | None:
        """What the grid was started for, once it served (the controller keeps it for the next run's guess)."""
        try:
            if (self.directory / READY).exists():
                request: dict[str, Any] = json.loads((self.directory / REQUEST).read_text())
                return request
        except (OSError, ValueError):
            pass
        return None

    def _restart(self) -> None:
        pid = _read_pid(self.directory)
        if pid is not None and _alive(pid):
            _stop_daemon(pid)
        for name in (READY, ERROR, MANIFEST, LOGS, PIDFILE, REQUEST, PREPARE):
            (self.directory / name).unlink(missing_ok=True)

    def attach(self, cells: Sequence[Any], **request: Any) -> AttachedGrid:
        """Start the run's grid if no worker did yet, wait until it serves, and return its endpoints."""
        self.request(cells, **request)
        self._wait(float(request["ready_timeout"]))
        return AttachedGrid(self.directory)

    def _spawn(self, *, prepare: bool = False) -> None:
        log = open(self.directory / LOG, "ab")  # noqa: SIM115 -- handed to the daemon
        mode = ["--prepare"] if prepare else []
        try:
            process = subprocess.Popen(
                [sys.executable, "-m", "pytest_mailtls.shared", *mode, str(self.directory), str(self.controller)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C reaches the controller, which stops the daemon in order
                close_fds=True,
            )
        finally:
            log.close()
        if prepare:
            (self.directory / PREPARED_PID).write_text(str(process.pid))
        (self.directory / PIDFILE).write_text(str(process.pid))

    def _wait(self, ready_timeout: float) -> None:
        # The daemon has ready_timeout per server plus image builds; give up only when it died or said why.
        deadline = time.monotonic() + ready_timeout + 600
        while time.monotonic() < deadline:
            if (self.directory / READY).exists():
                return
            error = self.directory / ERROR
            if error.exists():
                raise ServerStartError(f"shared grid: {error.read_text().strip()}")
            pid = _read_pid(self.directory)
            if pid is not None and not _alive(pid) and not (self.directory / READY).exists():
                if (self.directory / ERROR).exists():
                    continue
                tail = _tail(self.directory / LOG)
                raise ServerStartError(one_line(f"shared grid: its process (pid {pid}) ended before serving: {tail}"))
            time.sleep(0.05)
        raise ServerStartError(
            f"shared grid: not serving after {ready_timeout + 600:.0f} s (log: {self.directory / LOG})"
        )

    @contextmanager
    def cell_lock(self, cell_id: str) -> Iterator[None]:
        """Hold ``cell_id`` for one test: other workers' tests on that cell wait; the kernel frees it on death."""
        import filelock

        locks = self.directory / "locks"
        locks.mkdir(exist_ok=True)
        with filelock.FileLock(str(locks / f"{cell_id}.lock"), mode=0o600):
            yield


class AttachedGrid:
    """The shared grid as a worker sees it: endpoints from the daemon's manifest, log lines from the engine."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path = directory / MANIFEST
        # Not live=True: its liveness check connects to the first cell, which another worker's test may hold
        # (it would count as that test's session). The daemon said READY and its pid is checked instead.
        self.endpoints: list[Endpoint] = read_manifest(self.path, live=False)
        pid = _read_pid(directory)
        if pid is None or not _alive(pid):
            raise ServerStartError(f"shared grid: its process ({pid}) is gone (log: {directory / LOG})")
        data = json.loads((directory / LOGS).read_text())
        self.skipped: dict[str, str] = data.get("skipped", {})
        self._logs: dict[str, list[Any]] = data.get("cells", {})
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[float, str]] = {}

    def endpoint(self, cell_id: str) -> Endpoint:
        if cell_id in self.skipped:
            raise MailTLSError(f"cell {cell_id} is not served: {self.skipped[cell_id]}")
        return find_endpoint(self.endpoints, cell_id)

    def find(self, **criteria: str | Sequence[str]) -> list[Endpoint]:
        ids = {c.id for c in filter_cells([e.cell for e in self.endpoints], criteria)}
        return [e for e in self.endpoints if e.id in ids]

    def cell_logs(self, cell_id: str, since: float | None = None) -> list[str]:
        """The server's log lines about one cell, read through the engine like the owner would."""
        source = self._logs.get(cell_id)
        if not source:
            return []
        server, container, key = source
        from .grid import get_backend

        return get_backend(server).cell_log_lines(self._container_log(container, since), key)

    def _container_log(self, container: str, since: float | None) -> str:
        from .runtime import docker_client

        if since is not None:  # only what is new: the engine filters, the whole log is not read
            try:
                data = docker_client().api.logs(container, stdout=True, stderr=True, since=since)
            except Exception as exc:  # a report section must never hide the test's own failure
                return f"(log unreadable: {exc})"
            return data.decode("utf-8", "replace") if isinstance(data, bytes) else str(data)
        with self._lock:
            now = time.monotonic()
            cached = self._cache.get(container)
            if cached is None or now - cached[0] > 0.03:
                try:
                    text = docker_client().containers.get(container).logs().decode("utf-8", "replace")
                except Exception as exc:
                    text = f"(log unreadable: {exc})"
                self._cache[container] = cached = (now, text)
            return cached[1]

    def stop(self) -> None:
        """Nothing to stop from a worker: the controller stops the daemon when every worker is done."""


class CombinedGrid:
    """A worker's grid when the shared grid serves its container cells and the worker its in-process ones."""

    def __init__(self, *parts: Any) -> None:
        self.parts = parts
        self.skipped: dict[str, str] = {k: v for part in parts for k, v in part.skipped.items()}

    @property
    def endpoints(self) -> list[Endpoint]:
        return [e for part in self.parts for e in part.endpoints]

    def _part(self, cell_id: str) -> Any:
        for part in self.parts:
            if any(e.id == cell_id for e in part.endpoints):
                return part
        return None

    def endpoint(self, cell_id: str) -> Endpoint:
        part = self._part(cell_id)
        if part is None:
            why = self.skipped.get(cell_id, "it is not part of this grid")
            raise MailTLSError(f"cell {cell_id} is not served: {why}")
        endpoint: Endpoint = part.endpoint(cell_id)
        return endpoint

    def find(self, **criteria: str | Sequence[str]) -> list[Endpoint]:
        return [e for part in self.parts for e in part.find(**criteria)]

    def cell_logs(self, cell_id: str, since: float | None = None) -> list[str]:
        part = self._part(cell_id)
        return list(part.cell_logs(cell_id, since)) if part is not None else []

    def stop(self) -> None:
        for part in self.parts:
            part.stop()


def _covers(current: dict[str, Any], wanted: dict[str, Any]) -> bool:
    same = all(current.get(k) == wanted.get(k) for k in ("matrix", "select", "servers", "ready_timeout"))
    return same and set(wanted["cells"]) <= set(current.get("cells") or ())


def _read_pid(directory: Path, name: str = PIDFILE) -> int | None:
    try:
        return int((directory / name).read_text())
    except (OSError, ValueError):
        return None


def _write_atomic(path: Path, text: str) -> None:
    """Readers polling for ``path`` (a prepared daemon) never see it half written."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def _alive(pid: int) -> bool:
    from .runtime import process_alive

    return process_alive(pid)


def _tail(path: Path, lines: int = 3) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").strip().splitlines()[-lines:]) or "(no output)"
    except OSError:
        return "(no log)"


# --------------------------------------------------------------------------- the daemon


def serve(directory: Path, controller: int, *, prepare: bool = False) -> int:
    """Start the grid the request asks for, publish it, serve until told to stop or the controller is gone.

    With ``prepare`` (the controller's head start on a cold run) first do what does not depend on the cells,
    then wait for a worker's request (:func:`_head_start`)."""
    stop = threading.Event()
    interruptible = threading.Event()  # clear while writing keys: a signal then waits for a safe point
    interruptible.set()

    def on_signal(signum: int, frame: Any) -> None:
        stop.set()
        if interruptible.is_set():
            raise KeyboardInterrupt  # an interrupted start stops at once and removes what it made

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, on_signal)
    say = _say
    grid = None
    orphaned = False  # the controller died: nobody else will remove the run's directory
    try:
        pki = None
        if prepare:
            outcome, pki = _head_start(directory, controller, stop, interruptible, say)
            if outcome != "request":
                orphaned = outcome == "orphaned"
                say(f"head start: {outcome}: leaving")
                return 0
        from .grid import Grid
        from .selection import resolve

        request = json.loads((directory / REQUEST).read_text())
        wanted = set(request["cells"])
        selection = resolve(servers=request["servers"], matrix=request["matrix"], select=request["select"])
        cells = [c for c in selection.cells if c.id in wanted]
        from .pki import SessionPKI

        if pki is None:
            pki = SessionPKI.open_shared(directory / "pki")
        grid = Grid(cells, workdir=directory / "servers", pki=pki, ready_timeout=request["ready_timeout"], progress=say)
        grid.start()
        sources: dict[str, list[Any]] = {}
        for name, server in grid.servers.items():
            for endpoint in server.endpoints:
                source = server.log_source(endpoint.cell.base.id)  # a hostile-network cell logs as its server
                if source is not None:
                    sources[endpoint.id] = [name, *source]
        (directory / LOGS).write_text(json.dumps({"cells": sources, "skipped": grid.skipped}))
        write_manifest(directory / MANIFEST, grid.endpoints, owner=ManifestOwner.current("the shared xdist grid"))
        (directory / READY).touch()
        say(f"serving {len(grid.endpoints)} cells")
        from .runtime import process_alive

        while not stop.wait(WATCH_EVERY):
            if not process_alive(controller):
                say(f"controller {controller} is gone: stopping")
                orphaned = True
                break
    except (KeyboardInterrupt, SystemExit):
        pass
    except BaseException as exc:  # what every worker will say: one line
        (directory / ERROR).write_text(one_line(str(exc) or type(exc).__name__))
        return 1
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second signal must not interrupt the removal
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        if grid is not None:
            say("stopping")
            grid.stop()
            say("stopped")
        if orphaned:
            shutil.rmtree(directory, ignore_errors=True)
    return 0


def _head_start(
    directory: Path, controller: int, stop: threading.Event, interruptible: threading.Event, say: Any
) -> tuple[str, SessionPKI | None]:
    """The prepared daemon's work before the request: import the grid and its backends, ask the engine (and
    reap what dead runs left, once, as a start would), make the session's shared PKI: the CA and every
    certificate profile (and client certificate) of the container cells of the session's selection. Then
    wait for the request. Returns why it stopped waiting: ``request`` (serve it), ``unneeded`` (the run
    needs no container), ``replaced`` (a worker started another daemon), ``stop`` (signalled) or
    ``orphaned`` (the controller is gone), with the PKI it opened.

    Nothing here is worth failing the run for: a problem is logged and the start, which does it again, says it.
    """
    pki: SessionPKI | None = None
    watch = [time.monotonic() + WATCH_EVERY]

    def leave() -> str | None:
        if stop.is_set():
            return "stop"
        if (directory / REQUEST).exists() or (directory / UNNEEDED).exists():
            return _take(directory)
        now = time.monotonic()
        if now >= watch[0]:
            watch[0] = now + WATCH_EVERY
            from .runtime import process_alive

            if not process_alive(controller):  # the run's directory is this daemon's to remove, if it still serves it
                return "orphaned" if _read_pid(directory) == os.getpid() else "replaced"
        return None

    try:
        settings = json.loads((directory / PREPARE).read_text())
        from . import grid as grid_module
        from .backends import docker_servers
        from .selection import resolve

        selection = resolve(servers=settings["servers"], matrix=settings["matrix"], select=settings["select"])
        cells = [c for c in selection.cells if c.server in docker_servers()]
        if cells:
            grid_module._reap_once(say, engine=True)  # the start will not do it again (once per process)
        jobs: list[Any] = [None, *head_start_keys(cells)]  # None: the CA
        say(f"head start: {len(cells)} container cells, {len(jobs) - 1} certificate(s) to make")
        from .pki import SessionPKI

        for done, job in enumerate(jobs):
            why = leave()
            if why is not None:
                say(f"head start: {why} after {max(done - 1, 0)} of {len(jobs) - 1} certificate(s)")
                return why, pki
            interruptible.clear()  # a signal now waits until this key is written whole
            try:
                if job is None:
                    pki = SessionPKI.open_shared(directory / "pki")
                elif pki is not None and job == "client":
                    pki.client_files()
                elif pki is not None:
                    pki.server_files(job)
            finally:
                interruptible.set()
        say("head start: prepared, waiting for the request")
    except (KeyboardInterrupt, SystemExit):
        return "stop", pki
    except Exception as exc:
        interruptible.set()
        say(f"head start: {one_line(str(exc) or type(exc).__name__)} (the start will try again)")
    while True:
        why = leave()
        if why is not None:
            return why, pki
        stop.wait(POLL_EVERY)


def head_start_keys(cells: Sequence[Any]) -> list[Any]:
    """The keys a head start makes for ``cells`` (container cells), in order: certificate profiles, the most
    used first (a request stops the work; the start makes what it still needs), what a hostile network's
    relay presents, ``"client"`` for the client certificate. A profile made per process
    (``CertFault.own_process``: the revoked one names this process's revocation responder) is made for this
    daemon, the one that serves; a daemon that replaces it makes its own."""
    from .wire.attacks import presented_profiles

    counts = Counter(c.cert for c in cells if c.cert is not None)
    keys: list[Any] = sorted(counts, key=lambda profile: -counts[profile])
    keys += [p for p in presented_profiles(cells) if p not in keys]
    if any(c.auth.client_cert for c in cells):
        keys.append("client")
    return keys


def _take(directory: Path) -> str:
    """A prepared daemon that saw a request or the ``unneeded`` marker: whether it is still the run's daemon
    (a worker may have started another), under the lock the workers hold to request."""
    import filelock

    with filelock.FileLock(str(directory / START_LOCK), mode=0o600):
        if _read_pid(directory) != os.getpid():
            return "replaced"
        return "request" if (directory / REQUEST).exists() else "unneeded"


def _say(line: str) -> None:
    now = time.time()
    print(
        f"{time.strftime('%H:%M:%S', time.localtime(now))}.{int(now % 1 * 1000):03d} mailtls shared grid: {line}",
        flush=True,
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    prepare = args[:1] == ["--prepare"]
    if prepare:
        args = args[1:]
    if len(args) != 2:
        print("usage: python -m pytest_mailtls.shared [--prepare] DIR CONTROLLER_PID (started by the pytest plugin)")
        return 2
    return serve(Path(args[0]), int(args[1]), prepare=prepare)


if __name__ == "__main__":
    sys.exit(main())
