"""The servers pytest-mailtls runs, found by name.

Each server is declared by its backend module: a :class:`~pytest_mailtls.backends.base.Backend` subclass
that says its name, title, services, whether it needs a Docker engine, how it starts, its log vocabulary
for diagnosis and its remedy hints. Adding a server is that module (and its container recipe) plus ONE
line in :data:`REGISTRY`; nothing else in the package names a server.

Backend modules are imported on first use, not when the plugin loads.

PYTEST_DONT_REWRITE
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from functools import cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..policy import Cell
    from .base import Backend

__all__ = ["REGISTRY", "backend_class", "docker_servers", "get_backend", "servable", "server_names", "server_services"]

#: Server name -> "module:Backend class". One line per server.
REGISTRY: dict[str, str] = {
    "postfix": "pytest_mailtls.backends.postfix:PostfixBackend",
    "dovecot": "pytest_mailtls.backends.dovecot:DovecotBackend",
    "james": "pytest_mailtls.backends.james:JamesBackend",
    "courier": "pytest_mailtls.backends.courier:CourierBackend",
    "embedded": "pytest_mailtls.backends.embedded:EmbeddedBackend",
}


def server_names() -> tuple[str, ...]:
    """Every server, in registry order."""
    return tuple(REGISTRY)


@cache
def backend_class(name: str) -> type[Backend]:
    """The backend class of server ``name`` (``KeyError`` for an unknown name)."""
    module, _, cls = REGISTRY[name].partition(":")
    found: type[Backend] = getattr(importlib.import_module(module), cls)
    return found


def get_backend(name: str) -> Backend:
    """A fresh backend for server ``name``."""
    return backend_class(name)()


def servable(cells: Iterable[Cell]) -> list[Cell]:
    """The cells their server can serve (each backend's ``unsupported`` says why not for the others)."""
    backends: dict[str, Backend] = {}
    out = []
    for cell in cells:
        backend = backends.get(cell.server) or backends.setdefault(cell.server, get_backend(cell.server))
        if not backend.unsupported(cell):
            out.append(cell)
    return out


def server_services(name: str) -> tuple[str, ...]:
    """The services server ``name`` implements."""
    return backend_class(name).services


@cache
def docker_servers() -> tuple[str, ...]:
    """The servers that need a Docker engine."""
    return tuple(name for name in REGISTRY if backend_class(name).needs_docker)
