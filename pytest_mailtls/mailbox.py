"""Mailboxes and tokens a test inspects or prepares: Maildir++ folders (IMAP's modified UTF-7 names, Dovecot's
uidlist and keywords files), messages delivered straight into a Maildir, and OAuth bearer tokens (PyJWT).

Server-neutral: Dovecot's backend uses it for its cells' mailboxes; any Maildir-based server can.

PYTEST_DONT_REWRITE
"""

from __future__ import annotations

import base64
import email.policy
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path

import jwt

from . import capture

__all__ = [
    "MailboxState",
    "StoredMessage",
    "decode_mailbox_name",
    "deliver_to_maildir",
    "folder_dir",
    "encode_mailbox_name",
    "mint_jwt",
    "read_mailbox_state",
]


def mint_jwt(key: bytes, username: str, *, issuer: str, lifetime: float = 3600.0, now: float | None = None) -> str:
    """An HS256 JWT for ``username`` (``sub``) from ``issuer``, valid for ``lifetime`` s.

    A negative ``lifetime`` makes an expired token (for negative tests).
    """
    issued = int(now if now is not None else time.time()) - 1  # never "issued in the future" to the server
    expires = int(issued + 1 + lifetime)
    if lifetime < 0:
        issued = expires - 60  # an expired token must still have iat <= exp, or it fails for another reason
    claims = {"sub": username, "iss": issuer, "iat": issued, "exp": expires}
    return jwt.encode(claims, key, algorithm="HS256", headers={"typ": "JWT"})


def encode_mailbox_name(name: str) -> str:
    """IMAP modified UTF-7 (RFC 3501 5.1.3), as Dovecot names Maildir++ folders on disk."""
    out: list[str] = []
    pending: list[str] = []

    def flush() -> None:
        if pending:
            raw = "".join(pending).encode("utf-16-be")
            out.append("&" + base64.b64encode(raw).decode().rstrip("=").replace("/", ",") + "-")
            pending.clear()

    for ch in name:
        if 0x20 <= ord(ch) <= 0x7E:
            flush()
            out.append("&-" if ch == "&" else ch)
        else:
            pending.append(ch)
    flush()
    return "".join(out)


def decode_mailbox_name(name: str) -> str:
    """The inverse of :func:`encode_mailbox_name`."""
    out: list[str] = []
    i = 0
    while i < len(name):
        ch = name[i]
        if ch != "&":
            out.append(ch)
            i += 1
            continue
        end = name.index("-", i)
        chunk = name[i + 1 : end]
        if not chunk:
            out.append("&")
        else:
            b64 = chunk.replace(",", "/")
            out.append(base64.b64decode(b64 + "=" * (-len(b64) % 4)).decode("utf-16-be"))
        i = end + 1
    return "".join(out)


def folder_dir(maildir: Path, folder: str) -> Path:
    """The Maildir++ directory of ``folder`` (``INBOX`` is the root; ``.`` separates levels)."""
    if folder.upper() == "INBOX":
        return maildir
    if not folder or folder.startswith(".") or folder.endswith(".") or ".." in folder or "/" in folder:
        raise ValueError(f"invalid folder name {folder!r}: use names like 'Archive' or 'Archive.2024' ('.' nests)")
    return maildir / ("." + ".".join(encode_mailbox_name(part) for part in folder.split(".")))


_delivery_lock = threading.Lock()
_delivery_count = 0


def deliver_to_maildir(
    maildir: str | os.PathLike[str], message: EmailMessage | bytes, *, folder: str = "INBOX"
) -> Path:
    """Put ``message`` into ``folder`` of ``maildir`` as an external delivery agent does; return its file.

    Written to ``tmp/`` and renamed into ``new/``, the Maildir way: Dovecot picks it up (and gives it a
    UID) at its next sync, with its indexes intact. Missing folders are created.
    """
    global _delivery_count
    data = message if isinstance(message, bytes) else message.as_bytes(policy=email.policy.default)
    root = folder_dir(Path(maildir), folder)
    capture.ensure_maildir(root)
    if root != Path(maildir):
        marker = root / "maildirfolder"  # Maildir++: this directory is a folder, not a mailbox root
        if not marker.exists():
            marker.touch()
            marker.chmod(0o666)
    with _delivery_lock:
        _delivery_count += 1
        serial = _delivery_count
    now = time.time()
    host = socket.gethostname().replace("/", "\\057").replace(":", "\\072") or "mailtls"
    # time.M<usec>P<pid>Q<n>.host,S=<size>: unique, and S= spares Dovecot a stat.
    name = f"{int(now)}.M{int(now % 1 * 1e6)}P{os.getpid()}Q{serial}.{host},S={len(data)}"
    tmp = root / "tmp" / name
    tmp.write_bytes(data)
    tmp.chmod(0o666)  # Dovecot runs as another uid when the host user is root
    target = root / "new" / name
    os.replace(tmp, target)
    return target


_FLAG_LETTERS = {"D": "\\Draft", "F": "\\Flagged", "R": "\\Answered", "S": "\\Seen", "T": "\\Deleted"}
_HEADER_PARSER = BytesParser(policy=email.policy.default)


@dataclass(frozen=True)
class StoredMessage:
    """One message as stored in the Maildir: its UID (once Dovecot saw it), flags and file."""

    uid: int | None
    flags: frozenset[str]  # \\Seen, \\Answered, \\Flagged, \\Deleted, \\Draft and keywords
    recent: bool  # still in new/: no IMAP session has seen it yet
    path: Path

    @property
    def headers(self) -> EmailMessage:
        """The parsed header section (the body is not read)."""
        with self.path.open("rb") as fh:
            head = b""
            for line in fh:
                head += line
                if line in (b"\n", b"\r\n"):
                    break
        msg = _HEADER_PARSER.parsebytes(head, headersonly=True)
        assert isinstance(msg, EmailMessage)
        return msg

    @property
    def subject(self) -> str:
        return str(self.headers.get("Subject", ""))

    @property
    def message_id(self) -> str:
        return str(self.headers.get("Message-ID", ""))

    def message(self) -> EmailMessage:
        """The whole message, parsed."""
        msg = _HEADER_PARSER.parsebytes(self.path.read_bytes())
        assert isinstance(msg, EmailMessage)
        return msg


@dataclass(frozen=True)
class MailboxState:
    """A folder's messages with their flags, and the user's folders, read from the Maildir."""

    folder: str
    folders: tuple[str, ...]  # every folder of the user, INBOX first
    messages: tuple[StoredMessage, ...] = field(default_factory=tuple)  # in UID order (new ones last)
    uid_validity: int | None = None
    uid_next: int | None = None

    def by_subject(self, subject: str) -> list[StoredMessage]:
        return [m for m in self.messages if m.subject == subject]

    @property
    def uids(self) -> frozenset[int]:
        return frozenset(m.uid for m in self.messages if m.uid is not None)

    def expunged_since(self, earlier: MailboxState) -> frozenset[int]:
        """UIDs present in ``earlier`` (same folder) that are gone now."""
        if earlier.folder != self.folder:
            raise ValueError(f"cannot compare folder {self.folder!r} with {earlier.folder!r}")
        return earlier.uids - self.uids


def _read_uidlist(root: Path) -> tuple[dict[str, int], int | None, int | None]:
    """dovecot-uidlist: base file name -> UID, plus UIDVALIDITY and the next UID."""
    try:
        lines = (root / "dovecot-uidlist").read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return {}, None, None
    uids: dict[str, int] = {}
    validity = nxt = None
    if lines:
        for word in lines[0].split()[1:]:
            if word[:1] == "V" and word[1:].isdigit():
                validity = int(word[1:])
            elif word[:1] == "N" and word[1:].isdigit():
                nxt = int(word[1:])
    for line in lines[1:]:
        head, sep, base = line.partition(" :")
        uid = head.split(" ", 1)[0]
        if sep and uid.isdigit():
            uids[base] = int(uid)
    if uids:
        # Dovecot appends new records without rewriting the header, so its N can lag behind.
        nxt = max(nxt or 0, max(uids.values()) + 1)
    return uids, validity, nxt


def _read_keywords(root: Path) -> dict[str, str]:
    """dovecot-keywords: letter (a, b, ...) -> keyword."""
    try:
        lines = (root / "dovecot-keywords").read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return {}
    out = {}
    for line in lines:
        index, _, keyword = line.partition(" ")
        if index.isdigit() and int(index) < 26 and keyword:
            out[chr(ord("a") + int(index))] = keyword
    return out


def _list_folders(maildir: Path) -> tuple[str, ...]:
    names = []
    if maildir.is_dir():
        for entry in maildir.iterdir():
            if entry.name.startswith(".") and entry.name not in (".", "..") and (entry / "cur").is_dir():
                names.append(".".join(decode_mailbox_name(p) for p in entry.name[1:].split(".")))
    return ("INBOX", *sorted(names))


def read_mailbox_state(maildir: str | os.PathLike[str], folder: str = "INBOX") -> MailboxState:
    """Flags, UIDs and folders as Dovecot keeps them in ``maildir`` (Maildir++ with dovecot-uidlist).

    Raises ``ValueError`` naming the user's folders when ``folder`` does not exist.
    """
    base = Path(maildir)
    root = folder_dir(base, folder)
    folders = _list_folders(base)
    if not (root / "cur").is_dir() and not (root / "new").is_dir():
        raise ValueError(f"no folder {folder!r} in {base}; the user has {', '.join(folders)}")
    uids, validity, nxt = _read_uidlist(root)
    keywords = _read_keywords(root)
    messages: list[StoredMessage] = []
    for sub in ("cur", "new"):
        folder_path = root / sub
        if not folder_path.is_dir():
            continue
        for path in folder_path.iterdir():
            if path.name.startswith("."):
                continue
            stem, _, info = path.name.partition(":2,")
            flags = {_FLAG_LETTERS[c] for c in info if c in _FLAG_LETTERS}
            flags |= {keywords[c] for c in info if c in keywords}
            messages.append(StoredMessage(uids.get(stem), frozenset(flags), sub == "new", path))
    big = 1 << 62
    messages.sort(key=lambda m: (m.uid if m.uid is not None else big, m.path.name))
    return MailboxState(folder, folders, tuple(messages), validity, nxt)
