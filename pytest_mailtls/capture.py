"""Captured mail: every backend delivers into a Maildir on the host, read here.

PYTEST_DONT_REWRITE
"""

from __future__ import annotations

import email.policy
import mailbox
import os
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path

__all__ = ["read_maildir", "clear_maildir", "ensure_maildir"]

_PARSER = BytesParser(policy=email.policy.default)


def ensure_maildir(path: str | os.PathLike[str], *, mode: int = 0o777) -> Path:
    """Create ``path`` as an empty Maildir (new/, cur/, tmp/)."""
    root = Path(path)
    for sub in ("new", "cur", "tmp"):
        (root / sub).mkdir(parents=True, exist_ok=True)
        os.chmod(root / sub, mode)
    os.chmod(root, mode)
    return root


def _files(path: str | os.PathLike[str]) -> list[Path]:
    root = Path(path)
    found: list[Path] = []
    for sub in ("new", "cur"):
        folder = root / sub
        if folder.is_dir():
            found.extend(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    # Maildir names start with the delivery time in seconds: order by it, then by mtime.
    return sorted(found, key=lambda p: (p.stat().st_mtime, p.name))


def read_maildir(path: str | os.PathLike[str]) -> list[EmailMessage]:
    """Messages in a Maildir, oldest first, parsed with the modern email policy."""
    messages: list[EmailMessage] = []
    for file in _files(path):
        try:
            data = file.read_bytes()
        except FileNotFoundError:  # cleared or moved meanwhile
            continue
        msg = _PARSER.parsebytes(data)
        assert isinstance(msg, EmailMessage)
        messages.append(msg)
    return messages


def clear_maildir(path: str | os.PathLike[str]) -> None:
    """Remove every message from a Maildir."""
    for file in _files(path):
        file.unlink(missing_ok=True)


# Re-exported for callers that want mailbox semantics (flags, folders).
Maildir = mailbox.Maildir
