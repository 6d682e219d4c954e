"""One base exception and the specific failures users meet.

Messages say what was tried, where, and the option or command that fixes it.

PYTEST_DONT_REWRITE
"""

from __future__ import annotations

__all__ = [
    "MailTLSError",
    "MatrixError",
    "EngineUnavailable",
    "ImageBuildError",
    "ServerStartError",
    "PortInUseError",
    "ManifestError",
    "OptionError",
]


def one_line(text: str) -> str:
    """``text`` with control characters (newlines above all) escaped, so an error stays one line.

    Errors quote what the user wrote; a name holding a newline must not split the message.
    """
    if not any(ord(ch) < 32 or ord(ch) == 127 for ch in text):
        return text
    return "".join(ch if 32 <= ord(ch) != 127 else repr(ch)[1:-1] for ch in text)


class MailTLSError(Exception):
    """Base class of every error pytest-mailtls raises on purpose."""


class MatrixError(MailTLSError):
    """A matrix file, selection or cell filter is invalid."""

    def __init__(self, source: str, key: str, problem: str, hint: str = "") -> None:
        self.source, self.key, self.problem, self.hint = source, key, problem, hint
        text = f"{source}: {key}: {problem}" if key else f"{source}: {problem}"
        super().__init__(one_line(f"{text}. {hint}".rstrip(". ") + ("." if hint else "")))


class EngineUnavailable(MailTLSError):
    """No Docker engine answers."""


class ImageBuildError(MailTLSError):
    """An image (or the local Debian base) could not be built."""


class ServerStartError(MailTLSError):
    """A server did not become ready; carries its log."""

    def __init__(self, message: str, log: str = "") -> None:
        self.log = log
        super().__init__(message)
        if log:
            tail = "\n".join(log.splitlines()[-60:])
            self.add_note(f"server log (last lines):\n{tail}")


class PortInUseError(MailTLSError):
    """A requested host port is taken."""


class ManifestError(MailTLSError):
    """A manifest file is missing, malformed, stale (its servers are gone), or lacks the requested cell."""


class OptionError(MailTLSError):
    """An option names something unusable (a report folder that is a file, a place that cannot be written)."""
