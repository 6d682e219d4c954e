"""What the container backends (Postfix, Dovecot, James) share around their own rendering.

Each backend renders its server's configuration itself; this module checks the cells, puts the PKI and
the rendered files where the container reads them, starts the container, builds one
:class:`~pytest_mailtls.manifest.Endpoint` per cell and waits until every port passed a real exchange
(:func:`launch`), and wraps the running container (:class:`ContainerServer`).

PYTEST_DONT_REWRITE
"""

from __future__ import annotations

import abc
import os
import shutil
import threading
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

from .. import capture
from ..errors import ServerStartError
from ..manifest import Endpoint
from ..pki import SessionPKI
from ..policy import Cell, CertProfile
from .base import Backend, RunningServer, StartOptions, cell_endpoint

if TYPE_CHECKING:
    from ..runtime import Container

__all__ = [
    "FIRST_PORT",
    "CertPaths",
    "ContainerBackend",
    "Plan",
    "PlanInput",
    "ContainerServer",
    "Ready",
    "check_cells",
    "check_render_input",
    "container_ports",
    "copy_client_ca",
    "copy_pki",
    "exited",
    "launch",
    "mail_owner",
    "make_mail_root",
    "safe_logs",
    "write_files",
    "write_private",
]

#: First container-internal port; cell ``i`` listens on ``FIRST_PORT + i``.
FIRST_PORT = 10000
#: What tells one cell's log lines apart in the container's log (a syslog name, a service name, a port).
K = TypeVar("K")
#: Waits until the started container serves: ``(container, endpoints, started)``, ``started`` being the
#: monotonic time the start's deadline counts from. Raises ``ServerStartError`` when it does not.
Ready = Callable[["Container", list[Endpoint], float], None]


# --------------------------------------------------------------------------- checks


def check_cells(backend: Backend, cells: Sequence[Cell]) -> None:
    """Raise ``ValueError`` unless there are cells and ``backend`` can serve every one of them."""
    if not cells:
        raise ValueError(f"{type(backend).__name__}.start needs at least one cell")
    for cell in cells:
        reason = backend.unsupported(cell)
        if reason:
            raise ValueError(f"{cell.id}: {reason}")


def check_render_input(
    cells: Sequence[Cell],
    ports: Sequence[int],
    unsupported: Callable[[Cell], str | None],
    *,
    certs: Collection[CertProfile],
    client_ca: bool,
    certs_name: str = "certificate files for profile",
    client_ca_name: str = "client_ca_file",
    reserved_port: tuple[int, str] | None = None,
) -> None:
    """Raise ``ValueError`` unless each cell has its own distinct port, can be served (``unsupported``),
    finds its certificate profile among ``certs`` and, with mutual TLS, a client CA (``client_ca``).
    ``reserved_port`` is a ``(port, what uses it)`` no cell may take. The ``*_name`` words name the missing
    piece in the message."""
    if len(ports) != len(cells):
        raise ValueError(f"{len(cells)} cells but {len(ports)} ports")
    if len(set(ports)) != len(ports) or (reserved_port is not None and reserved_port[0] in ports):
        rule = "" if reserved_port is None else f" and not {reserved_port[0]} ({reserved_port[1]})"
        raise ValueError(f"ports must be distinct{rule}: {list(ports)}")
    if len({c.id for c in cells}) != len(cells):
        raise ValueError("cells must be distinct (the same cell id appears twice)")
    for cell in cells:
        reason = unsupported(cell)
        if reason:
            raise ValueError(f"{cell.id}: {reason}")
        if cell.cert is not None and cell.cert not in certs:
            raise ValueError(f"{cell.id}: no {certs_name} {cell.cert}")
        if cell.auth.client_cert and not client_ca:
            raise ValueError(f"{cell.id}: mutual TLS needs {client_ca_name}")


def container_ports(cells: Sequence[Cell], first: int = FIRST_PORT) -> list[int]:
    """The container-internal port of each cell, in order."""
    return [first + i for i in range(len(cells))]


# --------------------------------------------------------------------------- files for the container


@dataclass(frozen=True)
class CertPaths:
    """Container paths of one certificate profile's key and presented chain (leaf first)."""

    key_file: str
    cert_file: str


def copy_pki(cells: Sequence[Cell], pki: SessionPKI, target: Path, mounted_at: str) -> dict[CertProfile, CertPaths]:
    """Copy the key and chain of each certificate profile ``cells`` use to ``target/<profile>/``; return their
    paths there (``target`` is mounted at ``mounted_at``).

    Keys stay private on the host: 0600, owned by the host user. Inside the container only root reads them
    (the engine runs containers without a user namespace, so root there reads any bind-mounted file, as
    root does on the host): Postfix's smtpd and James load keys as root, and Dovecot's login wrapper reads
    them before the login process drops its privileges. Chains are public (0644)."""
    out: dict[CertProfile, CertPaths] = {}
    target.mkdir(parents=True, exist_ok=True)
    target.chmod(0o755)
    for profile in dict.fromkeys(c.cert for c in cells if c.cert is not None):
        files = pki.server_files(profile)
        folder = target / str(profile)
        folder.mkdir(parents=True, exist_ok=True)
        folder.chmod(0o755)
        write_private(folder / "key.pem", files.key_file.read_bytes())
        shutil.copyfile(files.cert_file, folder / "chain.pem")
        (folder / "chain.pem").chmod(0o644)
        out[profile] = CertPaths(f"{mounted_at}/{profile}/key.pem", f"{mounted_at}/{profile}/chain.pem")
    return out


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` (a key, a keystore) to ``path``, readable by its owner only: 0600 from creation on."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # an existing file keeps its old mode through O_CREAT
    with os.fdopen(fd, "wb") as out:
        out.write(data)


def copy_client_ca(cells: Sequence[Cell], pki: SessionPKI, target: Path, mounted_at: str) -> str | None:
    """With a mutual-TLS cell among ``cells``, copy the CA client certificates must come from to
    ``target/client-ca.pem`` and return its container path; ``None`` without one."""
    if not any(c.auth.client_cert for c in cells):
        return None
    target.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(pki.client_ca_file, target / "client-ca.pem")
    (target / "client-ca.pem").chmod(0o644)
    return f"{mounted_at}/client-ca.pem"


def mail_owner(fallback: int) -> tuple[int, int]:
    """The uid and gid that own delivered mail: the host user's, so that it can read and delete the files;
    ``fallback`` for both when that is root (root on the host reads any file, and mail servers refuse to
    write mail as root)."""
    uid, gid = os.getuid(), os.getgid()
    if uid == 0:
        uid = gid = fallback
    return uid, gid


def write_files(root: Path, files: Mapping[str, str | bytes]) -> None:
    """Write rendered files (path relative to ``root`` -> content) so that every user in the container reads
    them: folders 0755, files 0644."""
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        for parent in path.relative_to(root).parents:
            (root / parent).chmod(0o755)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
        path.chmod(0o644)


def make_mail_root(mail: Path, maildirs: Iterable[str]) -> None:
    """Make ``mail`` a folder any container user writes to, holding an empty Maildir per name of ``maildirs``."""
    mail.mkdir(parents=True, exist_ok=True)
    mail.chmod(0o777)
    for folder in maildirs:
        capture.ensure_maildir(mail / folder)


# --------------------------------------------------------------------------- starting


def safe_logs(container: Container) -> str:
    """The container's log, or why it cannot be read (the error at hand matters more than the log)."""
    try:
        return container.logs()
    except Exception as exc:  # the engine went away
        return f"(could not read the container log: {exc})"


def exited(container: Container, title: str) -> Callable[[], str | None]:
    """An ``alive()`` check for ``wait_ready``: why the server is gone, or ``None`` while it runs."""

    def alive() -> str | None:
        return None if container.is_running() else f"the {title} container exited"

    return alive


def launch(
    server: str,
    image: str,
    cells: Sequence[Cell],
    ports: Sequence[int],
    options: StartOptions,
    *,
    volumes: Mapping[str, Mapping[str, str]],
    environment: Mapping[str, str],
    mailbox: Callable[[Cell], str],
    extra: Callable[[Cell, int], Mapping[str, object]] | None = None,
    ready: Ready | None = None,
    started: float | None = None,
    cpu_shares: int | None = None,
) -> tuple[Container, list[Endpoint]]:
    """Start ``image`` as ``mailtls-<server>`` serving ``cells`` on container ``ports`` (in order), build one
    endpoint per cell and wait until every port passed a real exchange; return the container and endpoints.

    ``mailbox(cell)`` is the cell's host Maildir; ``extra(cell, port)`` adds to ``Endpoint.extra`` (which
    always names the container and the container port). ``ready`` replaces the plain wait (every port,
    ``options.ready_timeout`` from now, failing fast when the container exits); it is given ``started``
    (default: once the container runs), which also starts the clock of the "ready" progress line. On any
    failure the container is removed first, and errors other than ``ServerStartError`` become one carrying
    the container's log.
    """
    from .. import runtime
    from ..readiness import cancel_scope, wait_ready

    title = server.capitalize()
    container = runtime.start_container(
        image,
        name=f"mailtls-{server}",
        ports=ports,
        volumes=volumes,
        environment=environment,
        sockets=options.workdir / "relay",  # sealed (no network) where the engine allows it
        cancel=options.cancel,
        cpu_shares=cpu_shares,
    )
    try:
        client = options.pki.client_files() if any(c.auth.client_cert for c in cells) else None
        endpoints = [
            cell_endpoint(
                cell,
                options,
                host=container.upstream(port)[0],
                port=container.upstream(port)[1],
                mailbox=mailbox(cell),
                client=client,
                extra={
                    "container": container.name,
                    "container_port": port,
                    **_mail_mirror(container, mailbox(cell)),
                    **(extra(cell, port) if extra else {}),
                },
            )
            for cell, port in zip(cells, ports, strict=True)
        ]
        begun = time.monotonic() if started is None else started
        with cancel_scope(options.cancel):  # a backend's own ``ready`` waits are cancelled too
            if ready is None:
                wait_ready(
                    endpoints, timeout=options.ready_timeout, logs=container.logs, alive=exited(container, title)
                )
            else:
                ready(container, endpoints, begun)
        options.progress(f"{server}: {len(cells)} cells ready in {time.monotonic() - begun:.2f} s")
    except Exception as exc:
        log = safe_logs(container)
        container.stop()
        if options.cancel is not None and options.cancel.is_set() and not isinstance(exc, runtime.StartCancelled):
            # The container was removed under the wait by a cancel: that, not "container exited", is the news.
            raise runtime.StartCancelled(f"start of {title} container {container.name} cancelled") from exc
        if isinstance(exc, (ServerStartError, runtime.StartCancelled)):
            raise
        raise ServerStartError(f"{title} container {container.name} failed to start: {exc}", log) from exc
    except BaseException:  # KeyboardInterrupt and friends: leave nothing behind
        container.stop()
        raise
    return container, endpoints


def _mail_mirror(container: Container, mailbox: str) -> dict[str, object]:
    """``{"mail_mirror": ...}`` where the cell's mail lives in the container, not in ``mailbox`` (copy mode:
    :meth:`~pytest_mailtls.runtime.Container.mirror_of`); nothing under a bind mount."""
    mirror = container.mirror_of(mailbox)
    return {} if mirror is None else {"mail_mirror": mirror}


# --------------------------------------------------------------------------- declared starts


@dataclass(frozen=True)
class PlanInput:
    """What a :class:`ContainerBackend` renders its plan from: the cells, their container ports (in order),
    the container paths of the PKI copies (keys 0600, chains) and of the client CA, and the uid/gid that owns
    delivered mail."""

    cells: Sequence[Cell]
    ports: Sequence[int]
    cert_files: Mapping[CertProfile, CertPaths]
    client_ca: str | None
    mail_uid: int
    mail_gid: int
    options: StartOptions
    workdir: Path
    #: The host folder the rendered files go to (mounted at ``etc_path``), and the mail root (``mail_path``).
    files_dir: Path
    mail_dir: Path

    def render_args(self) -> dict[str, Any]:
        """The keyword arguments every container backend's ``render()`` takes, from this input."""
        return {
            "ports": self.ports,
            "cert_files": self.cert_files,
            "client_ca_file": self.client_ca,
            "username": self.options.username,
            "password": self.options.password,
            "mail_uid": self.mail_uid,
            "mail_gid": self.mail_gid,
        }


@dataclass(frozen=True)
class Plan:
    """One start, as a container backend declares it; :meth:`ContainerBackend.start` carries it out.

    ``files``: rendered files, relative to the read-only configuration folder (``etc_path`` inside);
    ``maildirs``: the Maildirs to make under the read-write mail root (``mail_path`` inside), and
    ``mailbox(cell)`` the one a cell delivers to; ``cell_keys``: what marks each cell's lines in the log;
    ``extra(cell, port)``: backend specifics for ``Endpoint.extra``; ``shared``: further read-write folders
    (host path -> container path), such as a socket folder another container uses too; ``prepare`` runs
    right before the container starts (make a socket folder, check a peer); ``ready`` replaces the plain
    wait (:data:`Ready`); ``keep`` carries what :meth:`ContainerBackend.serve` needs from the rendering (a
    secret made for this start); ``served``, the cells as the endpoints declare them when the server does less
    than the matrix asks (default: the cells)."""

    files: Mapping[str, str | bytes]
    maildirs: Sequence[str]
    mailbox: Callable[[Cell], str]
    cell_keys: Mapping[str, Any]
    extra: Callable[[Cell, int], Mapping[str, object]] | None = None
    environment: Mapping[str, str] = field(default_factory=dict)
    shared: Mapping[Path, str] = field(default_factory=dict)
    prepare: Callable[[], None] | None = None
    ready: Ready | None = None
    keep: Mapping[str, Any] = field(default_factory=dict)
    served: Sequence[Cell] | None = None


class ContainerBackend(Backend):
    """A server in a container that declares each start (:meth:`plan`) and wraps what runs (:meth:`serve`);
    this class does the rest, the same way for each: check the cells, copy the PKI (keys 0600), write the
    rendered files, make the mail root, get the image, start the container with its folders (bind-mounted,
    or copied through a remote engine), wait until every port passed a real exchange, remove it on any
    failure (:func:`launch`).

    ``etc_path``: where the configuration folder is inside; ``pki_path``: where the server reads the PKI
    copies (default ``etc_path/pki``: an entrypoint may copy them elsewhere); ``mail_path``: the mail root
    inside; ``mail_uid``: who owns delivered mail when the host user is root (servers refuse root).
    ``pem_keys``: copy each profile's PEM key and chain (a JVM server makes keystores in :meth:`plan`
    instead); ``one_root``: the configuration, keys and mail share one read-write folder at ``etc_path`` (the
    server writes there too), the mail root being its ``mail`` folder. ``cpu_shares``: the container's CPU
    weight against the grid's other containers (the engine's default is 1024): the slowest server to start
    gets more, so that a whole grid is ready sooner."""

    etc_path: ClassVar[str]
    pki_path: ClassVar[str | None] = None
    mail_path: ClassVar[str]
    mail_uid: ClassVar[int]
    pem_keys: ClassVar[bool] = True
    one_root: ClassVar[bool] = False
    cpu_shares: ClassVar[int | None] = None

    @abc.abstractmethod
    def plan(self, given: PlanInput) -> Plan:
        """Render this start: files, Maildirs, environment, log keys (nothing is written yet)."""

    @abc.abstractmethod
    def serve(self, container: Container, endpoints: list[Endpoint], plan: Plan, given: PlanInput) -> RunningServer:
        """The running server that wraps ``container``."""

    def start(self, cells: Sequence[Cell], options: StartOptions) -> RunningServer:
        """Render, start one container for ``cells`` and wait until every port passed a real exchange."""
        check_cells(self, cells)
        workdir = Path(options.workdir)
        if self.one_root:
            etc = workdir / self.name
            shutil.rmtree(etc, ignore_errors=True)  # a folder the server wrote to in an earlier start
            mail = etc / "mail"
        else:
            etc, mail = workdir / "etc", workdir / "mail"
        etc.mkdir(parents=True, exist_ok=True)
        pki_at = self.pki_path or f"{self.etc_path}/pki"
        uid, gid = mail_owner(self.mail_uid)
        given = PlanInput(
            cells=cells,
            ports=container_ports(cells),
            cert_files=copy_pki(cells, options.pki, etc / "pki", pki_at) if self.pem_keys else {},
            client_ca=copy_client_ca(cells, options.pki, etc / "pki", pki_at) if self.pem_keys else None,
            mail_uid=uid,
            mail_gid=gid,
            options=options,
            workdir=workdir,
            files_dir=etc,
            mail_dir=mail,
        )
        plan = self.plan(given)
        write_files(etc, plan.files)  # read inside by root and the servers' own users alike
        make_mail_root(mail, plan.maildirs)
        for folder in plan.shared:
            folder.mkdir(parents=True, exist_ok=True)  # or the engine would make it, owned by root
        if plan.prepare is not None:
            plan.prepare()
        options.progress(f"{self.name}: starting one container for {len(cells)} cells")
        image = self.image(progress=options.progress)
        volumes = {
            str(etc): {"bind": self.etc_path, "mode": "rw" if self.one_root else "ro"},
            **({} if self.one_root else {str(mail): {"bind": self.mail_path, "mode": "rw"}}),
            **{str(host): {"bind": inside, "mode": "rw"} for host, inside in plan.shared.items()},
        }
        container, endpoints = launch(
            self.name,
            image,
            cells if plan.served is None else plan.served,
            given.ports,
            options,
            volumes=volumes,
            environment=plan.environment,
            mailbox=lambda cell: str(mail / plan.mailbox(cell)),
            extra=plan.extra,
            ready=plan.ready,
            cpu_shares=self.cpu_shares,
        )
        return self.serve(container, endpoints, plan, given)


# --------------------------------------------------------------------------- the running server


class ContainerServer(RunningServer, Generic[K]):
    """One container serving many cells.

    ``cell_keys`` maps each cell id to what marks its lines in the container's log; subclasses read those
    lines in :meth:`log_lines`. What the server wrote to ``workdir`` (captured mail) outlives :meth:`stop`.
    """

    #: The server's name in messages ("Postfix").
    title: ClassVar[str] = "container"

    def __init__(
        self, container: Container, endpoints: list[Endpoint], workdir: Path, cell_keys: Mapping[str, K]
    ) -> None:
        self.container = container
        self.endpoints = endpoints
        self.workdir = workdir
        self._cell_keys = dict(cell_keys)
        self._log_lock = threading.Lock()
        self._log_cache: tuple[float, str] | None = None

    #: How long one read of the container's log serves every caller: concurrent certification polls each
    #: cell's lines, and without this every poll would be a ``docker logs`` of the whole container.
    LOG_TTL = 0.03

    def logs(self) -> str:
        """The container's log (``docker logs``), read at most once per :attr:`LOG_TTL` seconds."""
        with self._log_lock:
            now = time.monotonic()
            if self._log_cache is None or now - self._log_cache[0] > self.LOG_TTL:
                self._log_cache = (now, self.container.logs())
            return self._log_cache[1]

    def cell_logs(self, cell_id: str, since: float | None = None) -> list[str]:
        """The log lines about one cell (``KeyError`` for a cell this server does not serve); with ``since``
        (a Unix time) only those written after it, read by the engine without the whole log."""
        try:
            key = self._cell_keys[cell_id]
        except KeyError:
            raise KeyError(
                f"no cell {cell_id!r} in this {self.title} server (it serves {len(self.endpoints)})"
            ) from None
        return self.log_lines(self.logs() if since is None else self.container.logs(since=since), key)

    def log_source(self, cell_id: str) -> tuple[str, Any] | None:
        key = self._cell_keys.get(cell_id)
        return None if key is None else (self.container.id, key)

    @abc.abstractmethod
    def log_lines(self, log: str, key: K) -> list[str]:
        """The lines of ``log`` about the cell marked by ``key``."""

    def stop(self) -> None:
        """Remove the container (idempotent); what it wrote to the workdir stays."""
        self.container.stop()
