"""Fixture factories: build your own grid fixtures in conftest.py.

>>> from pytest_mailtls import mailtls_proc, mailtls_noproc
>>> postfix_grid = mailtls_proc(servers=["postfix"], select="quick")
>>> running = mailtls_noproc(manifest="manifest.json")

Both fixtures yield a :class:`~pytest_mailtls.grid.Grid`-like object with
``endpoints``, ``endpoint(cell_id)`` and ``find(**criteria)``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from .config import get_config
from .errors import MailTLSError
from .grid import DOCKER_SERVERS, Grid, choose_servers, parse_servers
from .manifest import Endpoint, find_endpoint, read_manifest
from .matrix import filter_cells, load_matrix

__all__ = ["ManifestGrid", "mailtls_noproc", "mailtls_proc"]


class ManifestGrid:
    """Endpoints of servers already running, read from a manifest (no process is started)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.endpoints: list[Endpoint] = read_manifest(self.path)
        self.skipped: dict[str, str] = {}

    def endpoint(self, cell_id: str) -> Endpoint:
        return find_endpoint(self.endpoints, cell_id)

    def find(self, **criteria: str | Sequence[str]) -> list[Endpoint]:
        ids = {c.id for c in filter_cells([e.cell for e in self.endpoints], criteria)}
        return [e for e in self.endpoints if e.id in ids]

    def cell_logs(self, cell_id: str) -> list[str]:
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
        if choice.engine_problem and any(s in DOCKER_SERVERS for s in choice.servers):
            _no_engine(choice.engine_problem, cfg.require_docker)
        cells = load_matrix(cfg.matrix).cells(servers=choice.servers, selection=cfg.select)
        if where:
            cells = filter_cells(cells, where)
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
            raise MailTLSError("mailtls_noproc needs a manifest: pass manifest= or --mailtls-manifest PATH")
        yield ManifestGrid(path)

    return mailtls_noproc_fixture


def _no_engine(problem: str, required: bool) -> None:
    message = f"no Docker engine: {problem}"
    if required:
        pytest.fail(message, pytrace=False)
    pytest.skip(message)
