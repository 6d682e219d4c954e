"""Which cells a run serves: one resolution for the CLI, the plugin, the fixture factories and the
testcontainers API.

Settings in (servers, matrix, selection, cell filters), a :class:`Selection` out: the cells, the servers
that serve them, a note to say once when ``auto`` fell back to the in-process backend, and the engine
problem (if any) with the container servers it leaves without an engine. Callers decide what a missing
engine means to them (a CLI error, a skip, a failure under ``--mailtls-require-docker``); they never
compute the selection themselves.

PYTEST_DONT_REWRITE
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .backends import backend_class, docker_servers, server_names
from .errors import MailTLSError
from .matrix import Matrix, filter_cells, load_matrix
from .policy import Cell

__all__ = [
    "Selection",
    "ServerChoice",
    "choose_servers",
    "engine_needed_line",
    "parse_servers",
    "parse_where",
    "resolve",
]

Criteria = Mapping[str, str | Sequence[str]]


def parse_servers(value: str | Sequence[str] | None) -> list[str] | None:
    """``"postfix,dovecot"`` -> ``["postfix", "dovecot"]``; ``None``/``"auto"`` -> ``None`` (auto)."""
    if value is None:
        return None
    items = [s.strip() for s in (value.split(",") if isinstance(value, str) else value) if s.strip()]
    if not items or items == ["auto"]:
        return None
    for item in items:
        if item not in server_names():
            raise MailTLSError(
                f"unknown server {item!r} in --mailtls-servers/--servers; choose from {', '.join(server_names())} or 'auto'"
            )
    return list(dict.fromkeys(items))


def parse_where(items: Iterable[str]) -> dict[str, list[str]]:
    """``["policy=modern,legacy", "service=imaps"]`` (the CLI's ``--where``) -> criteria for the cells."""
    criteria: dict[str, list[str]] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not value:
            raise MailTLSError(f"--where {item!r}: expected KEY=VALUE, e.g. --where policy=modern")
        criteria.setdefault(key.strip(), []).extend(v.strip() for v in value.split(","))
    return criteria


@dataclass(frozen=True)
class ServerChoice:
    servers: list[str]
    note: str | None  # said once to the user when auto fell back to the embedded backend
    engine_problem: str | None


def choose_servers(requested: Sequence[str] | None, *, need_engine: bool = True) -> ServerChoice:
    """Resolve ``auto`` (None): the containerized servers if a Docker engine answers, else embedded.

    ``need_engine=False`` (listing cells starts nothing) keeps an explicit list as it is without asking
    the engine; ``auto`` still asks, since what it means depends on the answer.
    """
    if requested is not None and not need_engine:
        return ServerChoice(list(requested), None, None)
    from .runtime import engine_problem

    needs_engine = requested is None or any(s in docker_servers() for s in requested)
    problem = engine_problem() if needs_engine else None
    if requested is not None:
        return ServerChoice(list(requested), None, problem)
    if problem is None:
        return ServerChoice(list(docker_servers()), None, None)
    local = [name for name in server_names() if not backend_class(name).needs_docker]
    containers = ", ".join(backend_class(name).title for name in docker_servers())
    note = (
        f"No Docker engine is reachable: serving the grid with the {', '.join(local)} backend (in this process). "
        f"For {containers} start an engine (as root: `bash containers/base/start-engine.sh` in a "
        "checkout) or point DOCKER_HOST at one."
    )
    return ServerChoice(local, note, problem)


@dataclass(frozen=True)
class Selection:
    """The resolved cells of a run and how they are served."""

    matrix: Matrix
    cells: list[Cell]
    servers: list[str]
    requested: list[str] | None  # the servers asked for by name; None for auto
    note: str | None = None  # auto fell back to the in-process backend: say it once
    engine_problem: str | None = None
    select: str | None = None
    where: dict[str, list[str]] = field(default_factory=dict)

    @property
    def missing_engine(self) -> list[str]:
        """Container servers this selection asked for (by name, or through ``auto``) that have no engine."""
        if not self.engine_problem:
            return []
        return [s for s in (self.requested or docker_servers()) if s in docker_servers()]

    @property
    def fell_back(self) -> bool:
        """``auto`` found no engine and serves in-process instead."""
        return self.requested is None and self.engine_problem is not None

    def servable(self) -> list[Cell]:
        """The cells that can start here (those of container servers need an engine)."""
        if not self.engine_problem:
            return list(self.cells)
        return [c for c in self.cells if c.server not in docker_servers()]


def resolve(
    *,
    servers: str | Sequence[str] | None = None,
    matrix: str | Path | Matrix | None = None,
    select: str | None = None,
    where: Criteria | None = None,
    need_engine: bool = True,
    choice: ServerChoice | None = None,
) -> Selection:
    """Resolve settings into a :class:`Selection` (raises :class:`MailTLSError` with one line on bad input:
    an unknown server, a malformed matrix, a selection or filter key that does not exist). ``choice``: the
    servers as another process of the run already chose them (a pytest-xdist worker gets the controller's,
    instead of asking the engine itself)."""
    requested = parse_servers(servers)
    if choice is None:
        choice = choose_servers(requested, need_engine=need_engine)
    loaded = matrix if isinstance(matrix, Matrix) else load_matrix(matrix)
    cells = loaded.cells(servers=choice.servers, selection=select)
    criteria = {k: [v] if isinstance(v, str) else list(v) for k, v in (where or {}).items()}
    if criteria:
        cells = filter_cells(cells, criteria)
    return Selection(
        matrix=loaded,
        cells=cells,
        servers=choice.servers,
        requested=requested,
        note=choice.note,
        engine_problem=choice.engine_problem,
        select=select,
        where=criteria,
    )


def engine_needed_line(servers: Sequence[str], problem: str, *, flag: str = "--mailtls-servers") -> str:
    """``postfix, dovecot need a Docker engine: <problem>``, with the fix spelled for ``flag``."""
    verb = "needs" if len(servers) == 1 else "need"
    if flag != "--mailtls-servers":
        problem = problem.replace("--mailtls-servers embedded", f"{flag} embedded")
    return f"{', '.join(servers)} {verb} a Docker engine: {problem}"
