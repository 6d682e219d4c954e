"""A remote engine, for real: a second ``dockerd`` in a network namespace of its own, reached over TCP.

The test makes a network namespace (``ip netns`` + a veth pair: this host is 10.214.N.1, the namespace
10.214.N.2), starts a second ``dockerd`` inside it (``nsenter --net``: only the network is its own, so it sees
the host's cgroups; its data root, exec root and pidfile in a temp dir) listening on
``tcp://10.214.N.2:2375`` and nowhere else, and loads the Postfix and Dovecot images into it from the main
engine. Then, with ``DOCKER_HOST=tcp://10.214.N.2:2375``:

- ``mailtls certify --client python`` on a Postfix and Dovecot selection gives the same verdicts, cell for
  cell, as on the local engine (mail included: a ``pass`` on an SMTP cell needs the message in the cell's
  Maildir, read back through the engine);
- while ``mailtls up`` serves, no container has a bind mount, every port is published on the namespace's
  address only (not 0.0.0.0, not this host), and after it ends nothing is left on that engine (containers,
  volumes, networks).

Skipped (one line) where the machine cannot do it: not root, or no ``ip``/``nsenter``/``dockerd``.

PYTEST_DONT_REWRITE
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
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pytest_mailtls import runtime

from .test_images_registry import _mounts_under, _processes_under, _stop_engine

pytestmark = pytest.mark.integration

SELECTION = ["--servers", "postfix,dovecot", "--select", "quick"]


def _missing() -> str | None:
    if os.geteuid() != 0:
        return "a second engine in a network namespace needs root"
    for tool in ("ip", "nsenter", "dockerd", "docker"):
        if shutil.which(tool) is None:
            return f"`{tool}` is not installed"
    return runtime.engine_problem()  # the images come from the main engine


@dataclass
class RemoteEngine:
    root: Path
    address: str
    host: str  # DOCKER_HOST

    def docker(self, *args: str) -> str:
        done = subprocess.run(
            ["docker", *args], env={**os.environ, "DOCKER_HOST": self.host}, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr
        return done.stdout


@contextlib.contextmanager
def _namespace_engine() -> Iterator[RemoteEngine]:
    tag = secrets.token_hex(3)
    netns, outside, inside = f"mte3-{tag}", f"mt3h{tag}", f"mt3n{tag}"
    subnet = f"10.214.{secrets.randbelow(250) + 1}"
    root = Path(tempfile.mkdtemp(prefix="mailtls-e3-", dir="/tmp"))
    address, host = f"{subnet}.2", f"tcp://{subnet}.2:2375"
    try:
        for command in (
            ["ip", "netns", "add", netns],
            ["ip", "link", "add", outside, "type", "veth", "peer", "name", inside],
            ["ip", "link", "set", inside, "netns", netns],
            ["ip", "addr", "add", f"{subnet}.1/24", "dev", outside],
            ["ip", "link", "set", outside, "up"],
            ["ip", "-n", netns, "addr", "add", f"{address}/24", "dev", inside],
            ["ip", "-n", netns, "link", "set", inside, "up"],
            ["ip", "-n", netns, "link", "set", "lo", "up"],
        ):
            subprocess.run(command, check=True, capture_output=True)
        (root / "daemon.json").write_text("{}")
        # nsenter, not `ip netns exec`: the latter remounts /sys, which hides the cgroups dockerd needs.
        with open(root / "dockerd.log", "wb") as log:
            subprocess.Popen(
                [
                    "nsenter",
                    f"--net=/var/run/netns/{netns}",
                    "dockerd",
                    f"--config-file={root / 'daemon.json'}",
                    f"--data-root={root / 'data'}",
                    f"--exec-root={root / 'exec'}",
                    f"--pidfile={root / 'dockerd.pid'}",
                    f"--host={host}",
                    "--tls=false",
                    "--containerd-namespace=mailtls-e3",
                    "--containerd-plugins-namespace=mailtls-e3-plugins",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        engine = RemoteEngine(root, address, host)
        deadline = time.monotonic() + 90
        while subprocess.run(["docker", "-H", host, "info"], capture_output=True).returncode != 0:
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"the engine in {netns} did not answer: {(root / 'dockerd.log').read_text()[-2000:]}"
                )
            time.sleep(0.2)
        yield engine
    finally:
        _stop_engine(root)
        subprocess.run(["ip", "link", "del", outside], capture_output=True)
        subprocess.run(["ip", "netns", "del", netns], capture_output=True)


def _load_images(engine: RemoteEngine) -> None:
    """The Postfix and Dovecot images (and their base) from the main engine: the remote one pulls from nowhere."""
    settings = runtime.image_settings()
    tags = [runtime.ensure_image("postfix"), runtime.ensure_image("dovecot"), settings.base]
    save = subprocess.Popen(["docker", "save", *tags], stdout=subprocess.PIPE, env={**os.environ, "DOCKER_HOST": ""})
    load = subprocess.run(
        ["docker", "-H", engine.host, "load"], stdin=save.stdout, capture_output=True, text=True, timeout=600
    )
    assert save.stdout is not None
    save.stdout.close()
    assert save.wait(600) == 0 and load.returncode == 0, load.stderr


@pytest.fixture(scope="module")
def remote() -> Iterator[RemoteEngine]:
    reason = _missing()
    if reason:
        pytest.skip(f"remote engine test: {reason}")
    with _namespace_engine() as engine:
        _load_images(engine)
        yield engine
    assert not engine.root.exists() and _processes_under(engine.root) == [] and _mounts_under(engine.root) == []


def _mailtls(*args: str, docker_host: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DOCKER_HOST", runtime.COPY_ENV)}
    if docker_host:
        env["DOCKER_HOST"] = docker_host
    return subprocess.run(
        [sys.executable, "-m", "pytest_mailtls", *args], env=env, capture_output=True, text=True, timeout=900
    )


def _verdicts(report: Path) -> dict[str, tuple[object, ...]]:
    cells = json.loads((report / "report.json").read_text())["cells"]
    return {c["id"]: (c["verdict"], c["actual"], c["negotiated"]) for c in cells}


def test_python_certification_through_a_remote_engine_matches_the_local_engine(
    remote: RemoteEngine, tmp_path: Path
) -> None:
    far = _mailtls(
        "certify", "--client", "python", *SELECTION, "--report", str(tmp_path / "remote"), docker_host=remote.host
    )
    assert far.returncode == 0, far.stdout + far.stderr
    near = _mailtls("certify", "--client", "python", *SELECTION, "--report", str(tmp_path / "local"), docker_host=None)
    assert near.returncode == 0, near.stdout + near.stderr
    remote_verdicts, local_verdicts = _verdicts(tmp_path / "remote"), _verdicts(tmp_path / "local")
    assert remote_verdicts == local_verdicts
    assert {c.split("-")[0] for c in remote_verdicts} == {"postfix", "dovecot"}
    passed = [cell for cell, (verdict, *_) in remote_verdicts.items() if verdict == "pass"]
    # An SMTP pass means the message reached the cell's Maildir, which lives on the remote engine.
    assert any(cell.startswith("postfix-submission") for cell in passed), passed
    assert remote.docker("ps", "-aq").split() == []
    assert remote.docker("volume", "ls", "-q").split() == []


def _serve(remote: RemoteEngine, manifest: Path) -> subprocess.Popen[bytes]:
    """``mailtls up`` on the remote engine, once its manifest is written (it serves until told to stop)."""
    env = {k: v for k, v in os.environ.items() if k != runtime.COPY_ENV}
    env["DOCKER_HOST"] = remote.host
    up = subprocess.Popen(
        [sys.executable, "-m", "pytest_mailtls", "up", *SELECTION, "--manifest", str(manifest)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 300
    while not manifest.exists():
        if up.poll() is not None or time.monotonic() > deadline:
            up.kill()
            pytest.fail(f"mailtls up on {remote.host} wrote no manifest (exit status {up.poll()})")
        time.sleep(0.2)
    return up


def test_a_remote_grid_publishes_on_the_engine_address_only_bind_mounts_nothing_and_leaves_nothing(
    remote: RemoteEngine, tmp_path: Path
) -> None:
    manifest = tmp_path / "manifest.json"
    up = _serve(remote, manifest)
    try:
        ids = remote.docker("ps", "-q").split()
        assert len(ids) == 2  # one Postfix, one Dovecot
        for attrs in json.loads(remote.docker("inspect", *ids)):
            assert [m for m in attrs["Mounts"] if m["Type"] == "bind"] == []
            volumes = [m for m in attrs["Mounts"] if m["Type"] == "volume"]
            assert volumes and all(m["Name"].startswith("mailtls-vol-") for m in volumes)
            bindings = [b for ports in attrs["NetworkSettings"]["Ports"].values() for b in ports or []]
            assert bindings and {b["HostIp"] for b in bindings} == {remote.address}
        endpoints = json.loads(manifest.read_text())["cells"]
        # Clients dial the session recorder here; it dials the engine's address.
        assert {e["host"] for e in endpoints} == {"127.0.0.1"}
        assert {e["extra"]["upstream_host"] for e in endpoints} == {remote.address}
    finally:
        up.send_signal(signal.SIGINT)
        up.wait(120)
    assert remote.docker("ps", "-aq").split() == []
    assert remote.docker("volume", "ls", "-q").split() == []
    assert sorted(remote.docker("network", "ls", "--format", "{{.Name}}").split()) == ["bridge", "host", "none"]


def test_after_sigkill_reap_removes_the_remote_containers_volumes_and_network(
    remote: RemoteEngine, tmp_path: Path
) -> None:
    up = _serve(remote, tmp_path / "manifest.json")
    up.kill()  # SIGKILL: nothing of the run's own clean-up happens
    up.wait(30)
    assert len(remote.docker("ps", "-q").split()) == 2
    assert remote.docker("volume", "ls", "-q").split() != []
    reap = _mailtls("reap", docker_host=remote.host)
    assert reap.returncode == 0, reap.stdout + reap.stderr
    assert "removed orphaned volume mailtls-vol-" in reap.stdout + reap.stderr
    assert remote.docker("ps", "-aq").split() == []
    assert remote.docker("volume", "ls", "-q").split() == []
    assert sorted(remote.docker("network", "ls", "--format", "{{.Name}}").split()) == ["bridge", "host", "none"]


def test_inside_a_container_of_the_engine_it_copies_files_and_dials_its_gateway(tmp_path: Path) -> None:
    """Docker-outside-of-docker (a devcontainer, a CI job given the host's socket): pytest-mailtls runs in a
    container of the engine it drives. Its temp dirs are not the engine host's, so a bind mount fails ("bind
    source path does not exist"), and 127.0.0.1 of the host is not this container's. It must notice, copy the
    files in and publish on (and dial) its own network's gateway, with the verdicts of a run on the host."""
    problem = runtime.engine_problem()
    if problem:
        pytest.skip(f"docker-outside-of-docker test: {problem}")
    image = runtime.ensure_image("postfix")  # any Debian bookworm image with libssl3: this Python runs in it
    python = Path(sys.executable)
    mounts = {Path(sys.base_prefix), Path(sys.prefix), Path(__file__).resolve().parents[2], tmp_path}
    command = ["docker", "run", "--rm", "-v", "/var/run/docker.sock:/var/run/docker.sock"]
    for path in sorted(mounts):
        command += ["-v", f"{path}:{path}" + ("" if path == tmp_path else ":ro")]
    command += ["-w", str(Path(__file__).resolve().parents[2]), "-e", "HOME=/tmp", "-e", "PYTHONDONTWRITEBYTECODE=1"]
    command += ["--entrypoint", str(python), image]
    probe = subprocess.run([*command, "-c", "import ssl, pytest_mailtls"], capture_output=True, text=True, timeout=120)
    if probe.returncode != 0:
        pytest.skip(f"this Python does not run in {image}: {probe.stderr.strip()[-200:]}")
    inside = subprocess.run(
        [
            *command,
            "-m",
            "pytest_mailtls",
            "certify",
            "--client",
            "python",
            *SELECTION,
            "--report",
            str(tmp_path / "in"),
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert inside.returncode == 0, inside.stdout[-3000:] + inside.stderr[-3000:]
    host = _mailtls("certify", "--client", "python", *SELECTION, "--report", str(tmp_path / "host"), docker_host=None)
    assert host.returncode == 0, host.stdout + host.stderr
    assert _verdicts(tmp_path / "in") == _verdicts(tmp_path / "host")
    cells = json.loads((tmp_path / "in" / "report.json").read_text())["cells"]
    # The recorder inside dialled the engine host through the container's gateway, never 127.0.0.1.
    upstreams = {c["extra"]["upstream_host"] for c in cells}
    assert len(upstreams) == 1 and upstreams != {"127.0.0.1"}
    assert all("mail_mirror" in c["extra"] for c in cells)  # mail read back through the engine
