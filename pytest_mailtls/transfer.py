"""Files into and out of containers through the engine's API, for engines that cannot bind-mount this host's
folders (a remote engine: ``DOCKER_HOST=tcp://…`` or ``ssh://…``; or ``MAILTLS_COPY_FILES=1``).

A local engine bind-mounts the folders a backend renders (configuration, keys, an empty mail root). Where
files must be *copied* instead (see :func:`pytest_mailtls.runtime.copies_files`), the container is created,
each folder is sent into it as a tar archive before it starts (:func:`copy_in`: modes, owners and
modification times kept, so a key stays 0600 and owned by the same uid as under a bind mount), and what
the server writes (captured mail, a status file) is read back on demand (:func:`pull`), mirroring the
container's copy into the host folder that every reader already looks at. Read-write folders live in a
named volume per host folder (:func:`volume_name`), so two containers given the same folder (Postfix and
Dovecot sharing Dovecot's socket folder) share it as they would share a bind mount.

PYTEST_DONT_REWRITE
"""

from __future__ import annotations

import io
import os
import shutil
import stat
import tarfile
import tempfile
from pathlib import Path, PurePosixPath
from typing import Any

__all__ = ["archive", "copy_in", "pull", "push", "volume_name"]


def volume_name(session: str, host_path: str | os.PathLike[str]) -> str:
    """The named volume standing for the read-write host folder ``host_path`` in run ``session``."""
    import hashlib

    digest = hashlib.sha256(os.fsencode(os.path.realpath(host_path))).hexdigest()[:12]
    return f"mailtls-vol-{session[:12]}-{digest}"


def _member(path: Path, name: str) -> tarfile.TarInfo | None:
    """The tar header of ``path`` named ``name`` (mode, owner, mtime as on the host); ``None`` for what a tar
    cannot carry (sockets, devices): those are made by the servers themselves."""
    info = os.lstat(path)
    member = tarfile.TarInfo(name)
    member.mode = stat.S_IMODE(info.st_mode)
    member.uid, member.gid = info.st_uid, info.st_gid
    member.uname = member.gname = ""  # numeric owners, as a bind mount shows them
    member.mtime = int(info.st_mtime)
    if stat.S_ISDIR(info.st_mode):
        member.type = tarfile.DIRTYPE
    elif stat.S_ISREG(info.st_mode):
        member.type, member.size = tarfile.REGTYPE, info.st_size
    elif stat.S_ISLNK(info.st_mode):
        member.type, member.linkname = tarfile.SYMTYPE, os.readlink(path)
    else:
        return None
    return member


def archive(host_path: str | os.PathLike[str], container_path: str, *, parents: bool = True) -> bytes:
    """A tar archive of the file or folder ``host_path`` with every mode, numeric owner and modification time
    kept. With ``parents`` it is extracted at ``/`` and makes ``container_path`` with its parents (0755, root);
    without, it is extracted in ``container_path``'s parent, which exists and keeps its mode and owner."""
    source = Path(host_path)
    target = PurePosixPath(container_path)
    if not target.is_absolute() or ".." in target.parts or target == PurePosixPath("/"):
        raise ValueError(f"container path {container_path!r} must be absolute and plain")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        top = str(target).lstrip("/") if parents else target.name
        for parent in [str(p).lstrip("/") for p in reversed(target.parents) if str(p) != "/"] if parents else []:
            folder = tarfile.TarInfo(parent)
            folder.type, folder.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(folder)
        stack = [(source, top)]
        while stack:
            path, name = stack.pop()
            member = _member(path, name)
            if member is None:
                continue
            if member.isreg():
                with open(path, "rb") as data:
                    tar.addfile(member, data)
            else:
                tar.addfile(member)
            if member.isdir():
                stack.extend((child, f"{name}/{child.name}") for child in sorted(path.iterdir(), reverse=True))
    return buffer.getvalue()


def copy_in(api: Any, container_id: str, host_path: str | os.PathLike[str], container_path: str) -> None:
    """Put ``host_path`` (a file or folder) at ``container_path`` in a created container, parents included."""
    if not api.put_archive(container_id, "/", archive(host_path, container_path)):
        raise OSError(f"the engine refused to copy {host_path} to {container_path} in container {container_id[:12]}")


def push(api: Any, container_id: str, host_path: str | os.PathLike[str], container_path: str) -> None:
    """Put ``host_path`` (a file or folder) at ``container_path`` in a running container whose parent folder of
    ``container_path`` exists; that folder's mode and owner stay as the server left them."""
    parent = str(PurePosixPath(container_path).parent)
    if not api.put_archive(container_id, parent, archive(host_path, container_path, parents=False)):
        raise OSError(f"the engine refused to copy {host_path} to {container_path} in container {container_id[:12]}")


def pull(api: Any, container_id: str, container_path: str, host_path: str | os.PathLike[str]) -> Path:
    """Make ``host_path`` a copy of the container's ``container_path`` (a folder): files the container has are
    written (new or changed), files it no longer has are removed. Returns ``host_path``. A path missing in
    the container leaves the host copy alone."""
    from docker.errors import NotFound

    host = Path(host_path)
    try:
        stream, _ = api.get_archive(container_id, container_path)
    except NotFound:
        return host
    data = b"".join(stream)
    with tempfile.TemporaryDirectory(prefix=".mailtls-pull-", dir=host.parent) as scratch:
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            _extract(tar, scratch)
        fresh = Path(scratch) / PurePosixPath(container_path).name
        if not fresh.exists():
            return host
        if fresh.is_file():
            host.parent.mkdir(parents=True, exist_ok=True)
            os.replace(fresh, host)
            return host
        _mirror(fresh, host)
    return host


def _extract(tar: tarfile.TarFile, target: str) -> None:
    """Extract folders and regular files only, with plain relative names (what a Maildir holds)."""
    safe = getattr(tarfile, "data_filter", None)  # Python 3.11.4 and later
    if safe is not None:
        tar.extractall(target, filter=safe)
        return
    members = [
        m
        for m in tar.getmembers()
        if (m.isdir() or m.isreg()) and not m.name.startswith("/") and ".." not in PurePosixPath(m.name).parts
    ]
    tar.extractall(target, members=members)  # names and types checked above


def _mirror(fresh: Path, host: Path) -> None:
    """Make the folder ``host`` hold what ``fresh`` holds (moving files out of ``fresh``)."""
    host.mkdir(parents=True, exist_ok=True)
    wanted = {p.name for p in fresh.iterdir()}
    for old in host.iterdir():
        if old.name not in wanted:
            if old.is_dir() and not old.is_symlink():
                shutil.rmtree(old, ignore_errors=True)
            else:
                old.unlink(missing_ok=True)
    for item in fresh.iterdir():
        target = host / item.name
        if item.is_dir() and not item.is_symlink():
            if target.exists() and not target.is_dir():
                target.unlink()
            _mirror(item, target)
        else:
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            os.replace(item, target)
