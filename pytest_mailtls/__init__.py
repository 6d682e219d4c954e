"""pytest-mailtls: test mail clients against real Postfix, Dovecot and Apache James
servers across a grid of TLS policies, with a throwaway PKI.

The pytest plugin registers itself (``pytest11`` entry point); this module
exports what conftest files and scripts use directly.

PYTEST_DONT_REWRITE
"""

from typing import TYPE_CHECKING, Any

#: The package version: the one home of the number (pyproject.toml reads it; `mailtls --version` prints it).
__version__ = "0.1.0"

# Imported on first use (PEP 562): ``import pytest_mailtls.probe`` or ``.tls`` does not pay for pytest, the
# grid and the backends. Name -> the submodule that defines it.
_EXPORTS = {
    "command_client": "clients",
    "get_client": "clients",
    "MailTLSError": "errors",
    "MatrixError": "errors",
    "ServerStartError": "errors",
    "mailtls_cell": "factories",
    "mailtls_noproc": "factories",
    "mailtls_proc": "factories",
    "Grid": "grid",
    "Endpoint": "manifest",
    "read_manifest": "manifest",
    "write_manifest": "manifest",
    "Matrix": "matrix",
    "load_matrix": "matrix",
    "SessionPKI": "pki",
    "AuthPolicy": "policy",
    "Cell": "policy",
    "CertProfile": "policy",
    "Mode": "policy",
    "TLSPolicy": "policy",
}

if TYPE_CHECKING:
    from .clients import command_client, get_client
    from .errors import MailTLSError, MatrixError, ServerStartError
    from .factories import mailtls_cell, mailtls_noproc, mailtls_proc
    from .grid import Grid
    from .manifest import Endpoint, read_manifest, write_manifest
    from .matrix import Matrix, load_matrix
    from .pki import SessionPKI
    from .policy import AuthPolicy, Cell, CertProfile, Mode, TLSPolicy


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value


__all__ = [
    "AuthPolicy",
    "Cell",
    "CertProfile",
    "Endpoint",
    "Grid",
    "MailTLSError",
    "Matrix",
    "MatrixError",
    "Mode",
    "ServerStartError",
    "SessionPKI",
    "TLSPolicy",
    "command_client",
    "get_client",
    "load_matrix",
    "mailtls_noproc",
    "mailtls_cell",
    "mailtls_proc",
    "read_manifest",
    "write_manifest",
]
