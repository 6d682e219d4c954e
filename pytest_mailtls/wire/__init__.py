"""The wire: what crossed between a client and a cell, read by the harness that owns the path.

``tlsrecords`` reads TLS records without keys, ``dialogue`` the cleartext SMTP/IMAP/POP3 exchange,
``session`` holds the record of one connection, ``recorder`` is the relay in front of every cell, and
``judge`` turns sessions into facts for verdicts and diagnoses.

PYTEST_DONT_REWRITE
"""

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .session import Session, read_sessions

__all__ = ["Session", "read_sessions"]


def __getattr__(name: str) -> Any:
    # Imported on first use: ``wire.tlsrecords`` (the probe's record reader) does not pay for pydantic.
    if name not in __all__:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from . import session

    value = getattr(session, name)
    globals()[name] = value
    return value
