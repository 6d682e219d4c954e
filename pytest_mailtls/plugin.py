"""pytest hooks and the default fixtures: nothing else lives here.

Tests that take ``mailtls_server`` are parametrized over the selected cells;
the servers for every cell collected in the session start once, on first use,
one container per server kind, and are removed at the end of the session.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import sys
import time
from collections.abc import Callable, Generator, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from .backends import docker_servers
from .config import MailTLSConfig, add_options, get_config
from .errors import MailTLSError
from .factories import ManifestGrid, engine_problem_line, engine_skip_reason
from .grid import Grid, ServerChoice, choose_servers, parse_servers
from .manifest import Endpoint, ManifestOwner, write_manifest
from .matrix import CELL_KEYS, Matrix, cell_attributes, filter_cells, load_matrix, unknown_criterion
from .pki import SessionPKI
from .policy import Cell
from .shared import WORKERINPUT_KEY, CombinedGrid, SharedRun, start_shared_dir, stop_shared_dir

_STATE = pytest.StashKey["_Session"]()
_ENDPOINT = pytest.StashKey[Endpoint]()
_RECORDS = pytest.StashKey[list[Any]]()
_LOG_MARK = pytest.StashKey[float]()  # when the test started: its server log lines are those written after


class _Session:
    """Per-process state: settings, matrix, the cells collected, the servers once started."""

    def __init__(self, config: pytest.Config) -> None:
        self.pytest_config = config
        self.cfg: MailTLSConfig = get_config(config)
        self._matrix: Matrix | None = None
        self._choice: ServerChoice | None = None
        self.requested: dict[str, Cell] = {}
        self.grid: Grid | ManifestGrid | None = None
        self.start_error: BaseException | None = None
        self._manifest_grid: ManifestGrid | None = None
        self._vocabulary: dict[str, tuple[str, ...]] | None = None
        self.engine_skips = 0  # tests skipped for want of an engine (a failure with --mailtls-require-docker)

    @property
    def matrix(self) -> Matrix:
        if self._matrix is None:
            self._matrix = load_matrix(self.cfg.matrix)
        return self._matrix

    @property
    def choice(self) -> ServerChoice:
        if self._choice is None:
            self._choice = choose_servers(parse_servers(self.cfg.servers))
        return self._choice

    @property
    def manifest_grid(self) -> ManifestGrid:
        """The running servers of ``--mailtls-manifest``, read (and checked alive) once per process."""
        if self._manifest_grid is None:
            assert self.cfg.manifest is not None
            self._manifest_grid = ManifestGrid(self.cfg.manifest)
        return self._manifest_grid

    def cells(self) -> list[Cell]:
        if self.cfg.manifest:
            return [e.cell for e in self.manifest_grid.endpoints]
        return self.matrix.cells(servers=self.choice.servers, selection=self.cfg.select)

    def vocabulary(self) -> dict[str, tuple[str, ...]]:
        """What a marker may name: the matrix's values, plus a manifest's when servers come from one."""
        if self._vocabulary is None:
            vocabulary = dict(self.matrix.vocabulary())
            if self.cfg.manifest:
                for endpoint in self.manifest_grid.endpoints:
                    for key, value in cell_attributes(endpoint.cell).items():
                        if value not in vocabulary[key]:
                            vocabulary[key] = (*vocabulary[key], value)
            self._vocabulary = vocabulary
        return self._vocabulary

    def engine_missing_for(self) -> list[str]:
        """Container servers this run asked for (explicitly or through ``auto``) that have no engine."""
        if self.cfg.manifest or not self.choice.engine_problem:
            return []
        requested = parse_servers(self.cfg.servers)
        return [s for s in (requested or docker_servers()) if s in docker_servers()]


def pytest_addoption(parser: pytest.Parser) -> None:
    add_options(parser)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "mailtls(server=, service=, protocol=, mode=, policy=, cert=, auth=, id=): run the test only on matching "
        "cells; each value a string or list, globs allowed.",
    )
    config.stash[_STATE] = state = _Session(config)
    if state.cfg.require_docker:
        config.pluginmanager.register(_EngineSkips(state), "mailtls-engine-skips")


def pytest_sessionstart(session: pytest.Session) -> None:
    """With ``--mailtls-require-docker``, no engine is a usage error before anything runs.

    That covers ``auto`` too, which would otherwise fall back to the embedded backend: CI that asks for
    containers must not turn green on skips or on the embedded backend alone.
    """
    config = session.config
    state = config.stash.get(_STATE, None)
    if state is None or not state.cfg.require_docker or hasattr(config, "workerinput"):
        return  # xdist workers: the controller has checked already
    try:
        missing = state.engine_missing_for()
    except MailTLSError as exc:
        raise pytest.UsageError(str(exc)) from None
    if missing:
        auto = "only the embedded backend could serve; " if parse_servers(state.cfg.servers) is None else ""
        verb = "needs" if len(missing) == 1 else "need"
        raise pytest.UsageError(
            f"--mailtls-require-docker: {', '.join(missing)} {verb} a Docker engine: {auto}{state.choice.engine_problem}"
        )


def pytest_collection(session: pytest.Session) -> None:
    """Validate the matrix, the selection and a manifest before collecting: bad input is a usage error."""
    state = session.config.stash[_STATE]
    try:
        if state.cfg.manifest:
            state.manifest_grid  # noqa: B018 -- read and checked alive: a stale manifest stops the run here
            return
        matrix = state.matrix
        if state.cfg.select is not None and state.cfg.select not in matrix.selections:
            matrix.cells(servers=[], selection=state.cfg.select)
    except MailTLSError as exc:
        raise pytest.UsageError(str(exc)) from None


def pytest_collection_finish(session: pytest.Session) -> None:
    """pytest-xdist worker: start the run's shared grid now, while the other workers still collect."""
    state = session.config.stash.get(_STATE, None)
    shared = SharedRun.of(session.config)
    if state is None or shared is None or state.cfg.manifest or not state.requested:
        return
    containers = [c for c in state.requested.values() if c.server in docker_servers()]
    if containers and not state.choice.engine_problem:
        with contextlib.suppress(Exception):  # any problem is said by the grid fixture, in the tests
            shared.request(containers, **_grid_request(state))


def _grid_request(state: _Session) -> dict[str, Any]:
    return {
        "matrix": state.cfg.matrix,
        "select": state.cfg.select,
        "servers": state.choice.servers,
        "ready_timeout": state.cfg.ready_timeout,
    }


def pytest_report_collectionfinish(config: pytest.Config, start_path: Path, items: list[pytest.Item]) -> list[str]:
    state = config.stash.get(_STATE, None)
    if state is None or state._choice is None:
        return []
    lines = [f"mailtls: servers {','.join(state.choice.servers)}"]
    if state.choice.note:
        lines.append(f"mailtls: {state.choice.note}")
    elif state.engine_missing_for():
        # Said once here in full; each skipped test carries only a one-line reason.
        lines.append(f"mailtls: {state.choice.engine_problem}")
    return lines


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "mailtls_server" not in metafunc.fixturenames:
        return
    state = metafunc.config.stash[_STATE]
    test = metafunc.definition.nodeid
    try:
        cells = state.cells()
        marker = metafunc.definition.get_closest_marker("mailtls")
        if marker is not None:
            if marker.args:
                raise MailTLSError(
                    "the mailtls marker takes keyword arguments only, e.g. @pytest.mark.mailtls(policy='modern')"
                )
            _check_marker(marker.kwargs, state)
            cells = filter_cells(cells, marker.kwargs)
    except MailTLSError as exc:
        raise pytest.Collector.CollectError(f"{test}: {exc}") from None
    if not cells:
        missing = state.engine_missing_for()
        if missing:
            why = f"no {','.join(state.choice.servers)} cell matches; " + engine_skip_reason(missing)
        else:
            why = (
                f"no cell of selection {state.cfg.select or 'default'} on servers "
                f"{','.join(state.choice.servers)} matches"
            )
        metafunc.parametrize(
            "mailtls_server", [pytest.param(None, marks=pytest.mark.skip(reason=why))], ids=["no-cell"]
        )
        return
    for cell in cells:
        state.requested.setdefault(cell.id, cell)
    metafunc.parametrize("mailtls_server", cells, ids=[c.id for c in cells], indirect=True)


def _check_marker(criteria: Mapping[str, Any], state: _Session) -> None:
    """A marker key or value that names nothing in the matrix is a typo: an error, never an empty skip."""
    for key in criteria:
        if key not in CELL_KEYS:
            raise MailTLSError(f"@pytest.mark.mailtls: unknown key {key!r}. Allowed: {', '.join(CELL_KEYS)}")
    bad = unknown_criterion(criteria, state.vocabulary())
    if bad is None:
        return
    key, value = bad
    allowed = state.vocabulary()[key]
    shown = "the ids `mailtls cells` lists" if key == "id" else ", ".join(allowed)
    raise MailTLSError(
        f"@pytest.mark.mailtls({key}={value!r}): no {key} of the matrix ({state.matrix.source}) matches. "
        f"Allowed: {shown}"
    )


@pytest.fixture(scope="session")
def mailtls_config(pytestconfig: pytest.Config) -> MailTLSConfig:
    """Session: the resolved pytest-mailtls settings (``MailTLSConfig``) from flags and ini keys."""
    return pytestconfig.stash[_STATE].cfg


@pytest.fixture(scope="session")
def mailtls_matrix(pytestconfig: pytest.Config) -> Matrix:
    """Session: the validated matrix (``--mailtls-matrix`` or the shipped default).

    ``mailtls_matrix.cells(servers=[...], selection="quick")`` lists cells.
    """
    return pytestconfig.stash[_STATE].matrix


@pytest.fixture(scope="session")
def mailtls_ca(pytestconfig: pytest.Config, tmp_path_factory: pytest.TempPathFactory) -> SessionPKI:
    """Session: the throwaway PKI (``SessionPKI``) every server of the session uses.

    ``mailtls_ca.ca_file`` is the CA's PEM path, ``mailtls_ca.client_context()``
    an ``ssl.SSLContext`` trusting it; keys live under the session's temp dir.
    Under pytest-xdist every worker has the same CA (the run's grid is shared).
    """
    shared = SharedRun.of(pytestconfig)
    if shared is not None:
        return shared.pki()
    return SessionPKI(tmp_path_factory.mktemp("mailtls-pki"))


@pytest.fixture(scope="session")
def mailtls_grid(
    pytestconfig: pytest.Config, mailtls_ca: SessionPKI, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Grid | ManifestGrid]:
    """Session: the running servers for every cell collected in this session.

    Started on first use, one server per kind (postfix, dovecot, james,
    embedded), removed at session end. With ``--mailtls-manifest`` it points
    at servers already running instead and starts nothing. Under pytest-xdist
    the container servers are one grid for all workers (started by the first
    worker that needs them, removed when the last is done); a test holds its
    cell while it runs, so ``messages()`` and ``sessions()`` stay its own.
    """
    state = pytestconfig.stash[_STATE]
    if state.cfg.manifest:
        state.grid = state.manifest_grid
        yield state.grid
        return
    cells = list(state.requested.values())
    if state.choice.engine_problem:
        cells = [c for c in cells if c.server not in docker_servers()]
    shared = SharedRun.of(pytestconfig)
    if shared is not None and any(c.server in docker_servers() for c in cells):
        yield from _shared_grid(state, shared, cells, mailtls_ca, tmp_path_factory)
        return
    grid = Grid(
        cells, workdir=tmp_path_factory.mktemp("mailtls-servers"), pki=mailtls_ca, ready_timeout=state.cfg.ready_timeout
    )
    state.grid = grid
    try:
        grid.start()
    except BaseException as exc:
        state.start_error = exc
        raise
    try:
        yield grid
    finally:
        grid.stop()


def _shared_grid(
    state: _Session,
    shared: SharedRun,
    cells: list[Cell],
    pki: SessionPKI,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Any]:
    """This worker's view of the run's shared grid, with its in-process cells (embedded) served here."""
    containers = [c for c in cells if c.server in docker_servers()]
    local = [c for c in cells if c.server not in docker_servers()]
    try:
        attached: Any = shared.attach(containers, **_grid_request(state))
        grid: Any = attached
        if local:
            own = Grid(
                local,
                workdir=tmp_path_factory.mktemp("mailtls-servers"),
                pki=pki,
                ready_timeout=state.cfg.ready_timeout,
            )
            grid = CombinedGrid(attached, own.start())
    except BaseException as exc:
        state.start_error = exc
        raise
    state.grid = grid
    try:
        yield grid
    finally:
        grid.stop()


@pytest.fixture(scope="session")
def mailtls_manifest(mailtls_grid: Grid | ManifestGrid, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Session: path of a manifest (JSON) describing every running cell, for external clients."""
    if isinstance(mailtls_grid, ManifestGrid):
        return mailtls_grid.path
    path = tmp_path_factory.mktemp("mailtls-manifest") / "manifest.json"
    return write_manifest(path, mailtls_grid.endpoints, owner=ManifestOwner.current("pytest"))


@pytest.fixture
def mailtls_server(request: pytest.FixtureRequest) -> Iterator[Endpoint]:
    """Function: one served cell (``Endpoint``); tests taking it run once per selected cell.

    Narrow the cells with ``@pytest.mark.mailtls(policy="modern", service="submission")``.
    The endpoint has ``host``, ``port``, ``service``, ``protocol``, ``mode``,
    ``policy``, ``cert``, ``auth``, ``ca_file``, ``username``/``password``,
    ``client_context(version=...)``, ``messages()`` and ``clear()``; mail the cell
    received before the test is cleared. ``sessions()`` and ``last_session()`` return
    what this test's connections did on the wire (``wire.Session``: ``tls_version``,
    ``cipher``, ``offered_versions``, ``offered_ciphers``, ``sni``, ``starttls``,
    ``credentials_in_clear``, ``message_accepted``, ``alerts``, ``closed_by``, ``dialogue``). Container cells are skipped when no
    Docker engine answers (``--mailtls-require-docker`` makes that an error).
    """
    cell: Cell = request.param
    state = request.config.stash[_STATE]
    if cell.server in docker_servers() and state.choice.engine_problem and not state.cfg.manifest:
        if state.cfg.require_docker:
            pytest.fail(f"--mailtls-require-docker: {state.choice.engine_problem}", pytrace=False)
        pytest.skip(engine_skip_reason([cell.server]))
    grid = request.getfixturevalue("mailtls_grid")
    if cell.id in grid.skipped:
        pytest.skip(f"{cell.id}: {grid.skipped[cell.id]}")
    shared = SharedRun.of(request.config)
    with contextlib.ExitStack() as held:
        if shared is not None and cell.server in docker_servers() and not state.cfg.manifest:
            held.enter_context(shared.cell_lock(cell.id))  # other workers' tests on this cell wait
        yield from _serve_cell(request, grid, cell)


def _serve_cell(request: pytest.FixtureRequest, grid: Any, cell: Cell) -> Iterator[Endpoint]:
    endpoint = grid.endpoint(cell.id)
    if endpoint.extra.get("sessions_file"):
        # sessions() and last_session() count from here: this test's connections only.
        endpoint = dataclasses.replace(endpoint, extra={**endpoint.extra, "sessions_since": time.time()})
    request.node.stash[_ENDPOINT] = endpoint
    request.node.stash[_LOG_MARK] = time.time()  # reading the log now would cost a whole log per test
    if endpoint.mailbox is not None:
        endpoint.clear()
    yield endpoint


def _sessions_text(endpoint: Endpoint) -> str:
    """This test's connections to its cell, as the wire showed them (summary and cleartext dialogue)."""
    if not endpoint.extra.get("sessions_file"):
        return ""
    try:
        sessions = endpoint.sessions(wait=0.5)
    except Exception as exc:  # a report section must never hide the test's own failure
        return f"(sessions unreadable: {exc})"
    out = []
    for number, s in enumerate(sessions[-5:], start=1):
        out.append(f"#{number} {s.client}: {s.summary()}")
        out += [f"    {'C' if ln.dir == 'client' else 'S'}: {ln.text}" for ln in s.dialogue[-20:]]
    return "\n".join(out)


_ENGINE_SKIP = re.compile(r"docker engine", re.I)
# The engine's own explanation (runtime.EngineUnavailable): a paragraph, which tests that guard on
# engine_problem() repeat as their skip reason. "no Docker engine: " is how some guards prefix it.
_ENGINE_PROBLEM = re.compile(
    r"(?:no Docker engine: )?no Docker engine answers at (DOCKER_HOST=)?(\S+?)(?: \(DOCKER_HOST is unset\))?: .*", re.S
)
_FULL_PROBLEM = pytest.StashKey[str]()


def _shorten_engine_skip(config: pytest.Config, report: pytest.TestReport) -> None:
    """One line, with the fix, instead of the engine's paragraph in every skipped test (said once at the end)."""
    assert isinstance(report.longrepr, tuple)
    path, lineno, reason = report.longrepr
    match = _ENGINE_PROBLEM.search(reason)
    if match is None:
        return
    config.stash[_FULL_PROBLEM] = match.group(0).removeprefix("no Docker engine: ")
    short = "no Docker engine: " + engine_problem_line(match.group(0))
    report.longrepr = (path, lineno, reason[: match.start()] + short)


class _EngineSkips:
    """Counts tests skipped for want of a Docker engine (the plugin's skips and any test's that say so).

    Under xdist the controller sees every worker's reports, so its count covers the whole run.
    """

    def __init__(self, state: _Session) -> None:
        self.state = state

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.skipped and isinstance(report.longrepr, tuple) and _ENGINE_SKIP.search(str(report.longrepr[2])):
            self.state.engine_skips += 1


def pytest_sessionfinish(session: pytest.Session) -> None:
    state = session.config.stash.get(_STATE, None)
    if state is not None and state.cfg.require_docker and state.engine_skips:
        # CI asked for containers: tests skipped because no engine answered must not leave the run green.
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    # pytest-xdist controller: every worker is done (or dead): stop the shared grid.
    _stop_shared(session.config)
    # Safety net: the grid fixture stops its servers, but a container must never outlive the run.
    runtime = sys.modules.get("pytest_mailtls.runtime")
    if runtime is not None:
        runtime.stop_all()


_SHARED_DIR = pytest.StashKey[Path]()


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """pytest-xdist, in the controller: tell each worker where the run's shared grid lives.

    The directory is made here (private, registered with the reaper); the first worker that needs container
    cells starts the grid daemon in it, and the controller stops that daemon when the session ends."""
    config = node.config
    state = config.stash.get(_STATE, None)
    if state is None or state.cfg.manifest or state.cfg.xdist_grid != "shared":
        return
    directory = config.stash.get(_SHARED_DIR, None)
    if directory is None:
        config.stash[_SHARED_DIR] = directory = start_shared_dir()
        _guess_grid(config, state, SharedRun(directory, os.getpid()))
    node.workerinput[WORKERINPUT_KEY] = {"dir": str(directory), "controller": os.getpid()}


_CACHE_KEY = "mailtls/xdist-grid"


def _guess_grid(config: pytest.Config, state: _Session, shared: SharedRun) -> None:
    """Start the grid the previous run with the same settings needed, before any worker has even started:
    the servers come up while the workers boot and collect. A worker that needs more restarts it."""
    cache = getattr(config, "cache", None)
    if cache is None:
        return
    try:
        last = cache.get(_CACHE_KEY, None)
        if not isinstance(last, dict) or not last.get("cells") or state.choice.engine_problem:
            return
        settings = _grid_request(state)
        if any(last.get(key) != value for key, value in settings.items()):
            return
        shared.request(last["cells"], **settings, guess=True)
    except Exception:  # a guess must never stop a run
        return


def _stop_shared(config: pytest.Config) -> None:
    directory = config.stash.get(_SHARED_DIR, None)
    if directory is not None:
        del config.stash[_SHARED_DIR]
        served = SharedRun(directory, os.getpid()).current_request()
        cache = getattr(config, "cache", None)
        if served is not None and cache is not None:
            cache.set(_CACHE_KEY, served)  # the next run's guess
        stop_shared_dir(directory, say=lambda line: print(f"mailtls: {line}", file=sys.stderr))


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: Any) -> None:
    # pytest-xdist, in the controller: a worker that died (SIGKILL, OOM) stopped nothing; remove its
    # containers, network and temp dirs now, before the session ends (the reaper sees it is dead).
    if error is None:
        return
    from . import runtime

    if runtime.engine_problem() is None:
        runtime.reap_orphans(progress=lambda line: print(f"mailtls: {line}", file=sys.stderr))


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    full = config.stash.get(_FULL_PROBLEM, None)
    if full is not None:
        terminalreporter.write_line(f"mailtls: container tests skipped: {full}")
    state = config.stash.get(_STATE, None)
    if state is not None and state.cfg.require_docker and state.engine_skips:
        terminalreporter.write_line(
            f"mailtls: --mailtls-require-docker: {state.engine_skips} test(s) skipped for want of a Docker engine; "
            "the run fails",
            red=True,
        )


@pytest.fixture
def mailtls_check(request: pytest.FixtureRequest, mailtls_server: Endpoint) -> Callable[..., Any]:
    """Function: ``mailtls_check(client)`` runs a client on this test's cell and asserts its outcome.

    ``client`` is a built-in name (``"python"``, ``"curl"``, ``"jakarta-mail"``, ...) or a
    ``pytest_mailtls.clients`` Client (``command_client("my-tool --host {host} ...")``).
    The outcome must be what the oracle expects for the client's profile on this cell
    (success, or the right failure class); otherwise the test fails with the diagnosis,
    its evidence (client error and server log lines) and a remedy in the report.
    Returns the cell's report record. ``exact=False`` accepts any refusal where one is due.
    """
    from .certify import assert_outcome, check
    from .clients import get_client

    def run(client: Any, *, send: bool = True, exact: bool = True) -> Any:
        chosen = get_client(client) if isinstance(client, str) else client
        why = chosen.unavailable()
        if why:
            pytest.skip(f"client {chosen.name} unavailable: {why}")
        grid = request.config.stash[_STATE].grid
        record = check(chosen, mailtls_server, logs_for=lambda e: grid.cell_logs(e.id) if grid else [], send=send)
        request.node.stash.setdefault(_RECORDS, []).append(record)
        assert_outcome(record, exact=exact)
        return record

    return run


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Generator[None, Any, None]:
    outcome = yield
    report = outcome.get_result()
    if report.skipped and isinstance(report.longrepr, tuple):
        _shorten_engine_skip(item.config, report)
    endpoint = item.stash.get(_ENDPOINT, None)
    if endpoint is None or not report.failed or report.when != "call":
        return
    for record in item.stash.get(_RECORDS, []):
        report.sections.append((f"mailtls diagnosis ({endpoint.id})", record.explain()))
    state = item.config.stash[_STATE]
    if state.grid is None:
        return
    sessions = _sessions_text(endpoint)
    if sessions:
        report.sections.append((f"mailtls sessions ({endpoint.id})", sessions))
    lines = state.grid.cell_logs(endpoint.id, since=item.stash.get(_LOG_MARK, None))[-60:]
    if lines:
        report.sections.append((f"mailtls server log ({endpoint.id})", "\n".join(lines)))
