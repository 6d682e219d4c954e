"""The wire: what crossed between a client and a cell, read by the harness that owns the path.

``tlsrecords`` reads TLS records without keys, ``dialogue`` the cleartext SMTP/IMAP/POP3 exchange,
``session`` holds the record of one connection, ``recorder`` is the relay in front of every cell, and
``judge`` turns sessions into facts for verdicts and diagnoses.
"""

from .session import Session, read_sessions

__all__ = ["Session", "read_sessions"]
