"""Fixture factories: build your own grid fixtures in conftest.py.

>>> from pytest_mailtls import mailtls_proc, mailtls_noproc
>>> postfix_grid = mailtls_proc(servers=["postfix"], select="quick")
>>> running = mailtls_noproc(manifest="manifest.json")

Both fixtures yield a :class:`~pytest_mailtls.grid.Grid`-like object with
``endpoints``, ``endpoint(cell_id)`` and ``find(**criteria)``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from .backends import docker_servers
from .config import get_config
from .errors import MailTLSError
from .grid import Grid, choose_servers, parse_servers
from .manifest import Endpoint, find_endpoint, read_manifest
from .matrix import filter_cells, load_matrix

__all__ = ["ManifestGrid", "engine_problem_line", "engine_skip_reason", "mailtls_noproc", "mailtls_proc"]


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


def mailtls_proc(
    *,
    servers: Sequence[str] | str | None = None,
    matrix: str | Path | None = None,
    select: str | None = None,
    where: Mapping[str, str | Sequence[str]] | None = None,
    scope: Any = "session",
) -> Callable[..., Iterator[Grid]]:
    """Make a fixture that starts real servers for a selection of the matrix.

    Arguments win over ``--mailtls-*`` flags and ini keys, which win over the
    defaults. ``where`` narrows the cells like the ``mailtls`` marker
    (``{"service": "submission", "policy": ["modern", "legacy"]}``). The
    fixture yields a started :class:`~pytest_mailtls.grid.Grid`; every
    container is removed when the scope ends.
    """

    @pytest.fixture(scope=scope)
    def mailtls_proc_fixture(
        request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
    ) -> Iterator[Grid]:
        cfg = get_config(request.config, matrix=str(matrix) if matrix else None, select=select)
        requested = parse_servers(servers if servers is not None else cfg.servers)
        choice = choose_servers(requested)
        if choice.engine_problem and requested is None and cfg.require_docker:
            # auto fell back to the embedded backend: with --mailtls-require-docker that is a failure.
            pytest.fail(
                f"--mailtls-require-docker: only the embedded backend could serve; {choice.engine_problem}",
                pytrace=False,
            )
        needing = [s for s in requested or () if s in docker_servers()]
        if choice.engine_problem and needing:
            _no_engine(needing, choice.engine_problem, cfg.require_docker)
        try:
            cells = load_matrix(cfg.matrix).cells(servers=choice.servers, selection=cfg.select)
            if where:
                cells = filter_cells(cells, where)
        except MailTLSError as exc:  # a bad matrix, selection or filter: one line, no traceback
            pytest.fail(str(exc), pytrace=False)
        pki = request.getfixturevalue("mailtls_ca")  # one CA per session: clients trust every grid
        grid = Grid(cells, workdir=tmp_path_factory.mktemp("mailtls"), pki=pki, ready_timeout=cfg.ready_timeout)
        with grid:
            yield grid

    return mailtls_proc_fixture


def mailtls_noproc(
    *, manifest: str | Path | None = None, scope: Any = "session"
) -> Callable[..., Iterator[ManifestGrid]]:
    """Make a fixture for servers that are already running, from their manifest.

    ``manifest`` defaults to ``--mailtls-manifest``/``mailtls_manifest``.
    """

    @pytest.fixture(scope=scope)
    def mailtls_noproc_fixture(request: pytest.FixtureRequest) -> Iterator[ManifestGrid]:
        path = manifest if manifest is not None else get_config(request.config).manifest
        if path is None:
            pytest.fail("mailtls_noproc needs a manifest: pass manifest= or --mailtls-manifest PATH", pytrace=False)
        try:
            grid = ManifestGrid(path)
        except MailTLSError as exc:  # stale, foreign or malformed: one line, no traceback
            pytest.fail(str(exc), pytrace=False)
        yield grid

    return mailtls_noproc_fixture


def engine_skip_reason(servers: Sequence[str]) -> str:
    """One line for a test that cannot run without a Docker engine: what is missing, why, and the fix.

    The engine's own long explanation is said once per session (in the header), not in every skip.
    """
    verb = "needs" if len(servers) == 1 else "need"
    return f"{', '.join(servers)} {verb} a Docker engine: " + engine_problem_line()


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
    if "package `docker` is not installed" in problem:
        return f"the Python package docker is not installed: pip install docker, {embedded}"
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
