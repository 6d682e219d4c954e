"""pytest-mailtls: test mail clients against real Postfix, Dovecot and Apache James
servers across a grid of TLS policies, with a throwaway PKI.

The pytest plugin registers itself (``pytest11`` entry point); this module
exports what conftest files and scripts use directly.
"""

from .clients import command_client, get_client
from .errors import MailTLSError, MatrixError, ServerStartError
from .factories import mailtls_noproc, mailtls_proc
from .grid import Grid
from .manifest import Endpoint, read_manifest, write_manifest
from .matrix import Matrix, load_matrix
from .pki import SessionPKI
from .policy import AuthPolicy, Cell, CertProfile, Mode, TLSPolicy

#: The package version: the one home of the number (pyproject.toml reads it; `mailtls --version` prints it).
__version__ = "0.1.0"

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
    "mailtls_proc",
    "read_manifest",
    "write_manifest",
]
