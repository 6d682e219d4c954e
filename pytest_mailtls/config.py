"""Settings: each one an ini key and a ``--mailtls-*`` flag sharing one help text.

Resolved once per session into a frozen dataclass. Precedence: factory
argument > command line > ini file > default.

PYTEST_DONT_REWRITE
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from .backends import REGISTRY

__all__ = ["MailTLSConfig", "SETTINGS", "add_options", "get_config"]

# name -> (help, ini type, default)
SETTINGS: dict[str, tuple[str, str, Any]] = {
    "matrix": ("Matrix file with policies, grid and selections (default: the one shipped with pytest-mailtls).", "string", None),
    "select": ("Named selection of the matrix to serve, e.g. quick or full (default: the matrix's default_selection).", "string", None),
    "servers": (f"Comma-separated servers: {', '.join(REGISTRY)}, or auto (the container servers if Docker answers, else the in-process ones).", "string", "auto"),
    "require_docker": ("Fail when no Docker engine answers (a usage error before any test, also where auto would fall back to the embedded backend), and fail the run if any test skipped for want of an engine. For CI.", "bool", False),
    "ready_timeout": ("Seconds each server may take to pass its readiness checks.", "string", "90"),
    "manifest": ("Use servers already running (e.g. `mailtls up --manifest PATH`) instead of starting any.", "string", None),
    "xdist_grid": ("Under pytest-xdist: `shared` (one grid for all workers, started by the first that needs it) or `per-worker` (each worker starts its own).", "string", "shared"),
}  # fmt: skip


@dataclass(frozen=True)
class MailTLSConfig:
    matrix: str | None
    select: str | None
    servers: str
    require_docker: bool
    ready_timeout: float
    manifest: str | None
    xdist_grid: str = "shared"


def add_options(parser: pytest.Parser) -> None:
    group = parser.getgroup("mailtls", "pytest-mailtls: mail servers across a grid of TLS policies")
    for name, (help_text, ini_type, default) in SETTINGS.items():
        flag = "--mailtls-" + name.replace("_", "-")
        if ini_type == "bool":
            group.addoption(flag, action="store_true", default=None, dest=f"mailtls_{name}", help=help_text)
        else:
            group.addoption(flag, action="store", default=None, dest=f"mailtls_{name}", help=help_text)
        parser.addini(f"mailtls_{name}", help=help_text, type=ini_type, default=default)  # type: ignore[arg-type]


def get_config(config: pytest.Config, **overrides: Any) -> MailTLSConfig:
    """Resolve every setting: override > command line > ini > default."""
    values: dict[str, Any] = {}
    for name in SETTINGS:
        value = overrides.get(name)
        if value is None:
            value = config.getoption(f"mailtls_{name}")
        if value is None:
            value = config.getini(f"mailtls_{name}")
        values[name] = value
    try:
        timeout = float(values["ready_timeout"])
    except (TypeError, ValueError):
        raise pytest.UsageError(
            f"--mailtls-ready-timeout / mailtls_ready_timeout must be a number of seconds, got {values['ready_timeout']!r}"
        ) from None
    xdist_grid = str(values["xdist_grid"] or "shared")
    if xdist_grid not in ("shared", "per-worker"):
        raise pytest.UsageError(
            f"--mailtls-xdist-grid / mailtls_xdist_grid must be shared or per-worker, got {xdist_grid!r}"
        )
    return MailTLSConfig(
        matrix=values["matrix"] or None,
        select=values["select"] or None,
        servers=values["servers"] or "auto",
        require_docker=bool(values["require_docker"]),
        ready_timeout=timeout,
        manifest=values["manifest"] or None,
        xdist_grid=xdist_grid,
    )
