"""Images pulled first, built when needed, shared through a registry: a real registry and a second engine.

A registry (Debian's ``docker-registry``, the distribution registry v2) is started on 127.0.0.1 with its storage
in a temp dir, and a second ``dockerd`` (its own data root, exec root, socket and pidfile in a temp dir; no
bridge, no iptables rules) is started with ``containers/base/start-engine.sh``, as CI starts the main one. The
second engine begins with no image at all, and every ``mailtls`` command run against it runs in a mount
namespace where debootstrap is masked by /dev/null: the base can only come from a registry. That engine reaches
registries on 127.0.0.1 only (its proxy is a closed port), so Docker Hub cannot stand in even where it answers.

The main engine is only read, tagged and pushed from; the tags pushing adds are removed again.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pytest_mailtls import runtime
from pytest_mailtls.grid import DOCKER_SERVERS, get_backend

pytestmark = pytest.mark.integration

COMMAND_TIMEOUT = 1200  # a James build on the second engine from nothing takes minutes on a busy 2-core machine


def _missing() -> str | None:
    if os.geteuid() != 0:
        return "a second Docker engine and mount namespaces need root"
    for tool, package in (("dockerd", "docker.io"), ("docker", "docker.io"), ("docker-registry", "docker-registry")):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (apt-get install {package})"
    if shutil.which("unshare") is None:
        return "unshare (util-linux) is not installed"
    if shutil.which("ip") is None:
        return "ip (iproute2) is not installed: the second engine gets a bridge of its own"
    return runtime.engine_problem()


@pytest.fixture(scope="module")
def main_images() -> dict[str, str]:
    """The main engine's base and server images (built here if missing, as CI builds them up front)."""
    reason = _missing()
    if reason:
        pytest.skip(reason)
    with runtime.using_images(base=runtime.BASE_IMAGE, registry=None):
        tags = {"base": runtime.BASE_IMAGE}
        runtime.ensure_base_image()
        for server in DOCKER_SERVERS:
            tags[server] = get_backend(server).image()
    return tags


def _image_ids(client, tags: dict[str, str]) -> dict[str, str | None]:
    return {name: runtime._image_id(client, tag) for name, tag in tags.items()}


def _free_port() -> int:
    return runtime.free_ports(1)[0]


# --------------------------------------------------------------------------- the registry


@contextlib.contextmanager
def local_registry(root: Path) -> Iterator[str]:
    """A distribution registry on 127.0.0.1:<free port> storing in ``root``; yields ``127.0.0.1:<port>``."""
    port = _free_port()
    (root / "data").mkdir(parents=True)
    config = root / "config.yml"
    config.write_text(
        "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\n"
        f"storage:\n  filesystem:\n    rootdirectory: {root / 'data'}\n  delete:\n    enabled: true\n"
        f"http:\n  addr: 127.0.0.1:{port}\n"
    )
    with open(root / "registry.log", "wb") as log:
        proc = subprocess.Popen(
            ["docker-registry", "serve", str(config)], stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=2) as answer:
                    assert answer.status == 200
                break
            except (urllib.error.URLError, ConnectionError):
                if proc.poll() is not None or time.monotonic() > deadline:
                    log_text = (root / "registry.log").read_text()
                    raise RuntimeError(f"docker-registry did not answer on 127.0.0.1:{port}: {log_text}") from None
                time.sleep(0.1)
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[str]:
    with local_registry(tmp_path / "registry") as address:
        yield address


def _catalog(registry: str) -> list[str]:
    with urllib.request.urlopen(f"http://{registry}/v2/_catalog", timeout=10) as answer:
        return sorted(json.load(answer)["repositories"])


# --------------------------------------------------------------------------- the second engine


@dataclass
class Engine:
    root: Path
    host: str  # unix://...
    client: Any  # docker.DockerClient for this engine

    def run_mailtls(self, *args: str) -> subprocess.CompletedProcess[str]:
        """``python -m pytest_mailtls ARGS`` against this engine, with debootstrap masked."""
        return _masked([sys.executable, "-m", "pytest_mailtls", *args], DOCKER_HOST=self.host)


def _debootstraps() -> list[str]:
    found = {shutil.which("debootstrap"), shutil.which("debootstrap", path="/usr/sbin:/sbin")}
    return sorted(os.path.realpath(p) for p in found if p)


def _masked(command: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    """Run ``command`` in a private mount namespace where every debootstrap is /dev/null."""
    script = 'for f in $MASK; do mount --bind /dev/null "$f" || exit 97; done; exec "$@"'
    full_env = {**os.environ, "MASK": " ".join(_debootstraps()), **env}
    full_env.pop(runtime.BASE_ENV, None)
    full_env.pop(runtime.REGISTRY_ENV, None)
    return subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", *command],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
    )


def _processes_under(path: Path) -> list[int]:
    """Pids of processes whose command line names ``path`` (the engine's dockerd, containerd, shims)."""
    needle = str(path).encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if needle in (entry / "cmdline").read_bytes():
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def _mounts_under(path: Path) -> list[str]:
    prefix = str(path) + "/"
    return [
        line.split()[1] for line in Path("/proc/mounts").read_text().splitlines() if line.split()[1].startswith(prefix)
    ]


def _stop_engine(root: Path) -> None:
    pidfile = root / "dockerd.pid"
    if pidfile.exists():
        pid = int(pidfile.read_text().strip() or 0)
        if pid and runtime.process_alive(pid):
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 30
            while runtime.process_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.1)
    for pid in _processes_under(root):  # only processes started for this engine name its temp dir
        if pid != os.getpid():
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while _processes_under(root) and time.monotonic() < deadline:
        time.sleep(0.1)
    runtime._unmount_below(root)
    shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def fresh_engine(mirror: str | None = None) -> Iterator[Engine]:
    """A second engine with no image, started by ``containers/base/start-engine.sh`` (``mirror``: a registry for
    its registry-mirrors); stopped and removed after: processes, data root, mounts, its bridge. It writes no
    iptables rule.

    Its default bridge is an interface of its own, made here: a dockerd started with ``--bridge=none`` DELETES
    the host's ``docker0`` (moby removes the default bridge interface when the bridge is disabled), which
    broke every container of the main engine started on the default bridge afterwards."""
    import docker

    root = Path(tempfile.mkdtemp(prefix="mailtls-e2-", dir="/tmp"))  # short: the socket path has a length limit
    host = f"unix://{root / 'docker.sock'}"
    bridge = f"mte2{secrets.token_hex(4)}"  # at most 15 characters
    subnet = f"10.213.{secrets.randbelow(250) + 1}"
    subprocess.run(["ip", "link", "add", bridge, "type", "bridge"], check=True)
    subprocess.run(["ip", "addr", "add", f"{subnet}.1/24", "dev", bridge], check=True)
    subprocess.run(["ip", "link", "set", bridge, "up"], check=True)
    (root / "daemon.json").write_text(json.dumps({"registry-mirrors": [f"http://{mirror}"]} if mirror else {}))
    args = [
        f"--config-file={root / 'daemon.json'}",
        f"--data-root={root / 'data'}",
        f"--exec-root={root / 'exec'}",
        f"--host={host}",
        f"--bridge={bridge}",
        "--iptables=false",
        "--ip-masq=false",
        "--containerd-namespace=mailtls-e2",
        "--containerd-plugins-namespace=mailtls-e2-plugins",
    ]
    env = {
        **os.environ,
        "DOCKER_HOST": host,
        "MAILTLS_DOCKERD_ARGS": " ".join(args),
        "MAILTLS_DOCKERD_PIDFILE": str(root / "dockerd.pid"),
        "MAILTLS_DOCKERD_LOG": str(root / "dockerd.log"),
        "MAILTLS_DOCKERD_TIMEOUT": "60",
        # Hermetic: this engine reaches registries on 127.0.0.1 only, never Docker Hub (even where it answers).
        "HTTP_PROXY": "http://127.0.0.1:9",
        "HTTPS_PROXY": "http://127.0.0.1:9",
        "NO_PROXY": "127.0.0.1,localhost",
    }
    client = None
    try:
        script = runtime.containers_root() / "base" / "start-engine.sh"
        done = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, timeout=120)
        if done.returncode != 0 or "Docker engine ready" not in done.stdout:
            raise RuntimeError(f"the second engine did not start: {done.stdout}{done.stderr}")
        client = docker.DockerClient(base_url=host, timeout=120)
        yield Engine(root, host, client)
    finally:
        if client is not None:
            client.close()
        _stop_engine(root)
        subprocess.run(["ip", "link", "del", bridge], capture_output=True)


@pytest.fixture
def second_engine(main_images: dict[str, str]) -> Iterator[Callable[..., Engine]]:
    """Start fresh engines (see :func:`fresh_engine`); afterwards nothing of them is left."""
    started: list[Engine] = []
    with contextlib.ExitStack() as stack:

        def start(mirror: str | None = None) -> Engine:
            engine = stack.enter_context(fresh_engine(mirror))
            started.append(engine)
            assert engine.client.images.list(all=True) == []  # a fresh engine: no image at all
            return engine

        yield start
        networks = [sorted(n.name for n in e.client.networks.list()) for e in started]
    for engine in started:
        assert not engine.root.exists() and _processes_under(engine.root) == [] and _mounts_under(engine.root) == []
    assert all(names == ["bridge", "host", "none"] for names in networks), networks
    assert Path("/sys/class/net/docker0").exists(), "the main engine's bridge is untouched"


def _lines(text: str, word: str) -> list[str]:
    return [line for line in text.splitlines() if word in line]


# --------------------------------------------------------------------------- the tests


def test_debootstrap_is_masked_for_the_second_engine_commands() -> None:
    """The premise of the tests below: inside the namespace, making the base with debootstrap is impossible."""
    reason = _missing()
    if reason:
        pytest.skip(reason)
    probe = "from pytest_mailtls import runtime\ntry:\n    runtime._debootstrap_binary()\nexcept Exception as e:\n    print(e)"
    done = _masked([sys.executable, "-c", probe])
    assert done.returncode == 0, done.stderr
    assert "debootstrap, which makes it, is not installed" in done.stdout


def test_fresh_engine_pulls_the_base_through_its_mirror_and_builds_the_rest(
    main_images: dict[str, str], registry: str, second_engine: Callable[..., Engine]
) -> None:
    main = runtime.docker_client()
    base_id = runtime._image_id(main, runtime.BASE_IMAGE)
    # The registry plays Docker Hub's mirror: Hub's official images live under library/.
    pushed = runtime.push_image(runtime.BASE_IMAGE, f"{registry}/library")
    assert pushed == f"{registry}/library/{runtime.BASE_IMAGE}"
    assert runtime._image_id(main, pushed) is None  # the main engine keeps no registry name
    engine = second_engine(mirror=registry)

    done = engine.run_mailtls("images", "build", "--servers", "postfix")
    assert done.returncode == 0, done.stdout + done.stderr
    assert _lines(done.stderr, f"pulled base image {runtime.BASE_IMAGE} in "), done.stderr
    assert _lines(done.stderr, f"building image {main_images['postfix']} "), done.stderr
    assert "debootstrap" not in done.stderr
    assert f"postfix: {main_images['postfix']} (" in done.stdout
    # The base is the main engine's own (not some other registry's), so the content tag is the same on both engines.
    assert runtime._image_id(engine.client, runtime.BASE_IMAGE) == base_id
    assert sorted(t for i in engine.client.images.list() for t in i.tags) == [
        runtime.BASE_IMAGE,
        main_images["postfix"],
    ]
    version = engine.client.containers.run(
        main_images["postfix"],
        ["dpkg-query", "-W", "-f", "${Version}\\n", "postfix"],
        entrypoint=[],
        network_mode="none",
        remove=True,
    )
    assert version.decode().startswith("3.7.")


def test_push_and_pull_round_trip_the_content_tags(
    main_images: dict[str, str], registry: str, second_engine: Callable[..., Engine]
) -> None:
    main = runtime.docker_client()
    engine = second_engine()  # no mirror: only `--registry` reaches the registry

    # Nothing shared yet: pulling says why in one line and builds nothing.
    empty = engine.run_mailtls("images", "pull", "--registry", registry)
    assert empty.returncode == 1, empty.stdout + empty.stderr
    errors = _lines(empty.stderr, "mailtls: error:")
    assert (
        len(errors) == 1
        and f"not pulled from {registry} (" in errors[0]
        and "the engine could not pull it" in errors[0]
    )
    assert engine.client.images.list(all=True) == []

    # Push from the main engine: the base and every server image under their content tags.
    push = subprocess.run(
        [sys.executable, "-m", "pytest_mailtls", "images", "push", "--registry", registry],
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
        env={k: v for k, v in os.environ.items() if k not in (runtime.BASE_ENV, runtime.REGISTRY_ENV)},
    )
    assert push.returncode == 0, push.stdout + push.stderr
    assert f"base: pushed as {registry}/{runtime.BASE_IMAGE}" in push.stdout
    for server in DOCKER_SERVERS:
        assert f"{server}: {main_images[server]} pushed as {registry}/{main_images[server]}" in push.stdout
    assert _catalog(registry) == sorted(["debian", *(f"mailtls-{s}" for s in DOCKER_SERVERS)])
    assert not [t for i in main.images.list() for t in i.tags if t.startswith(registry)]  # no names left behind

    # Pull some into the fresh engine, then `build --registry` pulls the rest; nothing is built.
    pull = engine.run_mailtls("images", "pull", "--registry", registry, "--servers", "dovecot,james")
    assert pull.returncode == 0, pull.stdout + pull.stderr
    assert _lines(pull.stderr, f"pulled {runtime.BASE_IMAGE} from {registry}/{runtime.BASE_IMAGE}")
    build = engine.run_mailtls("images", "build", "--registry", registry)
    assert build.returncode == 0, build.stdout + build.stderr
    assert _lines(build.stderr, f"pulled {main_images['postfix']} from {registry}/{main_images['postfix']}")
    for done in (pull, build):
        assert not _lines(done.stderr, "building image") and "debootstrap" not in done.stderr, done.stderr
    assert _image_ids(engine.client, main_images) == _image_ids(main, main_images)  # the very same images
    assert not [t for i in engine.client.images.list() for t in i.tags if t.startswith(registry)]

    # Now the fresh engine has every image under its content tag: building finds them all.
    again = engine.run_mailtls("images", "build")
    assert again.returncode == 0, again.stdout + again.stderr
    assert not _lines(again.stderr, "building image") and not _lines(again.stderr, "pulled")
    for server in DOCKER_SERVERS:
        assert f"{server}: {main_images[server]} (" in again.stdout
