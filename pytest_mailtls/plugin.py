"""pytest hooks and the default fixtures: nothing else lives here.

Tests that take ``mailtls_server`` are parametrized over the selected cells;
the servers for every cell collected in the session start once, on first use,
one container per server kind, and are removed at the end of the session.

PYTEST_DONT_REWRITE
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
from collections.abc import Callable, Generator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from .backends import docker_servers
from .config import MailTLSConfig, add_options
from .errors import MailTLSError
from .factories import (
    CHOICE_KEY,
    ENDPOINT,
    GRID,
    LOG_MARK,
    RECORDS,
    STATE,
    GridSpec,
    ManifestGrid,
    SessionState,
    cell_binding,
    check_marker,
    engine_problem_line,
    engine_skip_reason,
    mailtls_cell,
    mailtls_proc,
    shared_request,
)
from .manifest import Endpoint, ManifestOwner, write_manifest
from .matrix import Matrix, filter_cells
from .selection import parse_servers
from .shared import WORKERINPUT_KEY, SharedRun, start_shared_dir, stop_shared_dir

if TYPE_CHECKING:
    from .grid import Grid
    from .pki import SessionPKI

_STATE = STATE  # the state lives with the fixtures that serve it (factories.py)
_ENDPOINT, _RECORDS, _LOG_MARK, _GRID = ENDPOINT, RECORDS, LOG_MARK, GRID


def pytest_addoption(parser: pytest.Parser) -> None:
    add_options(parser)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "mailtls(server=, service=, protocol=, mode=, policy=, cert=, auth=, id=): run the test only on matching "
        "cells; each value a string or list, globs allowed.",
    )
    config.stash[_STATE] = state = SessionState(config)
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
            f"--mailtls-require-docker: {', '.join(missing)} {verb} a Docker engine: {auto}{state.selection.engine_problem}"
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
    if state is None or shared is None or state.cfg.manifest:
        return
    containers = [c for c in state.requested.values() if c.server in docker_servers()]
    with contextlib.suppress(Exception):  # any problem is said by the grid fixture, in the tests
        if containers and not state.selection.engine_problem:
            shared.request(containers, **shared_request(state))
        else:  # the controller's head start, if any, is not needed: it leaves now
            shared.unneeded()


def pytest_report_collectionfinish(config: pytest.Config, start_path: Path, items: list[pytest.Item]) -> list[str]:
    state = config.stash.get(_STATE, None)
    if state is None or not state.resolved:
        return []
    lines = [f"mailtls: servers {','.join(state.selection.servers)}"]
    if state.selection.note:
        lines.append(f"mailtls: {state.selection.note}")
    elif state.engine_missing_for():
        # Said once here in full; each skipped test carries only a one-line reason.
        lines.append(f"mailtls: {state.selection.engine_problem}")
    return lines


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrize every cell fixture (``mailtls_server``, or one made by ``mailtls_cell``) over its
    grid's cells, narrowed by the test's ``mailtls`` marker."""
    for name in metafunc.fixturenames:
        try:
            binding = cell_binding(metafunc, name)
        except MailTLSError as exc:
            raise pytest.Collector.CollectError(f"{metafunc.definition.nodeid}: {exc}") from None
        if binding is not None:
            _parametrize_cells(metafunc, name, binding[1])


def _parametrize_cells(metafunc: pytest.Metafunc, name: str, spec: GridSpec) -> None:
    state = metafunc.config.stash[_STATE]
    test = metafunc.definition.nodeid
    try:
        cells, vocabulary = spec.candidates(metafunc.config)
        marker = metafunc.definition.get_closest_marker("mailtls")
        if marker is not None:
            if marker.args:
                raise MailTLSError(
                    "the mailtls marker takes keyword arguments only, e.g. @pytest.mark.mailtls(policy='modern')"
                )
            check_marker(marker.kwargs, vocabulary, str(spec.matrix or state.matrix.source))
            cells = filter_cells(cells, marker.kwargs)
    except MailTLSError as exc:
        raise pytest.Collector.CollectError(f"{test}: {exc}") from None
    if not cells:
        missing = state.engine_missing_for() if spec.session else []
        named = ",".join(state.selection.servers) if spec.session and not state.cfg.manifest else ""
        if missing:
            why = f"no {named} cell matches; " + engine_skip_reason(missing)
        else:
            where = f"servers {named}" if named else "its grid"
            why = f"no cell of selection {spec.select or state.cfg.select or 'default'} on {where} matches"
        metafunc.parametrize(name, [pytest.param(None, marks=pytest.mark.skip(reason=why))], ids=["no-cell"])
        return
    if spec.session:
        for cell in cells:
            state.requested.setdefault(cell.id, cell)
    metafunc.parametrize(name, cells, ids=[c.id for c in cells], indirect=True)


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
    from .pki import SessionPKI

    return SessionPKI(tmp_path_factory.mktemp("mailtls-pki"))


mailtls_grid = mailtls_proc()


@pytest.fixture(scope="session")
def mailtls_manifest(mailtls_grid: Grid | ManifestGrid, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Session: path of a manifest (JSON) describing every running cell, for external clients."""
    if isinstance(mailtls_grid, ManifestGrid):
        return mailtls_grid.path
    path = tmp_path_factory.mktemp("mailtls-manifest") / "manifest.json"
    return write_manifest(path, mailtls_grid.endpoints, owner=ManifestOwner.current("pytest"))


mailtls_server = mailtls_cell("mailtls_grid")


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

    def __init__(self, state: SessionState) -> None:
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
    if state is not None and not state.cfg.manifest:
        # One engine question per run, not per worker; bad settings: each worker says so in its own collection.
        with contextlib.suppress(MailTLSError):
            node.workerinput[CHOICE_KEY] = state.server_choice()
    if state is None or state.cfg.manifest or state.cfg.xdist_grid != "shared":
        return
    directory = config.stash.get(_SHARED_DIR, None)
    if directory is None:
        config.stash[_SHARED_DIR] = directory = start_shared_dir()
        shared = SharedRun(directory, os.getpid())
        if not _guess_grid(config, state, shared):
            _head_start(state, shared)
    node.workerinput[WORKERINPUT_KEY] = {"dir": str(directory), "controller": os.getpid()}


_CACHE_KEY = "mailtls/xdist-grid"


def _guess_grid(config: pytest.Config, state: SessionState, shared: SharedRun) -> bool:
    """Start the grid the previous run with the same settings needed, before any worker has even started:
    the servers come up while the workers boot and collect. A worker that needs more restarts it.
    True when it started one."""
    cache = getattr(config, "cache", None)
    if cache is None:
        return False
    try:
        last = cache.get(_CACHE_KEY, None)
        if not isinstance(last, dict) or not last.get("cells") or state.selection.engine_problem:
            return False
        settings = shared_request(state)
        if any(last.get(key) != value for key, value in settings.items()):
            return False
        shared.request(last["cells"], **settings, guess=True)
    except Exception:  # a guess must never stop a run
        return False
    return True


def _head_start(state: SessionState, shared: SharedRun) -> bool:
    """A cold run (no guess): start the grid daemon now, in prepare mode (``SharedRun.prepare``): it boots,
    asks the engine and makes the session's keys while the workers boot and collect, then serves the first
    worker's request. Not when no container cell can be served (``embedded`` only, no engine)."""
    try:
        selection = state.selection
        if selection.engine_problem or not any(c.server in docker_servers() for c in selection.cells):
            return False
        return shared.prepare(shared_request(state))
    except Exception:  # a head start must never stop a run
        return False


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
        grid = request.node.stash.get(_GRID, None)
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
    grid = item.stash.get(_GRID, None)
    if grid is None:
        return
    sessions = _sessions_text(endpoint)
    if sessions:
        report.sections.append((f"mailtls sessions ({endpoint.id})", sessions))
    lines = grid.cell_logs(endpoint.id, since=item.stash.get(_LOG_MARK, None))[-60:]
    if lines:
        report.sections.append((f"mailtls server log ({endpoint.id})", "\n".join(lines)))
