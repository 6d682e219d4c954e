"""Fixture factories: the plugin's own fixtures are made here, and so are yours in conftest.py.

>>> from pytest_mailtls import mailtls_cell, mailtls_noproc, mailtls_proc
>>> postfix_grid = mailtls_proc(servers=["postfix"], select="quick")
>>> postfix_server = mailtls_cell("postfix_grid")  # tests taking it run once per cell of postfix_grid
>>> running = mailtls_noproc(manifest="manifest.json")

The plugin makes its defaults the same way: ``mailtls_grid = mailtls_proc()`` (no arguments: the
session's settings and the cells its tests collected) and ``mailtls_server = mailtls_cell("mailtls_grid")``.
A grid fixture yields a :class:`~pytest_mailtls.grid.Grid`-like object with ``endpoints``,
``endpoint(cell_id)``, ``find(**criteria)`` and ``cell_logs(cell_id)``; a cell fixture yields one
:class:`~pytest_mailtls.manifest.Endpoint`, with the plugin's diagnostics when its test fails.

PYTEST_DONT_REWRITE
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import os
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from .backends import docker_servers
from .config import MailTLSConfig, get_config
from .errors import MailTLSError
from .manifest import Endpoint, find_endpoint, read_manifest
from .matrix import Matrix, cell_attributes, filter_cells, load_matrix, unknown_criterion
from .policy import Cell
from .selection import Selection, ServerChoice, engine_needed_line, resolve
from .shared import CombinedGrid, SharedRun

if TYPE_CHECKING:  # a worker attached to the run's shared grid never starts one: grid and PKI load on demand
    from .grid import Grid
    from .pki import SessionPKI

PKISource = Callable[[], "SessionPKI"]

__all__ = [
    "GridSpec",
    "ManifestGrid",
    "SessionState",
    "engine_problem_line",
    "engine_skip_reason",
    "mailtls_cell",
    "mailtls_noproc",
    "mailtls_proc",
    "session_state",
]

#: Where the plugin keeps its per-process state, and what a test's cell fixture leaves for its report.
STATE = pytest.StashKey["SessionState"]()
ENDPOINT = pytest.StashKey[Endpoint]()
GRID = pytest.StashKey[Any]()  # the grid that served the test's cell (its log lines and sessions)
RECORDS = pytest.StashKey[list[Any]]()
LOG_MARK = pytest.StashKey[float]()  # when the test started: its server log lines are those written after


class ManifestGrid:
    """Endpoints of servers already running, read from a manifest (no process is started)."""

    def __init__(self, path: str | Path, *, live: bool = True) -> None:
        self.path = Path(path)
        # live: the owner process of the manifest must still run and its first port answer, so a stale
        # manifest is one clear error before any test instead of a connection error in every test.
        self.endpoints: list[Endpoint] = read_manifest(self.path, live=live)
        self.skipped: dict[str, str] = {}

    def endpoint(self, cell_id: str) -> Endpoint:
        return find_endpoint(self.endpoints, cell_id)

    def find(self, **criteria: str | Sequence[str]) -> list[Endpoint]:
        ids = {c.id for c in filter_cells([e.cell for e in self.endpoints], criteria)}
        return [e for e in self.endpoints if e.id in ids]

    def cell_logs(self, cell_id: str, since: float | None = None) -> list[str]:
        return []

    def stop(self) -> None:
        """Nothing to stop: whoever started the servers stops them."""


# --------------------------------------------------------------------------- per-process state


#: The key of ``workerinput`` that carries the controller's choice of servers to each pytest-xdist worker.
CHOICE_KEY = "mailtls_server_choice"


class SessionState:
    """Per-process state: settings, the matrix, the selection, the cells collected, the session grid."""

    def __init__(self, config: pytest.Config) -> None:
        self.pytest_config = config
        self.cfg: MailTLSConfig = get_config(config)
        self._matrix: Matrix | None = None
        self._selection: Selection | None = None
        self.requested: dict[str, Cell] = {}  # the session grid's cells, as tests collected them
        self.grid: Grid | ManifestGrid | Any | None = None  # the session grid, once started
        self.start_error: BaseException | None = None
        self._manifest_grid: ManifestGrid | None = None
        self._manifests: dict[Path, ManifestGrid] = {}
        self._own: dict[GridSpec, Selection] = {}
        self.engine_skips = 0  # tests skipped for want of an engine (a failure with --mailtls-require-docker)

    @property
    def matrix(self) -> Matrix:
        if self._matrix is None:
            self._matrix = load_matrix(self.cfg.matrix)
        return self._matrix

    @property
    def selection(self) -> Selection:
        """The session's selection (``--mailtls-servers``, ``--mailtls-select``; asks the engine once)."""
        if self._selection is None:
            told = getattr(self.pytest_config, "workerinput", {}).get(CHOICE_KEY)
            choice = ServerChoice(list(told["servers"]), told["note"], told["engine_problem"]) if told else None
            self._selection = resolve(
                servers=self.cfg.servers, matrix=self.matrix, select=self.cfg.select, choice=choice
            )
        return self._selection

    def server_choice(self) -> dict[str, Any]:
        """The servers this run chose (asking the engine once), for the workers (``workerinput[CHOICE_KEY]``):
        each pytest-xdist worker would otherwise import the Docker SDK and ask the engine itself (0.5 s each)."""
        chosen = self.selection
        return {"servers": list(chosen.servers), "note": chosen.note, "engine_problem": chosen.engine_problem}

    @property
    def resolved(self) -> bool:
        return self._selection is not None

    @property
    def manifest_grid(self) -> ManifestGrid:
        """The running servers of ``--mailtls-manifest``, read (and checked alive) once per process."""
        if self._manifest_grid is None:
            assert self.cfg.manifest is not None
            self._manifest_grid = self.manifest(self.cfg.manifest)
        return self._manifest_grid

    def manifest(self, path: str | Path) -> ManifestGrid:
        """A manifest's running servers, read (and checked alive) once per process."""
        key = Path(path).resolve()
        if key not in self._manifests:
            self._manifests[key] = ManifestGrid(path)
        return self._manifests[key]

    def cells(self) -> list[Cell]:
        """The session grid's candidate cells: the selection's, or a manifest's."""
        if self.cfg.manifest:
            return [e.cell for e in self.manifest_grid.endpoints]
        return self.selection.cells

    def own_selection(self, spec: GridSpec) -> Selection:
        """The selection of a ``mailtls_proc(...)`` grid with arguments (its arguments over the settings)."""
        if spec not in self._own:
            self._own[spec] = resolve(
                servers=spec.servers if spec.servers is not None else self.cfg.servers,
                matrix=spec.matrix if spec.matrix is not None else self.cfg.matrix,
                select=spec.select if spec.select is not None else self.cfg.select,
                where=dict(spec.where),
            )
        return self._own[spec]

    def vocabulary(self, matrix: Matrix, cells: Sequence[Cell] = ()) -> dict[str, tuple[str, ...]]:
        """What a marker may name: the matrix's values, plus those of ``cells`` (a manifest's)."""
        vocabulary = dict(matrix.vocabulary())
        for cell in cells:
            for key, value in cell_attributes(cell).items():
                if value not in vocabulary[key]:
                    vocabulary[key] = (*vocabulary[key], value)
        return vocabulary

    def engine_missing_for(self) -> list[str]:
        """Container servers this run asked for (explicitly or through ``auto``) that have no engine."""
        if self.cfg.manifest:
            return []
        return self.selection.missing_engine


def session_state(config: pytest.Config) -> SessionState:
    """The plugin's state for this process (made at ``pytest_configure``)."""
    return config.stash[STATE]


# --------------------------------------------------------------------------- grid fixtures


@dataclasses.dataclass(frozen=True)
class GridSpec:
    """What a grid fixture serves. ``session``: the session's settings and the cells its tests collected
    (``mailtls_proc()`` without arguments); ``manifest``: servers already running (``mailtls_noproc``);
    otherwise the arguments of ``mailtls_proc(...)`` over the settings."""

    servers: tuple[str, ...] | None = None
    matrix: str | None = None
    select: str | None = None
    where: tuple[tuple[str, tuple[str, ...]], ...] = ()
    session: bool = False
    manifest: str | None = None
    noproc: bool = False

    def candidates(self, config: pytest.Config) -> tuple[list[Cell], dict[str, tuple[str, ...]]]:
        """The cells a cell fixture bound to this grid is parametrized over, and the marker vocabulary."""
        state = session_state(config)
        if self.session:
            cells = state.cells()
            extra = cells if state.cfg.manifest else []
            return cells, state.vocabulary(state.matrix, extra)
        if self.noproc:
            cells = [e.cell for e in state.manifest(self.manifest_path(config)).endpoints]
            return cells, state.vocabulary(state.matrix, cells)
        selection = state.own_selection(self)
        return selection.cells, state.vocabulary(selection.matrix)

    def manifest_path(self, config: pytest.Config) -> str:
        path = self.manifest if self.manifest is not None else get_config(config).manifest
        if path is None:
            raise MailTLSError("mailtls_noproc needs a manifest: pass manifest= or --mailtls-manifest PATH")
        return path


_SPEC_ATTR = "_mailtls_grid_spec"
_BOUND_ATTR = "_mailtls_cell_of"

_SESSION_GRID_DOC = """Session: the running servers for every cell collected in this session.

    Started on first use, one server per kind (postfix, dovecot, james,
    embedded), removed at session end. With ``--mailtls-manifest`` it points
    at servers already running instead and starts nothing. Under pytest-xdist
    the container servers are one grid for all workers (started by the first
    worker that needs them, removed when the last is done); a test holds its
    cell while it runs, so ``messages()`` and ``sessions()`` stay its own.
    (``mailtls_grid = mailtls_proc()``: make others with arguments.)
    """


def mailtls_proc(
    *,
    servers: Sequence[str] | str | None = None,
    matrix: str | Path | None = None,
    select: str | None = None,
    where: Mapping[str, str | Sequence[str]] | None = None,
    scope: Any = "session",
) -> Any:
    """Make a fixture that starts real servers for a selection of the matrix.

    Arguments win over ``--mailtls-*`` flags and ini keys, which win over the
    defaults. ``where`` narrows the cells like the ``mailtls`` marker
    (``{"service": "submission", "policy": ["modern", "legacy"]}``). The
    fixture yields a started :class:`~pytest_mailtls.grid.Grid` of the whole
    selection; every container is removed when the scope ends. Bind a cell
    fixture to it with :func:`mailtls_cell` to run tests once per cell.

    Without arguments it is the plugin's own ``mailtls_grid``: the session's
    settings, and only the cells the session's tests collected.
    """
    if isinstance(servers, str):
        servers = [s.strip() for s in servers.split(",") if s.strip()]
    spec = GridSpec(
        servers=tuple(servers) if servers is not None else None,
        matrix=str(matrix) if matrix is not None else None,
        select=select,
        where=tuple((k, (v,) if isinstance(v, str) else tuple(v)) for k, v in (where or {}).items()),
    )
    if spec == GridSpec():
        spec = GridSpec(session=True)

    def mailtls_proc_fixture(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
        def pki() -> SessionPKI:  # one CA per session: clients trust every grid
            return request.getfixturevalue("mailtls_ca")  # type: ignore[no-any-return]

        if spec.session:
            yield from _session_grid(request.config, pki, tmp_path_factory)
        else:
            yield from _own_grid(request.config, spec, pki, tmp_path_factory)

    if spec.session:
        mailtls_proc_fixture.__doc__ = _SESSION_GRID_DOC
    setattr(mailtls_proc_fixture, _SPEC_ATTR, spec)
    return pytest.fixture(scope=scope)(mailtls_proc_fixture)


def mailtls_noproc(*, manifest: str | Path | None = None, scope: Any = "session") -> Any:
    """Make a fixture for servers that are already running, from their manifest.

    ``manifest`` defaults to ``--mailtls-manifest``/``mailtls_manifest``. A cell fixture
    (:func:`mailtls_cell`) bound to it runs tests once per cell of the manifest.
    """
    spec = GridSpec(noproc=True, manifest=str(manifest) if manifest is not None else None)

    def mailtls_noproc_fixture(request: pytest.FixtureRequest) -> Iterator[ManifestGrid]:
        try:
            yield session_state(request.config).manifest(spec.manifest_path(request.config))
        except MailTLSError as exc:  # stale, foreign or malformed: one line, no traceback
            pytest.fail(str(exc), pytrace=False)

    setattr(mailtls_noproc_fixture, _SPEC_ATTR, spec)
    return pytest.fixture(scope=scope)(mailtls_noproc_fixture)


def _run_grid(
    state: SessionState, cells: list[Cell], pki: PKISource, tmp_path_factory: pytest.TempPathFactory, *, own: bool
) -> Iterator[Grid]:
    from .grid import Grid

    grid = Grid(
        cells, workdir=tmp_path_factory.mktemp("mailtls-servers"), pki=pki(), ready_timeout=state.cfg.ready_timeout
    )
    if not own:
        state.grid = grid
    try:
        grid.start()
    except BaseException as exc:
        if not own:
            state.start_error = exc
        raise
    try:
        yield grid
    finally:
        grid.stop()


def _session_grid(config: pytest.Config, pki: PKISource, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The session grid: a manifest's servers, the run's shared grid under xdist, or this process's own."""
    state = session_state(config)
    if state.cfg.manifest:
        state.grid = state.manifest_grid
        yield state.grid
        return
    cells = list(state.requested.values())
    if state.selection.engine_problem:
        cells = [c for c in cells if c.server not in docker_servers()]
    shared = SharedRun.of(config)
    if shared is not None and any(c.server in docker_servers() for c in cells):
        yield from _shared_grid(state, shared, cells, pki, tmp_path_factory)
        return
    yield from _run_grid(state, cells, pki, tmp_path_factory, own=False)


def _own_grid(
    config: pytest.Config, spec: GridSpec, pki: PKISource, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Grid]:
    """A ``mailtls_proc(...)`` grid with arguments: its whole selection, in this process."""
    state = session_state(config)
    try:
        selection = state.own_selection(spec)
    except MailTLSError as exc:  # a bad matrix, selection or filter: one line, no traceback
        pytest.fail(str(exc), pytrace=False)
    if selection.fell_back and state.cfg.require_docker:
        # auto fell back to the embedded backend: with --mailtls-require-docker that is a failure.
        pytest.fail(
            f"--mailtls-require-docker: only the embedded backend could serve; {selection.engine_problem}",
            pytrace=False,
        )
    if selection.missing_engine and selection.requested is not None:
        _no_engine(selection.missing_engine, selection.engine_problem or "", state.cfg.require_docker)
    if not selection.cells:
        pytest.fail(f"no cell matches the grid's selection ({spec})", pytrace=False)
    yield from _run_grid(state, selection.cells, pki, tmp_path_factory, own=True)


def shared_request(state: SessionState) -> dict[str, Any]:
    """What the run's shared grid daemon is asked to serve besides the cells (the session's settings)."""
    return {
        "matrix": state.cfg.matrix,
        "select": state.cfg.select,
        "servers": state.selection.servers,
        "ready_timeout": state.cfg.ready_timeout,
    }


def _shared_grid(
    state: SessionState,
    shared: SharedRun,
    cells: list[Cell],
    pki: PKISource,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Any]:
    """This worker's view of the run's shared grid, with its in-process cells (embedded) served here."""
    containers = [c for c in cells if c.server in docker_servers()]
    local = [c for c in cells if c.server not in docker_servers()]
    try:
        attached: Any = shared.attach(containers, **shared_request(state))
        grid: Any = attached
        if local:
            from .grid import Grid

            own = Grid(
                local,
                workdir=tmp_path_factory.mktemp("mailtls-servers"),
                pki=pki(),
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


# --------------------------------------------------------------------------- cell fixtures

_CELL_DOC = """Function: one served cell (``Endpoint``) of the grid fixture ``{grid}``; tests taking it run
    once per cell. Narrow the cells with ``@pytest.mark.mailtls(policy="modern", service="submission")``.
    """

_SERVER_DOC = """Function: one served cell (``Endpoint``); tests taking it run once per selected cell.

    Narrow the cells with ``@pytest.mark.mailtls(policy="modern", service="submission")``.
    The endpoint has ``host``, ``port``, ``service``, ``protocol``, ``mode``,
    ``policy``, ``cert``, ``auth``, ``ca_file``, ``username``/``password``,
    ``client_context(version=...)``, ``messages()`` and ``clear()``; mail the cell
    received before the test is cleared. ``sessions()`` and ``last_session()`` return
    what this test's connections did on the wire (``wire.Session``: ``tls_version``,
    ``cipher``, ``offered_versions``, ``offered_ciphers``, ``sni``, ``starttls``,
    ``credentials_in_clear``, ``message_accepted``, ``alerts``, ``closed_by``, ``dialogue``). Container cells are skipped when no
    Docker engine answers (``--mailtls-require-docker`` makes that an error).
    (``mailtls_server = mailtls_cell("mailtls_grid")``.)
    """


def mailtls_cell(grid: str = "mailtls_grid") -> Any:
    """Make a function-scoped fixture bound to the grid fixture named ``grid`` (one made by
    :func:`mailtls_proc` or :func:`mailtls_noproc`): a test taking it runs once per cell of that grid,
    narrowed by its ``mailtls`` marker, and gets that cell's :class:`~pytest_mailtls.manifest.Endpoint`
    with the plugin's diagnostics (sessions, server log lines) when it fails.
    """
    if not grid.isidentifier():
        raise MailTLSError(f"mailtls_cell({grid!r}): name a grid fixture, e.g. mailtls_cell('postfix_grid')")

    def mailtls_cell_fixture(request: pytest.FixtureRequest, **grids: Any) -> Iterator[Endpoint]:
        cell: Cell = request.param
        served = grids[grid]
        state = session_state(request.config)
        session = served is state.grid and not state.cfg.manifest  # the session grid (mailtls_proc())
        if session and cell.server in docker_servers() and state.selection.engine_problem:
            if state.cfg.require_docker:
                pytest.fail(f"--mailtls-require-docker: {state.selection.engine_problem}", pytrace=False)
            pytest.skip(engine_skip_reason([cell.server]))
        if cell.id in served.skipped:
            pytest.skip(f"{cell.id}: {served.skipped[cell.id]}")
        shared = SharedRun.of(request.config) if session else None
        with contextlib.ExitStack() as held:
            if shared is not None and cell.server in docker_servers():
                held.enter_context(shared.cell_lock(cell.id))  # other workers' tests on this cell wait
            yield from _serve_cell(request, served, cell)

    # The grid is a parameter of the fixture: pytest sets it up first, and finds it at collection.
    mailtls_cell_fixture.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [
            inspect.Parameter("request", inspect.Parameter.POSITIONAL_OR_KEYWORD),
            inspect.Parameter(grid, inspect.Parameter.KEYWORD_ONLY),
        ]
    )
    mailtls_cell_fixture.__doc__ = _SERVER_DOC if grid == "mailtls_grid" else _CELL_DOC.format(grid=grid)
    setattr(mailtls_cell_fixture, _BOUND_ATTR, grid)
    return pytest.fixture(mailtls_cell_fixture)


def _serve_cell(request: pytest.FixtureRequest, grid: Any, cell: Cell) -> Iterator[Endpoint]:
    endpoint = grid.endpoint(cell.id)
    if endpoint.extra.get("sessions_file"):
        # sessions() and last_session() count from here: this test's connections only.
        endpoint = dataclasses.replace(endpoint, extra={**endpoint.extra, "sessions_since": time.time()})
    request.node.stash[ENDPOINT] = endpoint
    request.node.stash[GRID] = grid
    request.node.stash[LOG_MARK] = time.time()  # reading the log now would cost a whole log per test
    if endpoint.mailbox is not None:
        endpoint.clear()
    yield endpoint


def cell_binding(metafunc: pytest.Metafunc, name: str) -> tuple[str, GridSpec] | None:
    """``(grid fixture name, its spec)`` when the fixture ``name`` is a cell fixture, else ``None``."""
    defs = metafunc._arg2fixturedefs.get(name)
    if not defs:
        return None
    grid = getattr(defs[-1].func, _BOUND_ATTR, None)
    if grid is None:
        return None
    grid_defs = metafunc._arg2fixturedefs.get(grid)
    spec = getattr(grid_defs[-1].func, _SPEC_ATTR, None) if grid_defs else None
    if spec is None:
        raise MailTLSError(
            f"fixture {name!r} is bound to {grid!r}, which is not a grid fixture: make it with "
            f"{grid} = mailtls_proc(...) or mailtls_noproc(...)"
        )
    return grid, spec


def check_marker(criteria: Mapping[str, Any], vocabulary: Mapping[str, Sequence[str]], source: str) -> None:
    """A marker key or value that names nothing in the matrix is a typo: an error, never an empty skip."""
    from .matrix import CELL_KEYS

    for key in criteria:
        if key not in CELL_KEYS:
            raise MailTLSError(f"@pytest.mark.mailtls: unknown key {key!r}. Allowed: {', '.join(CELL_KEYS)}")
    bad = unknown_criterion(criteria, vocabulary)
    if bad is None:
        return
    key, value = bad
    shown = "the ids `mailtls cells` lists" if key == "id" else ", ".join(vocabulary[key])
    raise MailTLSError(
        f"@pytest.mark.mailtls({key}={value!r}): no {key} of the matrix ({source}) matches. Allowed: {shown}"
    )


def engine_skip_reason(servers: Sequence[str]) -> str:
    """One line for a test that cannot run without a Docker engine: what is missing, why, and the fix.

    The engine's own long explanation is said once per session (in the header), not in every skip.
    """
    return engine_needed_line(servers, engine_problem_line())


#: What the engine's error says -> (the cause in two words, the fix).
_ENGINE_CAUSES = {
    "permission denied": ("permission denied", "run as root or join the docker group"),
    "no such file": ("no such socket", "start one or set DOCKER_HOST"),
    "refused": ("connection refused", "start one or set DOCKER_HOST"),
    "timed out": ("timed out", "start one or set DOCKER_HOST"),
    "timeout": ("timed out", "start one or set DOCKER_HOST"),
}
_ENGINE_AT = re.compile(r"no Docker engine answers at (?:DOCKER_HOST=)?(\S+?)( \(DOCKER_HOST is unset\))?: (.*)", re.S)


def engine_problem_line(problem: str | None = None) -> str:
    """``problem`` (default: this process's :func:`~pytest_mailtls.runtime.engine_problem`) in one line:
    where no engine answers, why, and the fix, e.g. ``none answers at unix:///var/run/docker.sock
    (DOCKER_HOST unset; no such socket): start one or set DOCKER_HOST, or use --mailtls-servers embedded``."""
    if problem is None:
        from .runtime import engine_problem

        problem = engine_problem() or ""
    embedded = "or use --mailtls-servers embedded"
    if "is an engine on" in problem and problem.startswith("DOCKER_HOST="):
        return (
            f"{problem.split(' is ', 1)[0]} is not on this machine: unset it or point it at a local socket, {embedded}"
        )
    for package in ("docker", "testcontainers"):
        if f"package `{package}` is not installed" in problem:
            return f"the Python package {package} is not installed: pip install {package}, {embedded}"
    found = _ENGINE_AT.search(problem)
    where = found.group(1) if found else os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
    unset = "DOCKER_HOST unset; " if found and found.group(2) else ""
    said = (found.group(3) if found else problem).lower()
    cause, fix = next(
        (v for k, v in _ENGINE_CAUSES.items() if k in said), ("no answer", "start one or set DOCKER_HOST")
    )
    return f"none answers at {where} ({unset}{cause}): {fix}, {embedded}"


def _no_engine(servers: Sequence[str], problem: str, required: bool) -> None:
    if required:
        pytest.fail(f"--mailtls-require-docker: {problem}", pytrace=False)
    pytest.skip(engine_skip_reason(servers))
