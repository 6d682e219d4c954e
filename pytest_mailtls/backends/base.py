"""What every backend provides: render and start servers for a list of cells.

Backends know their server and nothing of pytest; the plugin and the CLI know
pytest and the command line and nothing of any one server.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from ..manifest import Endpoint
from ..pki import SessionPKI
from ..policy import Cell

__all__ = ["Backend", "RunningServer", "StartOptions", "Progress", "no_progress"]

#: Progress callback: one human-readable line about long work ("building image ...").
Progress = Callable[[str], None]


def no_progress(_: str) -> None:
    return None


@dataclass(frozen=True)
class StartOptions:
    """What a backend needs besides the cells."""

    pki: SessionPKI
    workdir: Path  # private temp dir for this server: configs, maildirs, logs
    username: str = "tester@mailtls.test"
    password: str = "mailtls-password"
    ready_timeout: float = 60.0
    progress: Progress = no_progress


class RunningServer(abc.ABC):
    """A started server (one container or one in-process server) serving many cells."""

    endpoints: list[Endpoint]

    @abc.abstractmethod
    def logs(self) -> str:
        """The server's log so far."""

    def cell_logs(self, cell_id: str) -> list[str]:
        """Log lines about one cell; backends that can tell cells apart override this."""
        return self.logs().splitlines()

    @abc.abstractmethod
    def stop(self) -> None:
        """Stop and remove everything started; safe to call twice."""

    def __enter__(self) -> RunningServer:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class Backend(abc.ABC):
    """One kind of server."""

    name: str
    needs_docker: bool = True

    def unsupported(self, cell: Cell) -> str | None:
        """Why this backend cannot serve ``cell``, or ``None`` if it can."""
        return None

    @abc.abstractmethod
    def start(self, cells: Sequence[Cell], options: StartOptions) -> RunningServer:
        """Start one server for all ``cells`` and wait until every port passed a real
        protocol exchange (greeting, capability, verified handshake). On failure,
        remove what was started and raise ``ServerStartError`` carrying the log."""
