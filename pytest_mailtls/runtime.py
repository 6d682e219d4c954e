"""The Docker engine: client, server images, the local Debian base, and containers.

testcontainers-python finds the engine, creates and starts the containers and makes the run's network;
the rest talks to the engine through the docker SDK. Both are imported lazily, so that ``pytest --help``,
the embedded backend and the unit tests work without them.
Images are pulled first and built when needed: the Debian base every recipe starts FROM
(a setting, :func:`image_settings`) comes from a registry the engine reaches (its own mirror
configuration applies), else it is made with debootstrap; server images come from a shared
registry by their content tags when one is set, else they are built from ``containers/<server>/``.

Every container started here carries the ``pytest-mailtls`` labels (session,
pid and its start time, uid, host). Given a socket folder on a local Linux engine it is *sealed*: no network
at all, each port a unix socket in that folder (:func:`sealed_routing`); otherwise it publishes its ports on
127.0.0.1 only and sits on this process's own bridge network with inter-container traffic disabled (so no other
container on the engine reaches it). Either way it is registered in a process-wide registry
emptied by :func:`stop_all`, at interpreter exit and on SIGTERM. Temp dirs holding
keys are registered the same way (:func:`register_dir`: a marker file in the dir and
an entry in a per-user index). :func:`reap_orphans` removes the containers, networks
and registered dirs that a dead process of the same user on this host left behind.
Starts can be cancelled (:class:`StartCancelled`), and :func:`signals_deferred`
keeps a second Ctrl-C from cutting a teardown short.

PYTEST_DONT_REWRITE
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import contextvars
import dataclasses
import functools
import hashlib
import json
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import FrameType, TracebackType
from typing import TYPE_CHECKING, Any

from .errors import EngineUnavailable, ImageBuildError, MailTLSError, PortInUseError, ServerStartError

if TYPE_CHECKING:
    import docker
    import filelock

__all__ = [
    "BASE_ARG",
    "BASE_ENV",
    "BASE_IMAGE",
    "REGISTRY_ENV",
    "ImageSettings",
    "LABEL",
    "SESSION_ID",
    "Container",
    "PortClashError",
    "Progress",
    "StartCancelled",
    "container_labels",
    "containers_root",
    "debian_mirror",
    "docker_client",
    "engine_problem",
    "ensure_base_image",
    "ensure_image",
    "check_image_ref",
    "check_registry",
    "copies_files",
    "engine_host",
    "own_container_gateway",
    "publish_address",
    "remote_engine",
    "image_settings",
    "push_image",
    "shared_ref",
    "using_images",
    "prune_images",
    "find_debian_mirror",
    "cancel_starts",
    "process_alive",
    "register_dir",
    "release_dir",
    "run_network",
    "sealed_routing",
    "signals_deferred",
    "free_ports",
    "image_tag",
    "reap_orphans",
    "running_containers",
    "start_container",
    "stop_all",
]

#: Progress callback: one human-readable line about long work.
Progress = Callable[[str], None]

#: The default base every server image starts FROM: pulled, or made by debootstrap, when missing.
BASE_IMAGE = "debian:bookworm-slim"
#: The setting that replaces it, and the build argument the recipes start FROM (``FROM ${MAILTLS_BASE_IMAGE}``).
BASE_ENV = BASE_ARG = "MAILTLS_BASE_IMAGE"
#: The setting naming a registry (``host[:port][/path]``) that built images are shared through.
REGISTRY_ENV = "MAILTLS_REGISTRY"
#: The label every container of ours carries (value "1"); the other labels are ``LABEL + ".<key>"``.
LABEL = "pytest-mailtls"
#: Identifies this process's containers (label ``pytest-mailtls.session``).
SESSION_ID = uuid.uuid4().hex

DEFAULT_SOCKET = "unix:///var/run/docker.sock"
PING_TIMEOUT = 5.0  # a hung engine must not hang pytest for long
API_TIMEOUT = 120.0  # ordinary calls once the engine answered
BUILD_TIMEOUT = 1800  # silence allowed inside one build step (a Maven download can be quiet for long)
LOCK_TIMEOUT = 3600.0  # how long to wait for another process building the same image
PULL_SILENCE = 60.0  # a pull that shows no progress for this long is given up (no registry answers)
MIRROR_ENV = "MAILTLS_DEBIAN_MIRROR"
EMBEDDED_HINT = "or run without Docker: `--mailtls-servers embedded`"

# Debian release names (not Ubuntu's): the only suites whose mirror can serve a Debian base.
_DEBIAN_SUITES = frozenset(
    {"buster", "bullseye", "bookworm", "trixie", "forky", "duke", "sid"}
    | {"stable", "testing", "unstable", "oldstable", "oldoldstable"}
)
_SERVER_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")


def _noop(_: str) -> None:
    return None


# --------------------------------------------------------------------------- engine


def _configured_engine() -> str:
    """The engine testcontainers connects to (``tc.host`` in ~/.testcontainers.properties, else DOCKER_HOST,
    else the current docker context's), or '' for the default socket."""
    try:
        from testcontainers.core.docker_client import get_docker_host
    except ImportError:  # reported by docker_client()
        return os.environ.get("DOCKER_HOST", "")
    return get_docker_host() or ""


def _engine_location() -> str:
    host = _configured_engine()
    if not host:
        return f"{DEFAULT_SOCKET} (DOCKER_HOST is unset)"
    return f"DOCKER_HOST={host}" if host == os.environ.get("DOCKER_HOST") else f"{host} (docker context or tc.host)"


def _engine_hint(reason: str) -> str:
    if "permission denied" in reason.lower():
        return "Run as root or add your user to the `docker` group (then log in again), " + EMBEDDED_HINT + "."
    return (
        "Start an engine (as root: `dockerd >/tmp/dockerd.log 2>&1 &`; in this repository `bash .ci/run` "
        "installs docker.io and starts it), point DOCKER_HOST at a running one (for a non-default docker context: "
        "`export DOCKER_HOST=$(docker context inspect -f '{{.Endpoints.docker.Host}}')`), " + EMBEDDED_HINT + "."
    )


_client_lock = threading.RLock()
#: testcontainers DockerClients, keyed by pid: a forked child must not share the parent's sockets.
_clients: dict[int, Any] = {}


def _no_ryuk() -> None:
    """testcontainers' reaper (Ryuk) is a container pulled from Docker Hub, which CI machines often cannot
    reach; our own label-based reaper (:func:`reap_orphans`, the janitor) covers what it would. Off unless
    the user chose (``TESTCONTAINERS_RYUK_DISABLED`` or ``ryuk.disabled`` in ~/.testcontainers.properties)."""
    from testcontainers.core.config import testcontainers_config

    if "TESTCONTAINERS_RYUK_DISABLED" not in os.environ and "ryuk.disabled" not in testcontainers_config.tc_properties:
        testcontainers_config.ryuk_disabled = True


def docker_client() -> docker.DockerClient:
    """A client for the engine testcontainers resolves (``DOCKER_HOST``, ``tc.host``, the docker context;
    default: the local socket), pinged and cached per process.

    Raises :class:`EngineUnavailable` saying where it looked and how to get an engine.
    """
    return _engine().client


def _engine() -> Any:
    """This process's testcontainers ``DockerClient`` (see :func:`docker_client`)."""
    pid = os.getpid()
    with _client_lock:
        engine = _clients.get(pid)
        if engine is not None:
            _install_exit_hooks()
            return engine
        try:
            import docker  # noqa: F401  (its absence gets its own message)
        except ImportError as exc:
            raise EngineUnavailable(
                f"the Python package `docker` is not installed ({exc}): `pip install docker`, {EMBEDDED_HINT}"
            ) from exc
        try:
            from testcontainers.core.docker_client import DockerClient
        except ImportError as exc:
            raise EngineUnavailable(
                f"the Python package `testcontainers` is not installed ({exc}): `pip install testcontainers`, "
                f"{EMBEDDED_HINT}"
            ) from exc
        _no_ryuk()
        try:
            # testcontainers finds the engine (and, for ssh://, uses the ssh client); from_env inside it
            # negotiates the API version, which already needs an answering engine.
            engine = DockerClient(timeout=int(PING_TIMEOUT))
            engine.client.ping()
        except Exception as exc:  # DockerException, requests' errors, a malformed DOCKER_HOST...
            reason = " ".join(str(exc).split()) or type(exc).__name__
            raise EngineUnavailable(
                f"no Docker engine answers at {_engine_location()}: {reason}. {_engine_hint(reason)}"
            ) from exc
        engine.client.api.timeout = API_TIMEOUT
        _clients[pid] = engine
    _install_exit_hooks()  # usually the main thread asks first, before any worker thread starts containers
    return engine


def _remote_engine(docker_host: str) -> str | None:
    """The remote host a DOCKER_HOST names (tcp:// or ssh:// to another machine), or ``None`` if local."""
    scheme, sep, rest = docker_host.partition("://")
    if not sep or scheme not in ("tcp", "ssh", "http", "https"):
        return None  # unix://, npipe://, unset
    host = rest.split("@")[-1].split("/")[0].strip()
    if host.startswith("["):  # [v6]:port
        host = host[1:].partition("]")[0]
    elif host.count(":") == 1:
        host = host.partition(":")[0]
    return None if host in ("localhost", "127.0.0.1", "::1", "") else host


#: Copy files into containers through the engine instead of bind-mounting them (any engine; remote ones always).
COPY_ENV = "MAILTLS_COPY_FILES"
#: Where this host dials the ports a remote engine publishes (default: the DOCKER_HOST host).
ENGINE_HOST_ENV = "MAILTLS_ENGINE_HOST"
#: The address a remote engine publishes ports on (default: the address the engine host name resolves to).
PUBLISH_ENV = "MAILTLS_PUBLISH_ADDRESS"


def _truthy(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes")


def remote_engine() -> str | None:
    """The host of a remote engine (``DOCKER_HOST=tcp://HOST:2376`` or ``ssh://user@HOST``), ``None`` for a
    local one (a unix socket, or tcp to this machine's loopback)."""
    return _remote_engine(_configured_engine())


_own_gateway: dict[int, str | None] = {}


def own_container_gateway() -> str | None:
    """When this process runs inside a container of the very engine it drives (docker-outside-of-docker: a
    devcontainer, a CI job given the host's socket), the gateway of that container's network, an address of
    the engine's host that this container reaches; else ``None``. Found by asking the engine about this
    container (its id from ``/proc/self/mountinfo``, else the host name) for the gateway of its network
    (testcontainers' ``DockerClient.gateway_ip``); cached."""
    pid = os.getpid()
    if pid in _own_gateway:
        return _own_gateway[pid]
    found: str | None = None
    if remote_engine() is None and (os.path.exists("/.dockerenv") or os.path.exists("/run/.containerenv")):
        try:
            mounts = Path("/proc/self/mountinfo").read_text()
        except OSError:
            mounts = ""
        ids = re.findall(r"/containers/([0-9a-f]{64})/", mounts) or [socket.gethostname()]
        try:
            found = _engine().gateway_ip(ids[0]) or None
        except Exception:  # no such container here (a VM that merely has /.dockerenv, an engine inside this
            found = None  # very container), a network mode without a gateway, or no engine at all
    _own_gateway[pid] = found
    return found


def copies_files() -> bool:
    """Whether containers get their files copied in through the engine (:mod:`pytest_mailtls.transfer`)
    rather than bind-mounted: always with a remote engine, whose containers cannot see this host's folders;
    inside a container of the engine itself (:func:`own_container_gateway`: this container's folders are not
    the engine host's); and on any engine with ``MAILTLS_COPY_FILES=1`` (rootless engines or Podman machines
    whose bind mounts map owners oddly)."""
    return remote_engine() is not None or _truthy(COPY_ENV) or own_container_gateway() is not None


def engine_host() -> str:
    """Where this host dials a published port: ``MAILTLS_ENGINE_HOST`` (or testcontainers' ``TC_HOST``), else
    the remote engine's host, else the gateway of this process's own container (:func:`own_container_gateway`),
    else 127.0.0.1."""
    from testcontainers.core.config import testcontainers_config

    setting = os.environ.get(ENGINE_HOST_ENV, "").strip() or (testcontainers_config.tc_host_override or "").strip()
    return setting or remote_engine() or own_container_gateway() or "127.0.0.1"


def publish_address() -> str:
    """The engine-side address ports are published on: 127.0.0.1 for a local engine (never another). For a
    remote one, ``MAILTLS_PUBLISH_ADDRESS`` or the address :func:`engine_host` resolves to here, which is the
    remote machine's own address unless NAT is in between (then set ``MAILTLS_PUBLISH_ADDRESS`` to the
    engine-side address; ``0.0.0.0`` exposes the test servers on every interface of that machine)."""
    setting = os.environ.get(PUBLISH_ENV, "").strip()
    if setting:
        import ipaddress

        try:
            return str(ipaddress.ip_address(setting))
        except ValueError:
            raise EngineUnavailable(
                f"{PUBLISH_ENV}={setting!r} is not an IP address: give the engine-side address to publish on, "
                "e.g. 10.0.0.5 (or 0.0.0.0 for every interface of the engine's machine)"
            ) from None
    if remote_engine() is None:
        # Inside a container of this engine: its gateway, an address of the engine's host that only the
        # engine's own networks reach; never 0.0.0.0.
        return own_container_gateway() or "127.0.0.1"
    host = engine_host()
    try:
        return str(socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)[0][4][0])
    except (OSError, IndexError) as exc:
        raise EngineUnavailable(
            f"cannot resolve the remote engine's host {host!r} ({exc}): set {PUBLISH_ENV} to the address the "
            f"engine publishes ports on and {ENGINE_HOST_ENV} to where this machine reaches it"
        ) from exc


def prune_images(*, progress: Progress = _noop, repositories: Collection[str] | None = None) -> list[str]:
    """Remove every ``mailtls-<server>`` image but the newest of each server; return the removed tags.

    Image tags follow their recipe's content, so each change of a recipe leaves the previous image
    behind. Images in use by a container are kept. ``repositories`` limits pruning to those repository
    names (a test prunes only its own throwaway images).
    """
    client = docker_client()
    newest: dict[str, tuple[str, Any]] = {}
    removable: list[tuple[str, Any]] = []
    for image in client.images.list():
        for tag in image.tags:
            repo = tag.rsplit(":", 1)[0]
            if not repo.startswith("mailtls-") or (repositories is not None and repo not in repositories):
                continue
            created = image.attrs.get("Created", "")
            if repo not in newest or created > newest[repo][1].attrs.get("Created", ""):
                if repo in newest:
                    removable.append(newest[repo])
                newest[repo] = (tag, image)
            else:
                removable.append((tag, image))
    in_use = {c.image.id for c in client.containers.list(all=True) if c.image is not None}
    removed: list[str] = []
    for tag, image in removable:
        if image.id in in_use:
            progress(f"keeping {tag}: a container uses it")
            continue
        try:
            client.images.remove(tag)
            removed.append(tag)
            progress(f"removed {tag}")
        except _docker_errors().APIError as exc:
            progress(f"could not remove {tag}: {exc}")
    return removed


@functools.cache
def engine_problem() -> str | None:
    """Why no Docker engine is usable (the :class:`EngineUnavailable` message), or ``None``. Cached per process."""
    try:
        docker_client()
    except EngineUnavailable as exc:
        return str(exc)
    return None


def _docker_errors() -> Any:
    import docker.errors

    return docker.errors


# --------------------------------------------------------------------------- locks


def _lock(name: str) -> filelock.FileLock:
    """An inter-process lock shared by pytest-xdist workers and the CLI of this user: a file in one folder
    of the system temp dir (``pytest-mailtls-locks-<uid>``, 0700), not one loose file per image and base
    in the temp dir itself. Lock files stay (deleting one that another process may hold is unsafe)."""
    import filelock

    folder = Path(tempfile.gettempdir()) / f"pytest-mailtls-locks-{os.getuid()}"
    with contextlib.suppress(FileExistsError):
        folder.mkdir(mode=0o700)
    if folder.is_symlink() or folder.stat().st_uid != os.getuid():
        raise MailTLSError(f"{folder} is not a folder of this user's: remove it, or set TMPDIR elsewhere")
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", name)
    return filelock.FileLock(folder / f"{safe}.lock", mode=0o600)


@contextlib.contextmanager
def _locked(name: str, progress: Progress, what: str) -> Iterator[None]:
    import filelock

    lock = _lock(name)
    try:
        lock.acquire(timeout=0)
    except filelock.Timeout:
        progress(f"waiting for another process {what} (lock {lock.lock_file})")
        try:
            lock.acquire(timeout=LOCK_TIMEOUT)
        except filelock.Timeout as exc:
            raise ImageBuildError(
                f"gave up after {LOCK_TIMEOUT:.0f} s waiting for another process {what}: lock {lock.lock_file} is held "
                "(if no pytest-mailtls process runs, delete that file)"
            ) from exc
    try:
        yield
    finally:
        lock.release()


# --------------------------------------------------------------------------- images


@dataclasses.dataclass(frozen=True)
class ImageSettings:
    """Where images come from.

    ``base`` is the image every recipe starts FROM (build argument ``MAILTLS_BASE_IMAGE``); ``registry``
    (``host[:port][/path]``) is where built images are shared by their content tags, tried before building;
    ``build`` is ``False`` for ``mailtls images pull``, which obtains images but never builds or debootstraps.
    """

    base: str = BASE_IMAGE
    registry: str | None = None
    build: bool = True


_settings: contextvars.ContextVar[ImageSettings | None] = contextvars.ContextVar("mailtls_images", default=None)

# A reference as docker reads it, loosely: [host[:port]/]path[:tag][@sha256:digest].
_IMAGE_REF = re.compile(
    r"^(?:(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:]+\])(?::[0-9]+)?/)?"
    r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*"
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(?:@sha256:[0-9a-f]{64})?$"
)


def check_image_ref(text: str, where: str) -> str:
    """``text`` as an image reference, or :class:`ImageBuildError` naming ``where`` it came from."""
    ref = text.strip()
    if not _IMAGE_REF.match(ref):
        raise ImageBuildError(
            f"{where}={text!r} is not an image reference: write [registry/]name[:tag], e.g. {BASE_IMAGE} "
            "or registry.example.org/mirror/debian:bookworm-slim"
        )
    return ref


def check_registry(text: str, where: str) -> str:
    """``text`` as a registry to share images through (``host[:port][/path]``), or :class:`ImageBuildError`."""
    registry = text.strip().rstrip("/")
    scheme, sep, _ = registry.partition("://")
    if sep:
        raise ImageBuildError(
            f"{where}={text!r}: give the registry as host[:port][/path], without {scheme}:// (the engine speaks "
            "HTTPS, or plain HTTP to 127.0.0.0/8 and the registries in its insecure-registries)"
        )
    host = registry.split("/", 1)[0]
    if not (("." in host or ":" in host or host == "localhost") and _IMAGE_REF.match(f"{registry}/x")):
        raise ImageBuildError(
            f"{where}={text!r} is not a registry: write host[:port][/path], e.g. 127.0.0.1:5000 or "
            "registry.example.org/team (a bare name would be a Docker Hub account: docker.io/NAME)"
        )
    return registry


def image_settings() -> ImageSettings:
    """The settings in force: those of the innermost :func:`using_images`, else ``$MAILTLS_BASE_IMAGE`` and
    ``$MAILTLS_REGISTRY`` (defaults: ``debian:bookworm-slim``, no registry)."""
    current = _settings.get()
    if current is not None:
        return current
    return ImageSettings(base=_env_base(), registry=_env_registry())


def _env_base() -> str:
    text = os.environ.get(BASE_ENV, "").strip()
    return check_image_ref(text, BASE_ENV) if text else BASE_IMAGE


def _env_registry() -> str | None:
    text = os.environ.get(REGISTRY_ENV, "").strip()
    return check_registry(text, REGISTRY_ENV) if text else None


@contextlib.contextmanager
def using_images(
    *, base: str | None = None, registry: str | None = None, build: bool = True
) -> Iterator[ImageSettings]:
    """Obtain images with these settings inside the block (``None``: the environment's, see :func:`image_settings`)."""
    settings = ImageSettings(
        base=check_image_ref(base, "--base-image") if base else _env_base(),
        registry=check_registry(registry, "--registry") if registry else _env_registry(),
        build=build,
    )
    token = _settings.set(settings)
    try:
        yield settings
    finally:
        _settings.reset(token)


def containers_root() -> Path:
    """The folder holding one image recipe per server: ``pytest_mailtls/containers`` in an installed
    wheel, ``<repo>/containers`` in a source checkout."""
    package = Path(__file__).resolve().parent
    for candidate in (package / "containers", package.parent / "containers"):
        if candidate.is_dir():
            return candidate
    raise ImageBuildError(
        f"no image recipes found: looked for {package / 'containers'} (installed wheel) and "
        f"{package.parent / 'containers'} (source checkout); reinstall pytest-mailtls"
    )


def _context_files(folder: Path) -> list[Path]:
    # Bytecode caches are not part of any recipe and would change the hash at random.
    return sorted(
        (p for p in folder.rglob("*") if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"),
        key=lambda p: p.relative_to(folder).as_posix(),
    )


def _global_args(dockerfile: str) -> dict[str, str]:
    """The ``ARG name[=default]`` lines before the first ``FROM``: the only ones a ``FROM`` may use."""
    declared: dict[str, str] = {}
    for line in dockerfile.splitlines():
        words = line.split(None, 1)
        if not words or words[0].startswith("#"):
            continue
        if words[0].upper() == "FROM":
            break
        if words[0].upper() == "ARG" and len(words) == 2:
            name, _, default = words[1].strip().partition("=")
            declared[name] = default.strip().strip("\"'")
    return declared


def _recipe_args(dockerfile: str, settings: ImageSettings) -> dict[str, str]:
    """The build arguments to pass: the base image, where the recipe declares ``ARG MAILTLS_BASE_IMAGE``."""
    return {BASE_ARG: settings.base} if BASE_ARG in _global_args(dockerfile) else {}


def _expand(word: str, args: Mapping[str, str]) -> str:
    return re.sub(r"\$(?:\{(\w+)\}|(\w+))", lambda m: args.get(m.group(1) or m.group(2), ""), word)


def _base_images(dockerfile: str, buildargs: Mapping[str, str] | None = None) -> list[str]:
    """The images a Dockerfile starts FROM (``$ARG``s resolved), without build-stage names and ``scratch``."""
    args = _global_args(dockerfile)
    args.update({k: v for k, v in (buildargs or {}).items() if k in args})
    stages: set[str] = set()
    images: list[str] = []
    for line in dockerfile.splitlines():
        words = line.split()
        if len(words) < 2 or words[0].upper() != "FROM":
            continue
        words = [w for w in words[1:] if not w.startswith("--")]
        if not words:
            continue
        ref = _expand(words[0], args)
        if not ref:
            raise ImageBuildError(f"`{line.strip()}` names no image: declare `ARG name=default` before the first FROM")
        if len(words) >= 3 and words[1].upper() == "AS":
            stages.add(words[2].lower())
        if ref.lower() not in stages and ref != "scratch" and ref not in images:
            images.append(ref)
    return images


def image_tag(server: str, folder: Path, base_ids: Sequence[str]) -> str:
    """``mailtls-<server>:<12 hex>``: a hash over every file in ``folder`` (relative name, executable bit,
    bytes; in name order) and the ids of the base images, so any change to a recipe or base gives a new tag."""
    digest = hashlib.sha256(b"pytest-mailtls image v1\0")
    for base_id in base_ids:
        digest.update(f"base {base_id}\0".encode())
    for path in _context_files(folder):
        data = path.read_bytes()
        mode = "x" if os.access(path, os.X_OK) else "-"
        digest.update(f"file {path.relative_to(folder).as_posix()} {mode} {len(data)}\0".encode())
        digest.update(data)
    return f"mailtls-{server}:{digest.hexdigest()[:12]}"


def _image_id(client: docker.DockerClient, ref: str) -> str | None:
    try:
        return str(client.api.inspect_image(ref)["Id"])
    except _docker_errors().ImageNotFound:
        return None


def _engine_key() -> str:
    """A short name for the engine in use, so two engines on one machine do not wait for each other's locks."""
    return hashlib.sha256((_configured_engine() or DEFAULT_SOCKET).encode()).hexdigest()[:8]


def ensure_image(server: str, *, progress: Progress = _noop, containers_dir: Path | None = None) -> str:
    """Obtain ``mailtls-<server>:<content hash>`` unless that tag exists; return the tag.

    The images the recipe starts FROM come first (the base: :func:`ensure_base_image`; any other: the engine
    pulls it). Then the server image is pulled from the registry of :func:`image_settings` when one is set and
    holds that content tag, and built from ``containers/<server>/`` otherwise. Parallel callers (xdist workers,
    the CLI) are serialized by a file lock; an unchanged recipe is never rebuilt. ``containers_dir`` replaces
    :func:`containers_root` (tests, private recipes). Raises :class:`ImageBuildError` with the tail of the
    build output.
    """
    if not _SERVER_NAME.match(server):
        raise ImageBuildError(f"invalid server name {server!r}: use lower-case letters, digits, '-', '_', '.'")
    root = containers_dir if containers_dir is not None else containers_root()
    folder = root / server
    dockerfile = folder / "Dockerfile"
    if not dockerfile.is_file():
        known = sorted(p.name for p in root.iterdir() if (p / "Dockerfile").is_file()) if root.is_dir() else []
        raise ImageBuildError(f"no recipe for server {server!r}: {dockerfile} is missing (recipes: {known or 'none'})")
    settings = image_settings()
    client = docker_client()
    recipe = dockerfile.read_text()
    buildargs = _recipe_args(recipe, settings)

    def tag_now() -> str:
        base_ids = [_from_image(client, ref, dockerfile, settings, progress) for ref in _base_images(recipe, buildargs)]
        return image_tag(server, folder, base_ids)

    tag = tag_now()
    if _image_id(client, tag) is not None:
        return tag
    with _locked(f"image-{server}-{_engine_key()}", progress, f"building {tag}"):
        tag = tag_now()  # the base may have been made meanwhile
        if _image_id(client, tag) is not None:
            return tag
        if settings.registry:
            try:
                _pull_shared(client, tag, settings.registry, progress)
                return tag
            except _PullFailed as exc:
                if not settings.build:
                    raise ImageBuildError(
                        f"{tag} could not be pulled from {settings.registry} ({exc}): build it (`mailtls images "
                        f"build`) and share it (`mailtls images push --registry {settings.registry}`)"
                    ) from None
                progress(f"{tag} not pulled from {settings.registry} ({exc}); building it")
        if not settings.build:
            raise ImageBuildError(f"{tag} is missing and building is off: give a registry to pull it from")
        _build(client, folder, tag, server, progress, buildargs)
    return tag


def _from_image(
    client: docker.DockerClient, ref: str, dockerfile: Path, settings: ImageSettings, progress: Progress
) -> str:
    """The id of ``ref``, an image ``dockerfile`` starts FROM: the base comes from :func:`ensure_base_image`,
    any other image from the engine (pulled when missing)."""
    image_id = _image_id(client, ref)
    if image_id is not None:
        return image_id
    if ref == settings.base:
        return ensure_base_image(progress, tag=ref)
    started = time.monotonic()
    try:
        image_id = _pull(client, ref)
    except _PullFailed as exc:
        raise ImageBuildError(
            f"{dockerfile} starts FROM {ref}, which is not in the engine and cannot be pulled ({exc}): build {ref} "
            f"first, or start the recipe FROM ${{{BASE_ARG}}} (the base image, {settings.base})"
        ) from None
    progress(f"pulled {ref} in {time.monotonic() - started:.0f} s")
    return image_id


def _build(
    client: docker.DockerClient,
    folder: Path,
    tag: str,
    server: str,
    progress: Progress,
    buildargs: Mapping[str, str] | None = None,
) -> None:
    errors = _docker_errors()
    progress(f"building image {tag} from {folder} (once; later runs reuse it)")
    started = time.monotonic()
    tail: collections.deque[str] = collections.deque(maxlen=40)
    failure = ""
    try:
        # The low-level API streams the legacy builder's output; host networking lets apt and Maven
        # reach the mirrors the host reaches. No pull: every FROM was made present before (ensure_image).
        stream = client.api.build(
            path=str(folder),
            tag=tag,
            rm=True,
            forcerm=True,
            pull=False,
            network_mode="host",
            decode=True,
            timeout=BUILD_TIMEOUT,
            buildargs=dict(buildargs or {}) or None,
            labels={f"{LABEL}.image": server},
        )
        for chunk in stream:
            if "error" in chunk:
                failure = str(chunk.get("errorDetail", {}).get("message") or chunk["error"]).strip()
                tail.append(failure)
                continue
            text = str(chunk.get("stream") or chunk.get("status") or "")
            for line in text.splitlines():
                line = line.rstrip()
                if not line:
                    continue
                tail.append(line)
                if line.startswith("Step "):
                    progress(f"{tag}: {line[:150]}")
    except (errors.APIError, errors.BuildError) as exc:
        failure = " ".join(str(exc).split())
    except Exception as exc:  # the stream broke (timeout, engine died)
        failure = f"{type(exc).__name__}: {exc}"
    if not failure and _image_id(client, tag) is None:
        failure = "the engine reported no error but the image is missing"
    if failure:
        log = "\n".join(tail)
        raise ImageBuildError(
            f"building {tag} from {folder} failed after {time.monotonic() - started:.0f} s: {failure}\n"
            f"--- last build output ---\n{log}"
        )
    progress(f"built {tag} in {time.monotonic() - started:.0f} s")


# --------------------------------------------------------------------------- pulling and pushing


class _PullFailed(Exception):
    """The engine could not pull an image; the message says why, in one line."""


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def _split_ref(ref: str) -> tuple[str, str]:
    """(repository, tag or ``sha256:`` digest) of ``ref``; the tag defaults to ``latest``."""
    from docker.utils import parse_repository_tag

    repository, tag = parse_repository_tag(ref)
    return repository, tag or "latest"


def _pull(client: docker.DockerClient, ref: str) -> str:
    """Have the engine pull ``ref`` (its own registry mirrors and logins apply); return the image id.

    Gives up after :data:`PULL_SILENCE` seconds without progress (the SDK's ``pull`` waits forever).
    """
    import requests
    from docker import auth

    repository, tag = _split_ref(ref)
    registry, _ = auth.resolve_repository_name(repository)
    headers = {}
    header = auth.get_config_header(client.api, registry)  # a `docker login` for that registry, if any
    if header:
        headers["X-Registry-Auth"] = header
    url = f"{client.api.base_url}/v{client.api.api_version}/images/create"
    try:
        response = client.api.post(
            url,
            params={"fromImage": repository, "tag": tag},
            headers=headers,
            stream=True,
            timeout=(PING_TIMEOUT, PULL_SILENCE),
        )
    except requests.RequestException as exc:
        raise _PullFailed(f"the engine did not answer: {_one_line(exc)}") from None
    with contextlib.closing(response):
        if response.status_code != 200:
            try:
                message = response.json().get("message") or response.text
            except ValueError:
                message = response.text or f"HTTP {response.status_code}"
            raise _PullFailed(_one_line(message))
        try:
            for line in response.iter_lines():
                if not line:
                    continue
                chunk = json.loads(line)
                if "error" in chunk:
                    raise _PullFailed(_one_line(chunk.get("errorDetail", {}).get("message") or chunk["error"]))
        except (requests.RequestException, OSError, ValueError) as exc:
            raise _PullFailed(f"no progress for {PULL_SILENCE:.0f} s or the stream broke: {_one_line(exc)}") from None
    image_id = _image_id(client, ref)
    if image_id is None:
        raise _PullFailed(f"the engine reported no error but has no image {ref}")
    return image_id


def shared_ref(registry: str, ref: str) -> str:
    """Where ``ref`` is kept in ``registry``: ``R/mailtls-postfix:<tag>``, ``R/debian:bookworm-slim`` (the
    image's own registry host, if it names one, is replaced by ``R``)."""
    from docker import auth

    if "@" in ref:
        raise ImageBuildError(f"{ref} is pinned by digest: it is pulled from its own registry, not shared")
    repository, tag = _split_ref(ref)
    source, path = auth.resolve_repository_name(repository)
    if source == "docker.io" and path.startswith("library/"):
        path = path.removeprefix("library/")
    return f"{registry}/{path}:{tag}"


def _retag(client: docker.DockerClient, source: str, target: str) -> None:
    repository, tag = _split_ref(target)
    client.api.tag(source, repository, tag)


def _untag(client: docker.DockerClient, ref: str) -> None:
    with contextlib.suppress(_docker_errors().APIError):
        client.api.remove_image(ref, noprune=True)  # another tag keeps the image: only the name goes


def _pull_shared(client: docker.DockerClient, ref: str, registry: str, progress: Progress) -> str:
    """Pull ``ref`` from ``registry`` (see :func:`shared_ref`) and tag it ``ref``; return its id or raise
    :class:`_PullFailed`. The registry's name for it is not kept."""
    remote = shared_ref(registry, ref)
    had = _image_id(client, remote) is not None
    started = time.monotonic()
    try:
        image_id = _pull(client, remote)
    except _PullFailed as exc:
        raise _PullFailed(f"{exc}{_registry_hint(str(exc), registry)}") from None
    _retag(client, remote, ref)
    if not had:
        _untag(client, remote)
    progress(f"pulled {ref} from {remote} in {time.monotonic() - started:.0f} s")
    return image_id


def push_image(ref: str, registry: str, *, progress: Progress = _noop) -> str:
    """Push the local image ``ref`` to ``registry`` as :func:`shared_ref` names it; return that name."""
    errors = _docker_errors()
    client = docker_client()
    registry = check_registry(registry, "registry")
    remote = shared_ref(registry, ref)
    if _image_id(client, ref) is None:
        raise ImageBuildError(f"cannot push {ref}: the engine has no such image (`mailtls images build` first)")
    had = _image_id(client, remote) is not None
    started = time.monotonic()
    repository, tag = _split_ref(remote)
    failure = ""
    _retag(client, ref, remote)
    try:
        for chunk in client.api.push(repository, tag=tag, stream=True, decode=True):
            if "error" in chunk:
                failure = _one_line(chunk.get("errorDetail", {}).get("message") or chunk["error"])
    except errors.APIError as exc:
        failure = _one_line(exc.explanation or exc)
    except Exception as exc:  # the stream broke (timeout, engine died)
        failure = f"{type(exc).__name__}: {_one_line(exc)}"
    finally:
        if not had:
            _untag(client, remote)
    if failure:
        raise ImageBuildError(f"pushing {ref} to {remote} failed: {failure}{_registry_hint(failure, registry)}")
    progress(f"pushed {ref} to {remote} in {time.monotonic() - started:.0f} s")
    return remote


def _registry_hint(failure: str, registry: str) -> str:
    text = failure.lower()
    if "https client" in text or "server gave http response" in text:
        return f" (the registry speaks plain HTTP: add {registry.split('/')[0]} to the engine's insecure-registries)"
    if "unauthorized" in text or "denied" in text or "authentication required" in text:
        return f" (log in first: `docker login {registry.split('/')[0]}`)"
    if "connection refused" in text or "no such host" in text or "i/o timeout" in text:
        return f" (is a registry answering at {registry.split('/')[0]}?)"
    return ""


# --------------------------------------------------------------------------- the local Debian base


def _deb822_paragraphs(text: str) -> Iterator[dict[str, str]]:
    fields: dict[str, str] = {}
    key = ""
    for raw in [*text.splitlines(), ""]:
        if raw.startswith("#"):
            continue
        if not raw.strip():
            if fields:
                yield fields
            fields, key = {}, ""
        elif raw[0] in " \t" and key:
            fields[key] += " " + raw.strip()
        elif ":" in raw:
            key, _, value = raw.partition(":")
            key = key.strip().lower()
            fields[key] = value.strip()


def _apt_entries(apt_dir: Path) -> Iterator[tuple[str, list[str], list[str]]]:
    """(uri, suites, components) of every enabled binary source in ``apt_dir``."""
    one_line = [apt_dir / "sources.list", *sorted((apt_dir / "sources.list.d").glob("*.list"))]
    for path in one_line:
        with contextlib.suppress(OSError):
            for line in path.read_text(errors="replace").splitlines():
                words = re.sub(r"\[[^\]]*\]", " ", line.split("#", 1)[0]).split()
                if len(words) >= 3 and words[0] == "deb":
                    yield words[1], [words[2]], words[3:]
    for path in sorted((apt_dir / "sources.list.d").glob("*.sources")):
        with contextlib.suppress(OSError):
            for para in _deb822_paragraphs(path.read_text(errors="replace")):
                if para.get("enabled", "yes").lower() == "no" or "deb" not in para.get("types", "").split():
                    continue
                for uri in para.get("uris", "").split():
                    yield uri, para.get("suites", "").split(), para.get("components", "").split()


def find_debian_mirror(apt_dir: Path = Path("/etc/apt"), *, suite: str = "bookworm") -> str | None:
    """The Debian archive this machine's apt uses (``URIs:`` of the main suite), or ``None``.

    A source serving ``suite`` itself wins over one serving another Debian release; security, updates
    and backports suites, non-Debian suites and non-HTTP URIs are skipped.
    """
    best: tuple[int, str] | None = None
    for uri, suites, components in _apt_entries(apt_dir):
        if not uri.startswith(("http://", "https://")) or "main" not in components:
            continue
        for name in suites:
            name = name.rstrip("/")
            if name not in _DEBIAN_SUITES:
                continue
            rank = 0 if name == suite else 1
            if best is None or rank < best[0]:
                best = (rank, uri.rstrip("/"))
    return best[1] if best else None


def debian_mirror(*, suite: str = "bookworm", apt_dir: Path = Path("/etc/apt")) -> str:
    """The mirror for debootstrap: ``$MAILTLS_DEBIAN_MIRROR``, else the machine's apt sources."""
    override = os.environ.get(MIRROR_ENV, "").strip()
    if override:
        return override.rstrip("/")
    found = find_debian_mirror(apt_dir, suite=suite)
    if found is None:
        raise ImageBuildError(
            f"cannot tell which Debian mirror to debootstrap {suite} from: no Debian `deb` source with component "
            f"`main` in {apt_dir}/sources.list or {apt_dir}/sources.list.d/; set {MIRROR_ENV}=<archive URL>"
        )
    return found


def _suite_for(tag: str) -> str:
    name = tag.rsplit(":", 1)[-1].split("-", 1)[0] if ":" in tag else ""
    return name if name in _DEBIAN_SUITES else "bookworm"


def _debootstrap_binary(tag: str = "", why: str = "") -> str:
    found = shutil.which("debootstrap") or shutil.which("debootstrap", path="/usr/sbin:/sbin")
    if found is None:
        tag = tag or BASE_IMAGE
        raise ImageBuildError(
            f"the base image {tag} is not in the engine{', ' + why if why else ''}, and debootstrap, which makes it, "
            "is not installed: `apt-get install debootstrap` (as root), give the engine a registry that answers "
            f'("registry-mirrors" in its daemon.json, or `--registry`), or set {BASE_ENV} to an image your '
            "registry serves (docs/images.md)"
        )
    return found


# The official slim images keep docs, man pages and locales out of every later `apt-get install` too.
_DPKG_EXCLUDES = """\
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
path-exclude /usr/share/lintian/*
"""


def _slim(rootfs: Path) -> None:
    (rootfs / "etc/dpkg/dpkg.cfg.d").mkdir(parents=True, exist_ok=True)
    (rootfs / "etc/dpkg/dpkg.cfg.d/mailtls-slim").write_text(_DPKG_EXCLUDES)
    for rel in ("usr/share/man", "usr/share/info", "usr/share/lintian"):
        shutil.rmtree(rootfs / rel, ignore_errors=True)
    for section in range(1, 9):  # some postinst scripts (openjdk's update-alternatives) link into these
        (rootfs / f"usr/share/man/man{section}").mkdir(parents=True, exist_ok=True)
    for path in sorted((rootfs / "usr/share/doc").rglob("*"), reverse=True):  # children before their folders
        if path.is_symlink() or path.is_file():
            if path.name != "copyright":
                path.unlink()
        elif path.is_dir() and not any(path.iterdir()):
            path.rmdir()
    for pattern in ("var/cache/apt/archives/*.deb", "var/cache/apt/*.bin", "var/lib/apt/lists/*_*"):
        for path in rootfs.glob(pattern):
            path.unlink()


def _unmount_below(path: Path) -> None:
    # A debootstrap killed midway can leave proc/sys mounted inside; deleting through them would be a disaster.
    with contextlib.suppress(OSError):
        mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
        prefix = str(path.resolve()) + "/"
        for mount in sorted((m for m in mounts if m.startswith(prefix)), key=len, reverse=True):
            subprocess.run(["umount", "-l", mount], check=False, capture_output=True)


def ensure_base_image(
    progress: Progress = _noop, *, tag: str | None = None, mirror: str | None = None, suite: str | None = None
) -> str:
    """Return the id of the base image ``tag`` (default: the base of :func:`image_settings`), obtaining it first.

    In this order, with one progress line per step that fails: the settings' registry (an image shared with
    ``mailtls images push``), then the engine's own pull (Docker Hub, or the registry mirrors of its
    daemon.json), then, unless building is off, creation (root only, about a minute): ``debootstrap
    --variant=minbase <suite> <tmp> <mirror>``, docs and apt caches trimmed, imported as ``tag``. The suite
    comes from the tag (``debian:bookworm-slim`` -> bookworm); the mirror from :func:`debian_mirror`. Raises
    :class:`ImageBuildError` saying what to install or configure.
    """
    settings = image_settings()
    tag = tag or settings.base
    client = docker_client()
    existing = _image_id(client, tag)
    if existing is not None:
        return existing
    with _locked(f"base-{tag}-{_engine_key()}", progress, f"obtaining the base image {tag}"):
        existing = _image_id(client, tag)
        if existing is not None:
            return existing
        tried = []
        if settings.registry and "@" not in tag:
            try:
                return _pull_shared(client, tag, settings.registry, progress)
            except _PullFailed as exc:
                tried.append(f"not pulled from {settings.registry} ({exc})")
                progress(f"base image {tag}: {tried[-1]}; asking the engine to pull it")
        started = time.monotonic()
        try:
            image_id = _pull(client, tag)
        except _PullFailed as exc:
            tried.append(f"the engine could not pull it ({exc})")
        else:
            progress(f"pulled base image {tag} in {time.monotonic() - started:.0f} s")
            return image_id
        why = ", ".join(tried)
        if not settings.build:
            raise ImageBuildError(
                f"the base image {tag} is not in the engine, {why}; `mailtls images build` makes it with debootstrap"
            )
        progress(f"base image {tag}: {tried[-1]}; making it with debootstrap")
        return _create_base(client, tag, mirror, suite or _suite_for(tag), progress, why)


def _create_base(
    client: docker.DockerClient, tag: str, mirror: str | None, suite: str, progress: Progress, why: str = ""
) -> str:
    debootstrap = _debootstrap_binary(tag, why)
    if os.geteuid() != 0:
        raise ImageBuildError(
            f"the base image {tag} is not in the engine{', ' + why if why else ''}, and debootstrap must run as "
            f"root to make it: run `sudo containers/base/make-base.sh {tag}` (or the same command as root) once"
        )
    mirror = mirror or debian_mirror(suite=suite)
    started = time.monotonic()
    progress(f"creating the Debian base image {tag}: debootstrap {suite} from {mirror} (once, about a minute)")
    workdir = Path(tempfile.mkdtemp(prefix="mailtls-base-"))
    rootfs = workdir / "rootfs"
    tail: collections.deque[str] = collections.deque(maxlen=40)
    try:
        cmd = [debootstrap, "--variant=minbase", suite, str(rootfs), mirror]
        with subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace"
        ) as proc:
            assert proc.stdout is not None
            seen: set[str] = set()
            for line in proc.stdout:
                line = line.rstrip()
                tail.append(line)
                # debootstrap prints a line per package and verb; report only the first line of each verb.
                word = line[3:].split(" ", 1)[0] if line.startswith("I: ") else ""
                if word and word not in seen:
                    seen.add(word)
                    progress(f"debootstrap: {line[3:][:120]}")
        if proc.returncode != 0:
            log = rootfs / "debootstrap" / "debootstrap.log"
            with contextlib.suppress(OSError):
                tail.extend(log.read_text(errors="replace").splitlines()[-20:])
            raise ImageBuildError(
                f"`{' '.join(cmd)}` failed with exit code {proc.returncode} after {time.monotonic() - started:.0f} s "
                f"(wrong mirror? set {MIRROR_ENV}; on a non-Debian host `apt-get install debian-archive-keyring`)\n"
                + "\n".join(tail)
            )
        _slim(rootfs)
        progress(f"debootstrap done in {time.monotonic() - started:.0f} s; importing {tag}")
        image_id = _import_rootfs(client, rootfs, tag)
    finally:
        _unmount_below(workdir)
        shutil.rmtree(workdir, ignore_errors=True)
    progress(f"created base image {tag} in {time.monotonic() - started:.0f} s")
    return image_id


def _import_rootfs(client: docker.DockerClient, rootfs: Path, tag: str) -> str:
    repository, _, version = tag.rpartition(":") if ":" in tag.split("/")[-1] else (tag, "", "latest")
    with subprocess.Popen(
        ["tar", "--numeric-owner", "--xattrs", "-C", str(rootfs), "-c", "."],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    ) as tar:
        assert tar.stdout is not None
        pipe = tar.stdout

        def chunks() -> Iterator[bytes]:
            while block := pipe.read(1 << 20):
                yield block

        try:
            client.api.import_image(
                src=chunks(), repository=repository, tag=version, changes=['CMD ["bash"]'], stream_src=True
            )
        except _docker_errors().APIError as exc:
            tar.kill()
            raise ImageBuildError(f"importing {rootfs} as {tag} failed: {exc}") from exc
        stderr = tar.stderr.read().decode(errors="replace") if tar.stderr else ""
    if tar.returncode != 0:
        raise ImageBuildError(f"tar of {rootfs} failed ({tar.returncode}): {stderr.strip()}")
    image_id = _image_id(client, tag)
    if image_id is None:
        raise ImageBuildError(f"the engine accepted the import of {rootfs} but has no image {tag}")
    return image_id


# --------------------------------------------------------------------------- containers


class PortClashError(ServerStartError, PortInUseError):
    """A fixed host port requested for a container is taken."""


class StartCancelled(MailTLSError):
    """A start was cancelled (Ctrl-C, SIGTERM, or a sibling start failed); what it had made is removed."""


# --------------------------------------------------------------------------- processes and owners


def _proc_stat(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (state first), or ``None`` if there is no such pid."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rsplit(")", 1)[-1].split()


def _process_start(pid: int) -> str:
    """The kernel's start time of ``pid`` (clock ticks since boot), so a reused pid is told apart; '' if unknown."""
    fields = _proc_stat(pid)
    return fields[19] if fields and len(fields) > 19 else ""


def process_alive(pid: int, start: str = "") -> bool:
    """Whether ``pid`` is a live process, and the one that started at ``start`` when that is given.

    A zombie (dead, its parent has not waited for it yet: an xdist worker killed under a live controller)
    counts as dead, and so does a pid now used by a process that started at another time.
    """
    if pid <= 0:
        return False
    fields = _proc_stat(pid)
    if fields is None:
        if Path("/proc/self/stat").exists():
            return False  # /proc works here and has no such pid
        try:  # no /proc: the kernel's word is all there is
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass
        return True
    if fields[0] in ("Z", "X"):
        return False
    return not start or len(fields) <= 19 or fields[19] == start


def _user_name() -> str:
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return str(os.getuid())


def _owner(pid: int | None = None) -> dict[str, str]:
    """Who owns a container, network or dir: process (and its start time), session, user, host."""
    pid = os.getpid() if pid is None else pid
    return {
        "session": SESSION_ID,
        "pid": str(pid),
        "pidstart": _process_start(pid),
        "uid": str(os.getuid()),
        "user": _user_name(),
        "host": socket.gethostname(),
    }


def _orphan_owner(owner: Mapping[str, str], *, all_users: bool = False) -> int | None:
    """The dead pid that owned something, or ``None`` when it is not an orphan of ours to remove: this
    session's, another host's, another user's (unless ``all_users``), unreadable, or its owner is alive."""
    if owner.get("session") == SESSION_ID or owner.get("host") != socket.gethostname():
        return None
    if not all_users and owner.get("uid") != str(os.getuid()):
        return None  # a shared machine: another user's run (or one too old to say) is not ours to judge
    try:
        pid = int(owner.get("pid", ""))
    except ValueError:
        return None
    if pid <= 0 or process_alive(pid, owner.get("pidstart", "")):
        return None
    return pid


def container_labels(extra: Mapping[str, str] | None = None, *, pid: int | None = None) -> dict[str, str]:
    """The labels of a container started by this process, plus ``extra``.

    ``pytest-mailtls=1``, ``.session`` (this process's uuid), ``.pid``, ``.pidstart`` (its start time),
    ``.uid``/``.user`` and ``.host`` (this host name) let :func:`reap_orphans` find what a dead process left.
    """
    labels = {LABEL: "1", **{f"{LABEL}.{key}": value for key, value in _owner(pid).items()}}
    for key, value in (extra or {}).items():
        if key in labels:
            raise ValueError(f"label {key!r} is reserved for pytest-mailtls")
        labels[key] = str(value)
    return labels


# --------------------------------------------------------------------------- containers


class Container:
    """A running container started by :func:`start_container`; removed by :meth:`stop` (or a context exit)."""

    def __init__(
        self,
        client: docker.DockerClient,
        container_id: str,
        name: str,
        image: str,
        *,
        cancel: threading.Event | None = None,
        network: bool = False,
    ) -> None:
        self._client = client
        self.id = container_id
        self.name = name
        self.image = image
        self.ports: dict[int, int] = {}  # container port -> the port on ``address`` that reaches it
        self.address = "127.0.0.1"  # published ports (a sealed container has no address: see ``sockets``)
        self.sockets: Path | None = None  # sealed: the host folder holding one unix socket per container port
        self.owner_pid = os.getpid()
        self.cancel = cancel  # the start it belongs to (see cancel_starts)
        self._network = network  # holds a reference on this process's network
        #: Copy mode (:func:`copies_files`): resolved host folder -> its ``{"bind": path, "mode": ...}``.
        self.copies: dict[str, dict[str, str]] = {}
        #: Copy mode: the named volumes holding its read-write folders (removed with their last container).
        self.volumes: list[str] = []
        self._stopped = False
        self._final_logs: str | None = None
        self._stop_lock = threading.RLock()  # re-entered by the SIGTERM handler

    def __repr__(self) -> str:
        return f"<Container {self.name} {self.id[:12]} {self.image} ports={self.ports}>"

    def host_port(self, container_port: int) -> int:
        """The port on :attr:`address` that reaches ``container_port`` from this host."""
        try:
            return self.ports[container_port]
        except KeyError:
            raise KeyError(
                f"container {self.name} publishes no port {container_port} (it has {sorted(self.ports)})"
            ) from None

    def upstream(self, container_port: int) -> tuple[str, int]:
        """Where this host dials ``container_port``, as :func:`pytest_mailtls.upstream.dial` takes it: the unix
        socket's path and the container port (sealed), or 127.0.0.1 and the published port."""
        port = self.host_port(container_port)
        if self.sockets is not None:
            return str(self.sockets / str(container_port)), port
        return self.address, port

    def logs(self, since: float | None = None) -> str:
        """Everything the container wrote to stdout and stderr so far (after :meth:`stop`: its last log);
        with ``since`` (a Unix time) only what it wrote after that."""
        if self._final_logs is not None:
            return self._final_logs
        try:
            data = self._client.api.logs(self.id, stdout=True, stderr=True, since=since)
        except _docker_errors().NotFound:
            return ""
        return data.decode("utf-8", errors="replace") if isinstance(data, bytes) else str(data)

    def exec(
        self, cmd: str | Sequence[str], *, user: str = "", environment: Mapping[str, str] | None = None
    ) -> tuple[int, str]:
        """Run ``cmd`` inside the container; return its exit code and combined output."""
        api = self._client.api
        exec_id = api.exec_create(
            self.id, list(cmd) if not isinstance(cmd, str) else cmd, user=user, environment=dict(environment or {})
        )["Id"]
        output = api.exec_start(exec_id)
        code = api.exec_inspect(exec_id)["ExitCode"]
        text = output.decode("utf-8", errors="replace") if isinstance(output, bytes) else str(output)
        return int(code if code is not None else -1), text

    def _copy_of(self, host_path: str | os.PathLike[str]) -> str | None:
        """The container path of ``host_path`` when it lies in a folder copied into this container."""
        path = Path(host_path).resolve()
        for folder, spec in self.copies.items():
            if path == Path(folder) or Path(folder) in path.parents:
                return str(Path(spec["bind"]) / path.relative_to(folder))
        return None

    def pull(self, host_path: str | os.PathLike[str]) -> Path:
        """``host_path`` brought up to date with what the server wrote there: a no-op under a bind mount (the
        host folder is the server's), a copy back through the engine in copy mode (:func:`copies_files`)."""
        inside = self._copy_of(host_path)
        if inside is not None and not self._stopped:
            from . import transfer

            transfer.pull(self._client.api, self.id, inside, host_path)
        return Path(host_path)

    def push(self, host_path: str | os.PathLike[str]) -> None:
        """Give the server what was written to ``host_path`` on this host (a no-op under a bind mount)."""
        inside = self._copy_of(host_path)
        if inside is not None and not self._stopped:
            from . import transfer

            transfer.push(self._client.api, self.id, host_path, inside)

    def mirror_of(self, host_path: str | os.PathLike[str]) -> dict[str, str] | None:
        """Where the live copy of ``host_path`` is, for a reader in another process (``Endpoint.extra``):
        ``{"container": id, "path": container path}`` in copy mode, ``None`` under a bind mount."""
        inside = self._copy_of(host_path)
        return None if inside is None else {"container": self.id, "path": inside}

    def is_running(self) -> bool:
        """Whether the engine reports the container as running."""
        try:
            return bool(self._client.api.inspect_container(self.id)["State"]["Running"])
        except _docker_errors().NotFound:
            return False

    def stop(self) -> None:
        """Kill and remove the container (keeping its last log for :meth:`logs`). Safe to call twice."""
        with self._stop_lock:
            if self._stopped:
                return
            with contextlib.suppress(Exception):
                self._final_logs = self.logs()
            _remove_container(self._client, self.id)
            _remove_volumes(self._client, self.volumes)
            self._forget()

    def _forget(self) -> None:
        """After removal: unregister, and give back the network reference (the last one removes it)."""
        if self._stopped:
            return
        self._stopped = True
        _unregister(self)
        if self._network:
            self._network = False
            _release_network()

    def __enter__(self) -> Container:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def pull_from_container(container_id: str, container_path: str, host_path: str | os.PathLike[str]) -> Path:
    """Copy mode: make ``host_path`` a copy of ``container_path`` in the container (see
    :meth:`Container.mirror_of`); the host copy stays as it is once the container is gone."""
    from . import transfer

    return transfer.pull(docker_client().api, container_id, container_path, host_path)


def clear_in_container(container_id: str, maildir: str) -> None:
    """Copy mode: delete the messages of the Maildir ``maildir`` inside the container (gone: nothing to do)."""
    errors = _docker_errors()
    api = docker_client().api
    script = (
        'for d in "$1/new" "$1/cur"; do [ -d "$d" ] && find "$d" -mindepth 1 -maxdepth 1 -type f -delete; done; true'
    )
    try:
        exec_id = api.exec_create(container_id, ["sh", "-c", script, "sh", maildir])["Id"]
        api.exec_start(exec_id)
    except (errors.NotFound, errors.APIError):
        pass


def _remove_container(client: docker.DockerClient, container_id: str) -> None:
    errors = _docker_errors()
    try:
        client.api.remove_container(container_id, force=True, v=True)
    except errors.NotFound:
        pass
    except errors.APIError as exc:
        # 409: another thread or the reaper is already removing it.
        if exc.status_code != 409:
            raise


_registry_lock = threading.RLock()
_registry: dict[str, Container] = {}
_atexit_installed = False
_sigterm_installed = False
_previous_sigterm: Any = None
#: Set by SIGTERM: every start in progress removes what it makes and gives up.
_closing = threading.Event()
#: Threads inside create_container right now (a container may exist that the registry does not know yet).
_creating: set[int] = set()
_creating_done = threading.Condition(_registry_lock)


def _register(container: Container) -> None:
    with _registry_lock:
        _registry[container.id] = container
    _install_exit_hooks()


def _install_exit_hooks() -> None:
    """atexit once; the SIGTERM handler as soon as we run in the main thread (signal handlers can only be
    set there; the first container may well be started from a worker thread)."""
    global _atexit_installed, _sigterm_installed, _previous_sigterm
    with _registry_lock:
        if not _atexit_installed:
            _atexit_installed = True
            atexit.register(_at_exit)
        if _sigterm_installed or threading.current_thread() is not threading.main_thread():
            return
        try:
            _previous_sigterm = signal.signal(signal.SIGTERM, _on_sigterm)
        except (ValueError, OSError):
            return
        _sigterm_installed = True


def _at_exit() -> None:
    stop_all(parallel=False)  # no new threads once the interpreter is shutting down
    _finish_dirs()


def _unregister(container: Container) -> None:
    with _registry_lock:
        _registry.pop(container.id, None)


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    previous = _previous_sigterm
    if callable(previous):
        # The application's own handler (the CLI turns SIGTERM into KeyboardInterrupt) leads to an orderly
        # teardown through the grid: an interrupted start hands its containers to the janitor, a serving
        # grid removes them before the process ends, atexit catches the rest.
        previous(signum, frame)
        return
    _emergency_cleanup(wait=JANITOR_WAIT)  # the process dies right after this
    if previous != signal.SIG_IGN:
        # Die of SIGTERM as we would have without this handler (exit status 143 seen by the parent).
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)


def _emergency_cleanup(grace: float = 0.5, wait: float = 1.2) -> None:
    """Remove everything this process made, from a signal handler: stop new starts, let the containers being
    created right now appear (``grace`` at most), hand every container and the network to the janitor
    (:func:`remove_in_background`, which the interrupted code's locks cannot block), then the temp dirs."""
    _closing.set()
    me = threading.get_ident()
    deadline = time.monotonic() + grace
    with _creating_done:
        while _creating - {me} and time.monotonic() < deadline:
            _creating_done.wait(max(0.0, deadline - time.monotonic()))
    remove_in_background(running_containers(), network=True, wait=wait)
    _finish_dirs(interrupted=True)


#: How long a process that hands removal to the janitor goes on removing itself before it exits anyway.
JANITOR_WAIT = 1.5


def remove_in_background(containers: Sequence[Container], *, network: bool = False, wait: float = JANITOR_WAIT) -> None:
    """Remove ``containers`` (and, with ``network``, this process's network) from a detached janitor process,
    waiting ``wait`` seconds at most for it; used when a run is interrupted and must exit at once.

    The engine removes a published port in about 50 ms, one after another (docs/speed.md): the full grid's
    186 ports take about 9 s, which no one pressing Ctrl-C should wait for. The janitor runs in its own
    session with SIGINT, SIGTERM and SIGHUP ignored, so the terminal's next Ctrl-C does not stop it; should
    it die anyway, the containers' labels name this (by then dead) process and the reaper removes them.
    Without a janitor (it cannot be started) the removal happens here.
    """
    containers = [c for c in containers if not c._stopped]
    net = None
    if network:
        with _network_lock:
            if _network["pid"] == os.getpid() and _network["name"]:
                others = [c for c in running_containers() if c not in containers]
                if not others:
                    net = str(_network["name"])
                    _network.update(name=None, users=0)
    if not containers and net is None:
        return
    volumes = sorted({v for c in containers for v in c.volumes})
    janitor = _spawn_janitor([c.id for c in containers], net, volumes)
    if janitor is None:
        _remove_unlocked(containers)
        with contextlib.suppress(Exception):
            _remove_volumes(docker_client(), volumes)
        if net is not None:
            with contextlib.suppress(Exception):
                docker_client().api.remove_network(net)
        return
    for container in containers:
        container._stopped = True  # the janitor owns it now: nothing here waits for its removal
        _unregister(container)
        held, container._network = container._network, False
        if held and net is None:
            _release_network()  # the network stays for other containers; removal is retried at exit
    if wait <= 0:
        return
    # Meanwhile remove them from here too (whoever is first wins; the other meets 404 or 409): the janitor
    # needs a moment to start, and a small removal is then over before this process ends.
    deadline = time.monotonic() + wait
    client = docker_client()
    threads = [
        threading.Thread(target=_remove_quietly, args=(client, c.id), name="mailtls-remove", daemon=True)
        for c in containers
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    if net is not None and not any(t.is_alive() for t in threads):
        with contextlib.suppress(Exception):
            client.api.remove_network(net)


_JANITOR_MAIN = "import sys; from pytest_mailtls.runtime import _janitor; _janitor(sys.argv[1])"


def _spawn_janitor(
    container_ids: Sequence[str], network: str | None, volumes: Sequence[str] = ()
) -> subprocess.Popen[bytes] | None:
    payload = json.dumps({"containers": list(container_ids), "network": network, "volumes": list(volumes)})
    package_root = str(Path(__file__).resolve().parents[1])
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([package_root, *filter(None, [env.get("PYTHONPATH")])])
    try:
        return subprocess.Popen(
            [sys.executable, "-c", _JANITOR_MAIN, payload],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            env=env,
        )
    except OSError:
        return None


def _janitor(payload: str) -> None:
    """The detached janitor's body: remove the containers (in parallel), then the network once they are gone."""
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)
    job = json.loads(payload)
    client = docker_client()
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # docker_client() installed the runtime's own handler
    threads = [
        threading.Thread(target=lambda cid=cid: _remove_quietly(client, cid), daemon=True) for cid in job["containers"]
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)
    with contextlib.suppress(Exception):
        _remove_volumes(client, job.get("volumes") or [])
    if job.get("network"):
        deadline = time.monotonic() + 60
        while True:
            try:
                client.api.remove_network(job["network"])
                break
            except _docker_errors().NotFound:
                break
            except Exception:
                if time.monotonic() > deadline:
                    break  # a container of the network is still there: the reaper takes the network later
                time.sleep(0.2)


def _remove_quietly(client: docker.DockerClient, container_id: str) -> None:
    with contextlib.suppress(Exception):
        _remove_container(client, container_id)


def _remove_unlocked(containers: Sequence[Container]) -> None:
    if not containers:
        return
    threads = []
    for container in containers:

        def remove(c: Container = container) -> None:
            with contextlib.suppress(Exception):
                _remove_container(c._client, c.id)
                _remove_volumes(c._client, c.volumes)
                c._forget()

        thread = threading.Thread(target=remove, name=f"mailtls-remove-{container.name}", daemon=True)
        thread.start()
        threads.append(thread)
    for thread in threads:
        thread.join(30)


def running_containers() -> list[Container]:
    """Containers this process started and has not stopped yet."""
    with _registry_lock:
        return [c for c in _registry.values() if c.owner_pid == os.getpid()]


def cancel_starts(cancel: threading.Event, *, background: bool = False) -> None:
    """Set ``cancel`` and remove every container started with it at once, in parallel, without waiting for
    the threads starting them (they notice and give up). Safe from the main thread while they still run.
    ``background`` hands the removal to the janitor (:func:`remove_in_background`): the caller must exit
    now (Ctrl-C), and removal costs about 50 ms per published port."""
    cancel.set()
    mine = [c for c in running_containers() if c.cancel is cancel]
    if background:
        remove_in_background(mine, network=True, wait=0.0)
    else:
        _remove_unlocked(mine)


def stop_all(*, parallel: bool = True) -> None:
    """Stop and remove every container this process started (best effort; in parallel unless told not to),
    then this process's network."""
    containers = running_containers()  # a forked child never stops its parent's containers
    if len(containers) <= 1 or not parallel:
        for container in containers:
            with contextlib.suppress(Exception):
                container.stop()
    else:
        try:
            with ThreadPoolExecutor(max_workers=min(8, len(containers))) as pool:
                for future in [pool.submit(c.stop) for c in containers]:
                    with contextlib.suppress(Exception):
                        future.result()
        except RuntimeError:  # "cannot schedule new futures after interpreter shutdown"
            stop_all(parallel=False)
            return
    _release_network(force=True)


# --------------------------------------------------------------------------- the run's network


NETWORK_PREFIX = "mailtls-net-"
_network_lock = threading.RLock()  # re-entered by the SIGTERM handler in the main thread
_network: dict[str, Any] = {"pid": 0, "name": None, "users": 0}


def run_network() -> str:
    """The name of this process's bridge network (made on first use, removed with its last container).

    Inter-container traffic is disabled on it (``com.docker.network.bridge.enable_icc=false``): no other
    container, on this network or any other, reaches a server; published 127.0.0.1 ports still work.
    """
    with _network_lock:
        return _ensure_network()


def _ensure_network() -> str:
    if _network["pid"] == os.getpid() and _network["name"]:
        return str(_network["name"])
    name = f"{NETWORK_PREFIX}{SESSION_ID[:12]}-{os.getpid()}"
    from testcontainers.core.network import Network

    engine = _engine()
    network = Network(
        docker_client_kw={"version": engine.client.api.api_version, "timeout": int(API_TIMEOUT)},
        docker_network_kw={
            "driver": "bridge",
            "options": {"com.docker.network.bridge.enable_icc": "false"},
            "labels": container_labels(),
            "check_duplicate": True,
        },
    )
    network.name = name  # ours, not a uuid: the janitor and the reaper remove it by name
    try:
        network.create()
    except _docker_errors().APIError as exc:
        raise ServerStartError(
            f"cannot create the network {name} that isolates this run's servers: {exc.explanation or exc} "
            "(networks of runs that died are removed by `mailtls reap`)"
        ) from exc
    _network.update(pid=os.getpid(), name=name, users=0)
    return name


def _acquire_network() -> str:
    with _network_lock:
        name = _ensure_network()
        _network["users"] = int(_network["users"]) + 1
        return name


def _release_network(*, force: bool = False) -> None:
    """Drop a reference (``force``: all of them); remove the network when none is left."""
    with _network_lock:
        if _network["pid"] != os.getpid() or not _network["name"]:
            return
        _network["users"] = 0 if force else max(0, int(_network["users"]) - 1)
        if _network["users"]:
            return
        name = str(_network["name"])
        engine = _clients.get(os.getpid())
        if engine is None:
            return
        try:
            engine.client.api.remove_network(name)
        except _docker_errors().NotFound:
            pass
        except Exception:
            return  # still in use (a container the janitor is removing): kept for reuse and retried at exit
        _network.update(name=None, users=0)


# --------------------------------------------------------------------------- temp dirs

#: The marker file in a registered dir: who owns it (JSON: session, pid, pidstart, uid, user, host, path).
DIR_MARKER = ".mailtls-owner.json"
_dirs_lock = threading.RLock()  # re-entered by the SIGTERM handler in the main thread
_dirs: dict[str, list[Any]] = {}  # resolved path -> [remove at exit, references]


def _index_dir(*, create: bool) -> Path | None:
    """This user's index of registered dirs (0700), or ``None`` when it is missing or not safely ours."""
    path = Path(tempfile.gettempdir()) / f"pytest-mailtls-dirs-{os.getuid()}"
    if create:
        with contextlib.suppress(FileExistsError):
            path.mkdir(mode=0o700)
    try:
        info = os.lstat(path)
    except OSError:
        return None
    # Someone else's folder (or a symlink) at that name in a shared /tmp must not steer what we delete.
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
        return None
    return path


def _index_entry(index: Path, path: Path) -> Path:
    return index / (hashlib.sha256(str(path).encode()).hexdigest()[:24] + ".json")


def register_dir(path: str | os.PathLike[str], *, remove_at_exit: bool = False) -> Path:
    """Register ``path`` (a temp dir holding keys, configs, mail) as this process's, like its containers.

    Writes :data:`DIR_MARKER` into it and an entry into this user's index in the system temp dir, so that
    :func:`reap_orphans` (the next run, or ``mailtls reap``) removes it once this process is dead. A normal
    exit releases it (:func:`release_dir`); ``remove_at_exit`` deletes it then, and on SIGTERM. Registering
    twice counts references. Returns the resolved path.
    """
    resolved = Path(path).resolve()
    record = json.dumps({**_owner(), "path": str(resolved), "created": time.time()})
    with _dirs_lock:
        entry = _dirs.setdefault(str(resolved), [remove_at_exit, 0])
        entry[0] = entry[0] or remove_at_exit
        entry[1] += 1
        if entry[1] == 1:
            marker = resolved / DIR_MARKER
            marker.write_text(record)
            marker.chmod(0o600)
            index = _index_dir(create=True)
            if index is not None:
                item = _index_entry(index, resolved)
                item.write_text(record)
                item.chmod(0o600)
    _install_exit_hooks()
    return resolved


def release_dir(path: str | os.PathLike[str], *, remove: bool = False, keep_index: bool = False) -> None:
    """Drop a reference taken by :func:`register_dir`; at the last one forget the dir (marker and index
    entry), deleting it too when ``remove`` (or ``remove_at_exit``) says so.

    ``keep_index`` keeps the index entry of a deleted dir: a start thread of an interrupted run may still
    write into it (and so make it again, without a marker); the entry lets the reaper remove it once this
    process is dead, and is dropped by the reaper when the dir is gone."""
    resolved = Path(path).resolve()
    with _dirs_lock:
        entry = _dirs.get(str(resolved))
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] > 0:
            return
        del _dirs[str(resolved)]
    remove = remove or bool(entry[0])
    _forget_dir(resolved, remove=remove, keep_index=keep_index and remove)


def _forget_dir(path: Path, *, remove: bool, keep_index: bool = False) -> None:
    if remove:
        shutil.rmtree(path, ignore_errors=True)
    else:
        (path / DIR_MARKER).unlink(missing_ok=True)
    index = _index_dir(create=False)
    if index is not None and not keep_index:
        _index_entry(index, path).unlink(missing_ok=True)


def _finish_dirs(*, interrupted: bool = False) -> None:
    """At exit or on SIGTERM: delete the dirs registered ``remove_at_exit``, release the others
    (``interrupted``: start threads may still write, so the index keeps the deleted ones)."""
    with _dirs_lock:
        items = list(_dirs.items())
        _dirs.clear()
    for path, (remove, _count) in items:
        with contextlib.suppress(Exception):
            _forget_dir(Path(path), remove=bool(remove), keep_index=interrupted and bool(remove))


def _own_dir(path: Path) -> bool:
    """Whether ``path`` is a real dir (not a symlink) owned by this user."""
    try:
        info = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISDIR(info.st_mode) and info.st_uid == os.getuid()


def _read_marker(path: Path) -> dict[str, str] | None:
    """The owner recorded in ``path``, if ``path`` is a real dir of this user holding a readable marker."""
    if not _own_dir(path):
        return None
    try:
        data = json.loads((path / DIR_MARKER).read_text())
    except (OSError, ValueError):
        return None
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else None


def _reap_dirs(progress: Progress) -> list[str]:
    """Remove registered dirs of dead processes of this user on this host; return their paths."""
    candidates: dict[Path, Path | None] = {}  # dir -> its index entry
    recorded: dict[Path, dict[str, str]] = {}  # dir -> the owner its index entry names
    index = _index_dir(create=False)
    if index is not None:
        for item in sorted(index.glob("*.json")):
            try:
                record = json.loads(item.read_text())
                where = Path(str(record["path"]))
            except (OSError, ValueError, KeyError, TypeError):
                item.unlink(missing_ok=True)
                continue
            candidates[where] = item
            recorded[where] = {str(k): str(v) for k, v in record.items()}
    # `mailtls up` makes its dir in the system temp dir: found even when the index was lost.
    for found in Path(tempfile.gettempdir()).glob("mailtls-*"):
        candidates.setdefault(found.resolve(), None)
    removed: list[str] = []
    for where, entry in candidates.items():
        owner = _read_marker(where)
        if owner is None and where in recorded and _own_dir(where):
            # No marker: re-made by a start thread after its run removed it. The index (private to this
            # user) still names the owner.
            owner = recorded[where]
        if owner is None:
            if entry is not None and not where.exists():
                entry.unlink(missing_ok=True)  # the dir went some other way
            continue
        if owner.get("path") not in (None, str(where)):
            continue  # a marker copied from elsewhere: not this dir's owner
        pid = _orphan_owner(owner)
        if pid is None:
            continue
        shutil.rmtree(where, ignore_errors=True)
        if entry is not None:
            entry.unlink(missing_ok=True)
        if not where.exists():
            removed.append(str(where))
            progress(f"removed temp dir {where} (its pytest-mailtls process {pid} is gone)")
    return removed


# --------------------------------------------------------------------------- signals during teardown


_deferring = False


@contextlib.contextmanager
def signals_deferred(say: Callable[[str], None] = _noop) -> Iterator[None]:
    """Hold SIGINT and SIGTERM until the block ends (a teardown), then act on them.

    A second Ctrl-C while servers are being removed would otherwise abort the removal half-way. A signal
    that arrives meanwhile is answered with a line through ``say``; after the block, a SIGINT raises
    ``KeyboardInterrupt`` and a SIGTERM is delivered again to the handler that was in place. Outside the
    main thread (where handlers cannot be set) this does nothing.
    """
    global _deferring
    if threading.current_thread() is not threading.main_thread() or _deferring:
        yield  # another thread, or nested in a teardown that already holds the signals
        return
    received: list[int] = []

    def hold(signum: int, frame: FrameType | None) -> None:
        received.append(signum)
        say(f"{signal.Signals(signum).name} received: still removing servers and temp dirs, exiting right after")

    try:
        previous = {signum: signal.signal(signum, hold) for signum in (signal.SIGINT, signal.SIGTERM)}
    except (ValueError, OSError):
        yield
        return
    _deferring = True
    try:
        yield
    finally:
        _deferring = False
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if signal.SIGTERM in received:
            os.kill(os.getpid(), signal.SIGTERM)
        elif signal.SIGINT in received:
            raise KeyboardInterrupt


# --------------------------------------------------------------------------- starting


def _published(attrs: Mapping[str, Any], ports: Sequence[int], address: str = "127.0.0.1") -> dict[int, int]:
    bindings = (attrs.get("NetworkSettings") or {}).get("Ports") or {}
    mapped: dict[int, int] = {}
    for port in ports:
        for binding in bindings.get(f"{port}/tcp") or []:
            if binding.get("HostIp") in (address, "") and binding.get("HostPort"):
                mapped[port] = int(binding["HostPort"])
                break
    return mapped


def _bind_mounts(volumes: Mapping[str, Mapping[str, str]]) -> list[Any]:
    """Docker's ``{host_path: {"bind": path, "mode": ...}}`` as bind mounts that the engine does NOT create
    when the host path is missing (``-v`` would, as root): a start racing the removal of an interrupted
    run's work dir must fail, not make the dir again."""
    from docker.types import Mount

    return [
        Mount(target=spec["bind"], source=src, type="bind", read_only=spec.get("mode", "rw") == "ro")
        for src, spec in volumes.items()
    ]


def _volume_of(host_path: str) -> str:
    from . import transfer

    return transfer.volume_name(SESSION_ID, host_path)


def _volume_mounts(volumes: Mapping[str, Mapping[str, str]]) -> list[Any]:
    """Copy mode (:func:`copies_files`): each read-write host folder as a named volume of its own (labelled for
    the reaper; two containers given one folder share it), filled by :func:`transfer.copy_in` before the
    start; read-only folders are copied into the container's own file system and need no mount."""
    from docker.types import Mount

    client = docker_client()
    mounts = []
    for src, spec in volumes.items():
        if spec.get("mode", "rw") == "ro":
            continue
        name = _volume_of(src)
        client.api.create_volume(name, labels=container_labels())  # the same name again returns the same volume
        mounts.append(Mount(target=spec["bind"], source=name, type="volume"))
    return mounts


def _remove_volumes(client: docker.DockerClient, names: Sequence[str]) -> None:
    """Remove named volumes no container uses any more (one still in use, 409, goes with its last user)."""
    errors = _docker_errors()
    for name in names:
        try:
            client.api.remove_volume(name)
        except errors.NotFound:
            pass
        except errors.APIError as exc:
            if exc.status_code != 409:
                raise


def _check_cancel(cancel: threading.Event | None, where: str) -> None:
    if _closing.is_set() or (cancel is not None and cancel.is_set()):
        raise StartCancelled(f"start of {where} cancelled")


def start_container(
    image: str,
    *,
    name: str,
    ports: Sequence[int],
    volumes: Mapping[str, Mapping[str, str]] | None = None,
    environment: Mapping[str, str] | None = None,
    command: Sequence[str] | None = None,
    labels: Mapping[str, str] | None = None,
    extra_hosts: Mapping[str, str] | None = None,
    host_ports: Mapping[int, int] | None = None,
    entrypoint: Sequence[str] | None = None,
    init: bool = False,
    working_dir: str | None = None,
    host_network: bool = False,
    sockets: Path | None = None,
    cancel: threading.Event | None = None,
    cpu_shares: int | None = None,
) -> Container:
    """Start ``image`` serving each of ``ports`` (TCP) to this host only, and return it running.

    With ``sockets`` (a host folder, made 0700 here; put it in a registered temp dir) on an engine where
    :func:`sealed_routing` holds, the container is *sealed*: started with no network at all (``--network
    none``: no address that anything could dial), the folder mounted at :data:`RELAY_DIR`, and a relay
    started before the image's entrypoint (:data:`RELAY_PL`) accepts on one unix socket per port, named by the
    port, and connects each connection to the server at 127.0.0.1:PORT from 127.0.0.2 (an address that no
    server trusts as local). Dial it with :meth:`Container.upstream`. Otherwise the ports are published on
    127.0.0.1.

    The engine picks the host ports unless ``host_ports`` fixes some (container port -> host port); read
    them with :meth:`Container.host_port`. The container is named ``<name>-<8 hex>`` (unique across
    parallel workers), carries :func:`container_labels` plus ``labels``, sits on :func:`run_network`
    (no inter-container traffic) and is registered for :func:`stop_all`. ``volumes`` is docker's
    ``{host_path: {"bind": path, "mode": "rw"|"ro"}}``. On any failure the container is removed and
    :class:`ServerStartError` (:class:`PortClashError` for a taken fixed port) says what and where; once
    ``cancel`` is set (see :func:`cancel_starts`) the start removes what it made and raises
    :class:`StartCancelled`.

    ``host_network=True`` shares the host's network instead: nothing is published (no per-port cost in
    the engine, see benchmarks/bench_runtime.py), ``ports`` are host ports (pick them with
    :func:`free_ports`), and the server itself MUST bind 127.0.0.1 only.
    """
    client = docker_client()
    errors = _docker_errors()
    fixed = dict(host_ports or {})
    unknown = sorted(set(fixed) - set(ports))
    if unknown:
        raise ValueError(f"host_ports names container ports {unknown} that are not in ports")
    if host_network and fixed:
        raise ValueError("host_ports makes no sense with host_network: the ports are host ports already")
    full_name = f"{name}-{secrets.token_hex(4)}"
    where = f"container {full_name} (image {image}, ports {list(ports)}, engine {_engine_location()})"
    _check_cancel(cancel, where)
    api = client.api
    # Sealed, nothing is published either: the engine spends ~12 ms per published port to start and ~50 ms to
    # remove (a userland proxy each), which for a whole grid was most of its start and teardown.
    sealed = sockets is not None and not host_network and not fixed and sealed_routing()
    copy = copies_files()
    if host_network and copy:
        raise ValueError("host_network needs a local engine that bind-mounts (it is not one: see copies_files)")
    publish = publish_address()
    network = None if host_network or sealed else _acquire_network()
    mounts = dict(volumes or {})
    if sealed:
        assert sockets is not None
        try:
            sockets.mkdir(mode=0o700, exist_ok=True)  # never parents: a cancelled run's dir stays gone
        except OSError as exc:
            raise ServerStartError(f"cannot start {where}: cannot make its socket folder {sockets}: {exc}") from exc
        mounts[str(sockets)] = {"bind": RELAY_DIR, "mode": "rw"}
        entrypoint, command = _relayed(api, image, ports, entrypoint, command)
    # Every option is given: testcontainers would otherwise put it on the network this process runs in.
    kwargs = dict(
        labels=container_labels(labels),
        entrypoint=list(entrypoint) if entrypoint is not None else None,
        working_dir=working_dir,
        hostname=full_name if sealed else None,
        mounts=_volume_mounts(mounts) if copy else _bind_mounts(mounts),
        network=network,
        network_mode="host" if host_network else "none" if sealed else None,
        # No network, no /etc/hosts line for the container's own name (Java's getLocalHost needs it): name it.
        extra_hosts={**(extra_hosts or {}), **({full_name: "127.0.0.1"} if sealed else {})},
        init=init or None,
        **({"cpu_shares": cpu_shares} if cpu_shares else {}),
    )
    made: list[Container] = []
    me = threading.get_ident()

    def created(model: Any) -> None:
        container = Container(client, model.id, full_name, image, cancel=cancel, network=network is not None)
        if copy:
            container.copies = {str(Path(h).resolve()): dict(spec) for h, spec in mounts.items()}
            container.volumes = [_volume_of(h) for h, spec in mounts.items() if spec.get("mode", "rw") != "ro"]
        _register(container)
        made.append(container)
        _created(me)

    def before_start() -> None:
        container = made[0]
        _check_cancel(cancel, where)
        if copy:
            from . import transfer

            for host_path, spec in mounts.items():
                try:
                    transfer.copy_in(api, container.id, host_path, spec["bind"])
                except (OSError, errors.APIError) as exc:
                    raise ServerStartError(f"cannot copy {host_path} into {where} at {spec['bind']}: {exc}") from exc

    lifecycle = _lifecycle_class()(image, full_name, created, before_start).with_kwargs(**kwargs)
    lifecycle.with_envs(**dict(environment or {}))
    if command is not None:
        lifecycle.with_command(list(command))
    if not (host_network or sealed):  # on one address only: testcontainers' with_bind_ports binds them all
        lifecycle.ports.update({f"{p}/tcp": (publish, fixed[p]) if p in fixed else (publish,) for p in ports})
    with _registry_lock:
        _creating.add(me)
    try:
        lifecycle.start()
    except BaseException as exc:
        _created(me)
        if not made:  # creating it failed: nothing to remove
            if network is not None:
                _release_network()
            if isinstance(exc, errors.ImageNotFound):
                raise ServerStartError(
                    f"cannot start {where}: image {image} does not exist (build it with ensure_image)"
                ) from exc
            if isinstance(exc, errors.APIError):
                raise ServerStartError(f"cannot create {where}: {exc.explanation or exc}") from exc
            raise
        container = made[0]
        with contextlib.suppress(Exception):
            container.stop()
        if isinstance(exc, (errors.NotFound, RuntimeError)):
            _check_cancel(cancel, where)  # removed under us by a cancel: say that, not the engine's 404
        if isinstance(exc, TimeoutError):  # testcontainers' ContainerStatusWaitStrategy: it is not running
            state = (lifecycle.get_wrapped_container().attrs or {}).get("State") or {}
            raise ServerStartError(
                f"{where} exited right after start with status {state.get('ExitCode')}", container._final_logs or ""
            ) from None
        if isinstance(exc, errors.APIError):
            text = str(exc.explanation or exc)
            if fixed and ("address already in use" in text or "port is already allocated" in text):
                raise PortClashError(f"cannot start {where}: a fixed host port {fixed} is taken: {text}") from exc
            raise ServerStartError(f"cannot start {where}: {text}") from exc
        raise
    if not made:  # testcontainers < 4.15 starts with containers.run: no create, no hooks, nothing registered
        lifecycle.get_wrapped_container().remove(force=True, v=True)
        if network is not None:
            _release_network()
        raise EngineUnavailable("pytest-mailtls needs testcontainers>=4.15: `pip install -U testcontainers`")
    container = made[0]
    try:
        _check_cancel(cancel, where)
        # The wait strategy has just reloaded it: these are the engine's own, current port bindings.
        attrs = lifecycle.get_wrapped_container().attrs
        if sealed:
            container.address, container.sockets = "", sockets
        elif not host_network:
            container.address = engine_host()
        container.ports = {p: p for p in ports} if host_network or sealed else _published(attrs, ports, publish)
        missing = [p for p in ports if p not in container.ports]
        if missing:
            raise ServerStartError(f"{where} runs but the engine published no {publish} port for {missing}")
    except BaseException:
        with contextlib.suppress(Exception):
            container.stop()
        raise
    return container


def _created(thread: int) -> None:
    with _creating_done:
        _creating.discard(thread)
        _creating_done.notify_all()


@functools.cache
def _lifecycle_class() -> type[Any]:
    """testcontainers' ``DockerContainer`` on this process's engine, whose ``start()`` (create, start, wait
    until running) calls :func:`start_container`'s hooks: ``on_created(container)`` registers it the moment it
    exists (a cancel or SIGTERM from then on removes it), ``on_start()`` checks for a cancel and copies files
    in. Removal stays :meth:`Container.stop`'s: it keeps the last log, tolerates a concurrent removal and
    gives back the run's network and volumes. Protocol-level readiness is :mod:`pytest_mailtls.readiness`'s."""
    from testcontainers.core.container import DockerContainer
    from testcontainers.core.docker_client import DockerClient
    from testcontainers.core.wait_strategies import ContainerStatusWaitStrategy

    class Engine(DockerClient):
        def __init__(self, owner: Any) -> None:  # no super().__init__: this process's connection, not another
            self.client, self.owner = _engine().client, owner

        def create(self, image: str, *args: Any, **kwargs: Any) -> Any:
            self.client.images.get(image)  # ImageNotFound: never pulled at start as testcontainers would
            model = super().create(image, *args, **kwargs)
            self.owner.on_created(model)
            return model

        def start(self, container: Any) -> None:
            self.owner.on_start()
            super().start(container)

    class Lifecycle(DockerContainer):
        def __init__(self, image: str, name: str, on_created: Callable[[Any], None], on_start: Callable[[], None]):
            # The API version already negotiated: testcontainers' own client then costs no round trip.
            kw = {"version": _engine().client.api.api_version, "timeout": int(API_TIMEOUT)}
            super().__init__(image, name=name, docker_client_kw=kw)
            self.image = image  # a local content tag: no TESTCONTAINERS_HUB_IMAGE_NAME_PREFIX in front
            self.on_created, self.on_start = on_created, on_start
            self.waiting_for(
                ContainerStatusWaitStrategy().with_startup_timeout(int(API_TIMEOUT)).with_poll_interval(0.05)
            )

        def get_docker_client(self) -> DockerClient:
            return Engine(self)

    return Lifecycle


#: Where a sealed container finds its socket folder.
RELAY_DIR = "/run/mailtls-relay"
#: The sealed container's relay (perl-base is in every Debian image): ``perl -e RELAY_PL DIR PORT... --
#: ENTRYPOINT...``. It makes one unix socket per PORT in DIR (0666: the folder, 0700 on the host, guards it),
#: forks itself off and execs the entrypoint, which stays the container's main process. One process relays
#: every connection (no fork per connection: ~1 ms each, benchmarks/bench_sealed.py): it dials 127.0.0.1:PORT
#: from 127.0.0.2 and copies both ways, passing each half-close on and closing both ends when either fails.
#: It acknowledges the server's bytes at once (TCP_QUICKACK, renewed after each read): servers write small
#: segments with Nagle on, and a delayed ACK held each next one back 40 ms (a message through Postfix took
#: 51 ms instead of 7, benchmarks/bench_recorder.py).
RELAY_PL = r"""
use strict; use warnings; use Socket qw(:DEFAULT IPPROTO_TCP TCP_NODELAY TCP_QUICKACK); use IO::Socket::UNIX;
use Errno qw(EAGAIN EINTR EINPROGRESS);
my $dir = shift @ARGV; my (%port, %listener);
while (@ARGV and $ARGV[0] ne "--") {
    my $p = shift @ARGV; unlink "$dir/$p";
    my $l = IO::Socket::UNIX->new(Type => SOCK_STREAM, Local => "$dir/$p", Listen => 128)
        or die "mailtls-relay: cannot listen on $dir/$p: $!\n";
    chmod 0666, "$dir/$p"; $l->blocking(0); $port{fileno $l} = $p; $listener{fileno $l} = $l;
}
shift @ARGV;
my $pid = fork // die "mailtls-relay: fork: $!\n";
if ($pid) { close $_ for values %listener; exec @ARGV or die "mailtls-relay: cannot run @ARGV: $!\n" }
$SIG{PIPE} = "IGNORE"; $0 = "mailtls-relay";
my ($here, $there) = (inet_aton("127.0.0.2"), inet_aton("127.0.0.1"));
# One end of a relayed connection per fd: its handle, its peer's fd, what waits to be written to it, whether it
# said EOF, whether its writing side is to be shut once drained, and whether it is the server's (TCP) end.
my %end;
sub drop { my $f = shift; my $e = delete $end{$f} or return; my $p = delete $end{$e->{peer}}; close $e->{h}; close $p->{h} if $p }
sub flush {
    my $f = shift; my $e = $end{$f} or return;
    while (length $e->{out}) {
        my $w = syswrite($e->{h}, $e->{out});
        if (!defined $w) { return if $! == EAGAIN or $! == EINTR; return drop($f) }
        substr($e->{out}, 0, $w) = "";
    }
    if ($e->{shut}) { shutdown($e->{h}, 1); $e->{shut} = 0; $e->{done} = 1 }
    my $p = $end{$e->{peer}};
    drop($f) if $e->{done} and $e->{eof} and $p and $p->{done} and $p->{eof};
}
while (1) {
    my ($r, $w) = ("", "");
    vec($r, $_, 1) = 1 for keys %listener;
    for my $f (keys %end) {
        my $e = $end{$f};
        vec($r, $f, 1) = 1 unless $e->{eof} or length($end{$e->{peer}}{out}) > 262144;
        vec($w, $f, 1) = 1 if length $e->{out};
    }
    my $n = select(my $rr = $r, my $ww = $w, undef, undef);
    next if $n <= 0;
    for my $f (keys %end) { flush($f) if vec($ww, $f, 1) and $end{$f} }
    for my $f (keys %listener) {
        next unless vec($rr, $f, 1);
        my $c = $listener{$f}->accept or next;
        socket(my $s, PF_INET, SOCK_STREAM, IPPROTO_TCP) or next;
        bind($s, pack_sockaddr_in(0, $here)) or next;
        connect($s, pack_sockaddr_in($port{$f}, $there)) or next;  # loopback: at once, or refused
        setsockopt($s, IPPROTO_TCP, TCP_NODELAY, 1);
        $c->blocking(0); $s->blocking(0);
        my ($cf, $sf) = (fileno $c, fileno $s);
        $end{$cf} = {h => $c, peer => $sf, out => "", eof => 0, shut => 0, done => 0, tcp => 0};
        $end{$sf} = {h => $s, peer => $cf, out => "", eof => 0, shut => 0, done => 0, tcp => 1};
        vec($rr, $cf, 1) = 0; vec($rr, $sf, 1) = 0;
    }
    for my $f (keys %end) {
        next unless vec($rr, $f, 1) and $end{$f};
        my $e = $end{$f};
        my $got = sysread($e->{h}, my $buf, 65536);
        if (!defined $got) { next if $! == EAGAIN or $! == EINTR; drop($f); next }
        setsockopt($e->{h}, IPPROTO_TCP, TCP_QUICKACK, 1) if $e->{tcp};
        my $p = $e->{peer};
        if ($got) { $end{$p}{out} .= $buf; flush($p); next }
        $e->{eof} = 1; $end{$p}{shut} = 1; flush($p);
    }
}
"""


def _relayed(
    api: Any, image: str, ports: Sequence[int], entrypoint: Sequence[str] | None, command: Sequence[str] | None
) -> tuple[list[str], list[str]]:
    """The entrypoint and command that start the relay, then what the container would have run."""
    config = (api.inspect_image(image) or {}).get("Config") or {}
    first = list(entrypoint) if entrypoint is not None else list(config.get("Entrypoint") or [])
    # Docker drops the image's CMD once the entrypoint is replaced: carry it over unless ``command`` is given.
    rest = list(command) if command is not None else list(config.get("Cmd") or [])
    if not first + rest:
        raise ServerStartError(f"image {image} names no entrypoint or command to run behind the relay")
    return ["perl", "-e", RELAY_PL, RELAY_DIR, *map(str, ports), "--", *first], rest


_sealed: dict[str, bool] = {}


def sealed_routing() -> bool:
    """Whether containers given a socket folder run sealed (see :func:`start_container`): the engine is local
    and rootful on Linux, so a folder of this host bind-mounts into the container and the container's root
    can make sockets there. Tested as: the default bridge network's gateway is an address of this host (not
    so on Docker Desktop, rootless or remote engines, whose bridge lives elsewhere). ``MAILTLS_PUBLISH_PORTS=1``
    publishes on 127.0.0.1 instead, always.
    """
    if _truthy("MAILTLS_PUBLISH_PORTS") or copies_files():
        return False
    if "bridge" not in _sealed:
        _sealed["bridge"] = _gateway_is_local("bridge")
    return _sealed["bridge"]


def _gateway_is_local(network: str) -> bool:
    try:
        attrs = docker_client().api.inspect_network(network)
        configs = (attrs.get("IPAM") or {}).get("Config") or []
        # The default bridge does not always list its gateway: the engine gives it the subnet's first address.
        gateways = [c.get("Gateway") or _first_host(c.get("Subnet") or "") for c in configs]
    except Exception:
        return False
    for gateway in filter(None, gateways):
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
                probe.bind((gateway, 0))  # succeeds only for an address of this host
            return True
        except OSError:
            continue
    return False


def _first_host(subnet: str) -> str:
    import ipaddress

    try:
        return str(next(ipaddress.ip_network(subnet).hosts()))
    except (ValueError, StopIteration):
        return ""


def free_ports(count: int) -> list[int]:
    """``count`` distinct TCP ports free on 127.0.0.1 right now (for ``host_network``; a race remains)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for sock in sockets:
            sock.close()


# --------------------------------------------------------------------------- the reaper


def reap_orphans(*, progress: Progress = _noop, all_users: bool = False) -> list[str]:
    """Remove what dead pytest-mailtls processes of this user left on this host; return what went.

    Containers, then networks and volumes (labelled ``pytest-mailtls=1``, ``.host`` = this host, ``.uid`` = this user),
    then registered temp dirs (:func:`register_dir`). An owner counts as dead when its pid is gone, is a
    zombie, or now belongs to a process that started at another time. Anything whose owner is alive, whose
    labels are unreadable, or that belongs to another user (unless ``all_users``) is left alone.
    """
    removed = _reap_containers(progress, all_users)
    with contextlib.suppress(Exception):  # a network still in use by someone is not an error here
        removed += _reap_networks(progress, all_users)
    with contextlib.suppress(Exception):
        removed += _reap_volumes(progress, all_users)
    removed += _reap_dirs(progress)
    return removed


def _labels_owner(labels: Mapping[str, str]) -> dict[str, str]:
    prefix = f"{LABEL}."
    return {k[len(prefix) :]: v for k, v in labels.items() if k.startswith(prefix)}


def _reap_containers(progress: Progress, all_users: bool) -> list[str]:
    client = docker_client()
    errors = _docker_errors()
    host = socket.gethostname()
    found = client.api.containers(all=True, filters={"label": [f"{LABEL}=1", f"{LABEL}.host={host}"]})
    reaped: list[str] = []
    for item in found:
        pid = _orphan_owner(_labels_owner(item.get("Labels") or {}), all_users=all_users)
        if pid is None:
            continue
        name = (item.get("Names") or [item["Id"][:12]])[0].lstrip("/")
        try:
            client.api.remove_container(item["Id"], force=True, v=True)
        except errors.NotFound:
            continue
        except errors.APIError as exc:
            if exc.status_code != 409:
                raise MailTLSError(f"could not remove orphaned container {name}: {exc}") from exc
            continue
        progress(f"removed orphaned container {name} (its pytest-mailtls process {pid} is gone)")
        reaped.append(name)
    return reaped


def _reap_networks(progress: Progress, all_users: bool) -> list[str]:
    client = docker_client()
    errors = _docker_errors()
    host = socket.gethostname()
    reaped = []
    for item in client.api.networks(filters={"label": [f"{LABEL}=1", f"{LABEL}.host={host}"]}):
        pid = _orphan_owner(_labels_owner(item.get("Labels") or {}), all_users=all_users)
        if pid is None:
            continue
        try:
            client.api.remove_network(item["Id"])
        except errors.NotFound:
            continue
        except errors.APIError:
            continue  # still has endpoints (a container being removed right now): the next reap takes it
        progress(f"removed orphaned network {item['Name']} (its pytest-mailtls process {pid} is gone)")
        reaped.append(str(item["Name"]))
    return reaped


def _reap_volumes(progress: Progress, all_users: bool) -> list[str]:
    """Named volumes of copy mode (:func:`copies_files`) whose run died."""
    client = docker_client()
    errors = _docker_errors()
    host = socket.gethostname()
    reaped = []
    listed = client.api.volumes(filters={"label": [f"{LABEL}=1", f"{LABEL}.host={host}"]}) or {}
    for item in listed.get("Volumes") or []:
        pid = _orphan_owner(_labels_owner(item.get("Labels") or {}), all_users=all_users)
        if pid is None:
            continue
        try:
            client.api.remove_volume(item["Name"])
        except (errors.NotFound, errors.APIError):
            continue  # gone, or a container being removed right now still holds it: the next reap takes it
        progress(f"removed orphaned volume {item['Name']} (its pytest-mailtls process {pid} is gone)")
        reaped.append(str(item["Name"]))
    return reaped
