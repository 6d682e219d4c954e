"""The Docker runtime against the real engine: containers, ports, cleanup, the reaper, image builds."""

from __future__ import annotations

import contextlib
import io
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pytest_mailtls import runtime
from pytest_mailtls.errors import ImageBuildError, ServerStartError

pytestmark = pytest.mark.integration

# A tiny TCP server for the base image (perl-base is essential in Debian): greets with its port, then closes.
ECHO_PL = r"""
use IO::Socket::INET; use IO::Select; $| = 1;
my $sel = IO::Select->new;
for my $p (@ARGV) {
    my $s = IO::Socket::INET->new(LocalAddr => ($ENV{BIND} || "0.0.0.0"), LocalPort => $p, Listen => 16,
                                  ReuseAddr => 1) or die "cannot listen on $p: $!";
    $sel->add($s); print "listening on $p\n";
}
while (my @ready = $sel->can_read) {
    for my $s (@ready) {
        my $c = $s->accept or next;
        print $c "hello " . $s->sockport . ($ENV{PEER} ? " from " . $c->peerhost : "") . "\n"; close $c;
    }
}
"""


@pytest.fixture(scope="module")
def client():
    problem = runtime.engine_problem()
    if problem:
        pytest.skip(problem)
    return runtime.docker_client()


@pytest.fixture
def echo(tmp_path: Path) -> dict[str, dict[str, str]]:
    script = tmp_path / "echo.pl"
    script.write_text(ECHO_PL)
    return {str(script): {"bind": "/echo.pl", "mode": "ro"}}


@pytest.fixture
def name() -> Iterator[str]:
    """A unique container name prefix; asserts nothing with it is left afterwards."""
    prefix = f"mailtls-rt-test-{secrets.token_hex(3)}"
    yield prefix
    runtime.stop_all()
    assert _ours(prefix) == []


def _ours(prefix: str) -> list[str]:
    found = runtime.docker_client().api.containers(all=True, filters={"name": prefix})
    return [c["Names"][0] for c in found]


def _greeting(port: int, timeout: float = 15.0, host: str = "127.0.0.1") -> str:
    """The first line served on host:port, polling until the server inside answers."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=2) as sock:
                data = sock.makefile("rb").readline()
            if data:
                return data.decode().strip()
        except OSError as exc:
            last = exc
        time.sleep(0.05)  # docker-proxy accepts before the server inside listens
    raise AssertionError(f"no greeting on {host}:{port} within {timeout} s (last error: {last})")


def _start_echo(name: str, echo: dict, ports: list[int], **kwargs) -> runtime.Container:
    return runtime.start_container(
        runtime.BASE_IMAGE,
        name=name,
        ports=ports,
        volumes=echo,
        command=["perl", "/echo.pl", *map(str, ports)],
        **kwargs,
    )


# --------------------------------------------------------------------------- containers


def test_ports_logs_exec_and_stop(client, echo, name) -> None:
    container = _start_echo(name, echo, [2525, 1143], labels={"pytest-mailtls.server": "echo"})
    assert container.name.startswith(name + "-")
    assert container in runtime.running_containers()
    address = container.address  # 127.0.0.1: without a socket folder the ports are published
    assert _greeting(container.host_port(2525), host=address) == "hello 2525"
    assert _greeting(container.host_port(1143), host=address) == "hello 1143"
    with pytest.raises(KeyError, match="no port 993"):
        container.host_port(993)

    attrs = client.api.inspect_container(container.id)
    bindings = attrs["NetworkSettings"]["Ports"]
    assert address == "127.0.0.1" and container.sockets is None
    assert {b["HostIp"] for p in ("2525/tcp", "1143/tcp") for b in bindings[p]} == {"127.0.0.1"}
    labels = attrs["Config"]["Labels"]
    assert labels["pytest-mailtls"] == "1" and labels["pytest-mailtls.session"] == runtime.SESSION_ID
    assert labels["pytest-mailtls.pid"] == str(os.getpid()) and labels["pytest-mailtls.server"] == "echo"
    assert labels["org.testcontainers.lang"] == "python"  # created by testcontainers' DockerContainer

    assert "listening on 2525" in container.logs()
    code, output = container.exec(["sh", "-c", "echo out; echo err >&2; exit 3"])
    assert (code, sorted(output.splitlines())) == (3, ["err", "out"])  # both streams, in no fixed order
    assert container.exec(["cat", "/echo.pl"]) == (0, ECHO_PL)

    port = container.host_port(2525)
    container.stop()
    container.stop()  # idempotent
    assert not container.is_running()
    assert container not in runtime.running_containers()
    assert "listening on 1143" in container.logs()  # kept from before removal
    with pytest.raises(OSError), socket.create_connection((address, port), timeout=2) as sock:
        sock.recv(1)


def test_a_sealed_container_has_no_network_and_serves_through_its_sockets(client, echo, name, tmp_path) -> None:
    """Given a socket folder on a local engine, the container has no network (no address, nothing published);
    each port is a unix socket in the folder (0700), relayed to the server from 127.0.0.2; the entrypoint
    stays the container's main process, and the sockets are plain files that go with the folder."""
    from pytest_mailtls.upstream import dial

    if not runtime.sealed_routing():
        pytest.skip("the engine is not local (or MAILTLS_PUBLISH_PORTS is set): ports are published instead")
    sockets = tmp_path / "relay"
    container = _start_echo(name, echo, [2525, 1143], sockets=sockets, environment={"PEER": "1"})
    attrs = client.api.inspect_container(container.id)
    assert attrs["HostConfig"]["NetworkMode"] == "none" and not attrs["HostConfig"]["PortBindings"]
    assert [n.get("IPAddress") for n in attrs["NetworkSettings"]["Networks"].values()] == [""]
    assert container.sockets == sockets and sockets.stat().st_mode & 0o777 == 0o700
    for port in (2525, 1143):
        assert container.upstream(port) == (str(sockets / str(port)), port)
        deadline = time.monotonic() + 15
        line = ""
        while not line:
            assert time.monotonic() < deadline, "no greeting through the socket"
            with contextlib.suppress(OSError), dial(*container.upstream(port), timeout=2) as sock:
                line = sock.makefile("rb").readline().decode().strip()
            time.sleep(0.05)
        assert line == f"hello {port} from 127.0.0.2"
    assert sorted(p.name for p in sockets.iterdir()) == ["1143", "2525"]
    code, out = container.exec(["cat", "/proc/1/cmdline"])
    assert code == 0 and out.split("\0")[:2] == ["perl", "/echo.pl"], out
    container.stop()
    assert _ours(name) == []


def test_host_network_binds_loopback_without_publishing(client, echo, name) -> None:
    (port,) = runtime.free_ports(1)
    with _start_echo(name, echo, [port], host_network=True, environment={"BIND": "127.0.0.1"}) as container:
        assert container.host_port(port) == port
        assert _greeting(port) == f"hello {port}"
        assert client.api.inspect_container(container.id)["HostConfig"]["NetworkMode"] == "host"
    assert _ours(name) == []


def test_missing_image_fails_cleanly(client, name) -> None:
    with pytest.raises(ServerStartError, match=r"image mailtls-no-such-image:1 does not exist"):
        runtime.start_container("mailtls-no-such-image:1", name=name, ports=[25])
    assert _ours(name) == []


def test_failed_start_removes_the_container(client, name) -> None:
    with pytest.raises(ServerStartError) as info:
        runtime.start_container(runtime.BASE_IMAGE, name=name, ports=[25], command=["/no/such/program"])
    message = str(info.value)
    assert f"container {name}-" in message and "/no/such/program" in message and runtime.BASE_IMAGE in message
    assert _ours(name) == []
    assert runtime.running_containers() == []


def test_fixed_port_clash_is_reported_and_cleaned_up(client, echo, name) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        with pytest.raises(runtime.PortClashError, match=str(busy)):
            _start_echo(name, echo, [2525], host_ports={2525: busy})
        assert _ours(name) == []
    # Negative twin: the same fixed port, once free, is used as asked.
    with _start_echo(name, echo, [2525], host_ports={2525: busy}) as container:
        assert container.host_port(2525) == busy
        assert _greeting(busy) == "hello 2525"


# --------------------------------------------------------------------------- process exit and the reaper

CHILD = textwrap.dedent(
    """
    import sys, time
    from pytest_mailtls import runtime
    # Two containers: the exit paths must not depend on threads (none can start during shutdown).
    cs = [runtime.start_container(runtime.BASE_IMAGE, name=sys.argv[1], ports=[25], command=["sleep", "300"])
          for _ in range(2)]
    print(" ".join(c.id for c in cs), flush=True)
    if sys.argv[2] == "wait":
        time.sleep(300)
    """
)


def _child(name: str, mode: str) -> tuple[subprocess.Popen[str], list[str]]:
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, name, mode], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    container_ids = proc.stdout.readline().split()
    assert len(container_ids) == 2, proc.stderr.read() if proc.stderr else ""
    return proc, container_ids


def _exists(client, container_id: str) -> bool:
    return bool(client.api.containers(all=True, filters={"id": container_id}))


def _left(client, container_ids: list[str]) -> list[str]:
    return [cid for cid in container_ids if _exists(client, cid)]


def test_normal_exit_removes_containers(client, name) -> None:
    proc, container_ids = _child(name, "exit")
    assert proc.wait(timeout=60) == 0
    assert proc.stderr is not None and proc.stderr.read() == ""
    assert _left(client, container_ids) == []


def _networks_of(client, pid: int) -> list[str]:
    return [n["Name"] for n in client.api.networks(filters={"label": f"pytest-mailtls.pid={pid}"})]


def test_containers_share_a_network_of_their_own_without_inter_container_traffic(client, name) -> None:
    first = runtime.start_container(runtime.BASE_IMAGE, name=name, ports=[25], command=["sleep", "300"])
    second = runtime.start_container(runtime.BASE_IMAGE, name=name, ports=[25], command=["sleep", "300"])
    network = runtime.run_network()
    info = client.api.inspect_network(network)
    assert info["Options"]["com.docker.network.bridge.enable_icc"] == "false"
    assert info["Labels"]["pytest-mailtls.pid"] == str(os.getpid())
    for container in (first, second):
        networks = client.api.inspect_container(container.id)["NetworkSettings"]["Networks"]
        assert list(networks) == [network]
    first.stop()
    assert _networks_of(client, os.getpid()) == [network]  # still used by the second
    second.stop()
    assert _networks_of(client, os.getpid()) == []  # gone with the last container


def test_sigterm_removes_containers(client, name) -> None:
    proc, container_ids = _child(name, "wait")
    assert _left(client, container_ids) == container_ids
    assert _networks_of(client, proc.pid)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == -signal.SIGTERM  # still dies of the signal
    assert _left(client, container_ids) == []
    assert _networks_of(client, proc.pid) == []


def test_sigkill_leaves_an_orphan_that_the_reaper_removes(client, name) -> None:
    proc, container_ids = _child(name, "wait")
    proc.kill()
    proc.wait(timeout=60)
    try:
        assert _left(client, container_ids) == container_ids  # nothing in the process could clean up
        reaped = runtime.reap_orphans()
        # Another process's reaper (an xdist worker) may have been first; either way a reaper removed them.
        assert len([n for n in reaped if n.startswith(name)]) <= 2
        assert _left(client, container_ids) == []
        assert _networks_of(client, proc.pid) == []
    finally:
        for cid in _left(client, container_ids):
            client.api.remove_container(cid, force=True)


def test_reaper_only_removes_containers_of_dead_processes(client, name) -> None:
    sleeper = subprocess.Popen(["sleep", "300"])
    dead = subprocess.Popen(["true"])
    dead.wait()
    host = socket.gethostname()
    live_start = runtime._process_start(sleeper.pid)
    me = str(os.getuid())
    cases = {
        "dead": {"pid": str(dead.pid), "host": host, "uid": me},
        "reused-pid": {"pid": str(sleeper.pid), "pidstart": "1", "host": host, "uid": me},
        "live": {"pid": str(sleeper.pid), "pidstart": live_start, "host": host, "uid": me},
        "live-no-start": {"pid": str(sleeper.pid), "host": host, "uid": me},
        "other-host": {"pid": str(dead.pid), "host": "some-other-host", "uid": me},
        "other-user": {"pid": str(dead.pid), "host": host, "uid": str(os.getuid() + 4242)},
        "no-user": {"pid": str(dead.pid), "host": host},  # made by a version that did not say whose
        "no-pid": {"host": host, "uid": me},
    }
    ids: dict[str, str] = {}
    try:
        for case, extra in cases.items():
            labels = {"pytest-mailtls": "1", "pytest-mailtls.session": "other-session"}
            labels.update({f"pytest-mailtls.{k}": v for k, v in extra.items()})
            created = client.api.create_container(
                runtime.BASE_IMAGE, command=["sleep", "300"], name=f"{name}-{case}", labels=labels
            )
            ids[case] = created["Id"]
        reaped = runtime.reap_orphans()
        # Another process's reaper (an xdist worker) may have removed some orphans first: what matters is
        # that exactly the orphans are gone and everything else is left alone.
        assert {n.removeprefix(name + "-") for n in reaped if n.startswith(name)} <= {"dead", "reused-pid"}
        assert {case for case, cid in ids.items() if _exists(client, cid)} == set(cases) - {"dead", "reused-pid"}
    finally:
        sleeper.kill()
        sleeper.wait()
        for cid in ids.values():
            if _exists(client, cid):
                client.api.remove_container(cid, force=True)


# --------------------------------------------------------------------------- images


@pytest.fixture
def recipes(tmp_path: Path, client) -> Iterator[tuple[Path, str, list[str]]]:
    """(containers dir, a unique server name, tags to remove afterwards: children after their bases)."""
    root = tmp_path / "containers"
    server = f"rt-test-{secrets.token_hex(3)}"
    made: list[str] = []
    yield root, server, made
    for tag in reversed(made):
        if runtime._image_id(client, tag):
            client.api.remove_image(tag, force=True)
        Path(runtime._lock(f"base-{tag}").lock_file).unlink(missing_ok=True)
    Path(runtime._lock(f"image-{server}").lock_file).unlink(missing_ok=True)


def _write_recipe(root: Path, server: str, dockerfile: str, files: dict[str, str]) -> None:
    folder = root / server
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "Dockerfile").write_text(dockerfile)
    for rel, text in files.items():
        (folder / rel).write_text(text)


TINY = 'FROM debian:bookworm-slim\nCOPY hello.txt /hello.txt\nCMD ["cat", "/hello.txt"]\n'


def _run_image(client, tag: str) -> str:
    out = client.containers.run(tag, remove=True, labels={"pytest-mailtls": "1"}, network_disabled=True)
    return out.decode()


def test_ensure_image_builds_once_and_rebuilds_on_change(client, recipes) -> None:
    root, server, made = recipes
    _write_recipe(root, server, TINY, {"hello.txt": "one\n"})
    lines: list[str] = []
    tag = runtime.ensure_image(server, progress=lines.append, containers_dir=root)
    made.append(tag)
    assert tag.startswith(f"mailtls-{server}:")
    assert any(re.search(r"Step 2/\d+ : COPY hello.txt", line) for line in lines)
    assert _run_image(client, tag) == "one\n"
    image_id = runtime._image_id(client, tag)

    again: list[str] = []
    started = time.monotonic()
    assert runtime.ensure_image(server, progress=again.append, containers_dir=root) == tag
    assert again == [] and time.monotonic() - started < 2
    assert runtime._image_id(client, tag) == image_id

    (root / server / "hello.txt").write_text("two\n")
    changed: list[str] = []
    new_tag = runtime.ensure_image(server, progress=changed.append, containers_dir=root)
    made.append(new_tag)
    assert new_tag != tag and any("Step" in line for line in changed)
    assert _run_image(client, new_tag) == "two\n"


def test_failed_build_reports_the_output(client, recipes) -> None:
    root, server, _ = recipes
    _write_recipe(root, server, "FROM debian:bookworm-slim\nRUN echo about-to-fail && false\n", {})
    with pytest.raises(ImageBuildError) as info:
        runtime.ensure_image(server, containers_dir=root)
    message = str(info.value)
    assert "about-to-fail" in message and "non-zero code" in message and str(root / server) in message


def test_unknown_base_is_not_pulled(client, recipes) -> None:
    root, server, _ = recipes
    _write_recipe(root, server, "FROM mailtls-no-such-base:1\n", {})
    with pytest.raises(ImageBuildError, match="cannot be pulled"):
        runtime.ensure_image(server, containers_dir=root)


BUILDER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from pytest_mailtls import runtime
    tag = runtime.ensure_image(sys.argv[1], containers_dir=Path(sys.argv[2]), progress=lambda m: print("P", m))
    print("TAG", tag)
    """
)


def test_parallel_processes_build_once(client, recipes) -> None:
    root, server, made = recipes
    _write_recipe(root, server, TINY.replace("CMD", "RUN sleep 2\nCMD"), {"hello.txt": "parallel\n"})
    procs = [
        subprocess.Popen([sys.executable, "-c", BUILDER, server, str(root)], stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    tags = {line.split()[1] for out in outputs for line in out.splitlines() if line.startswith("TAG ")}
    made.extend(tags)
    assert len(tags) == 1
    builds = [line for out in outputs for line in out.splitlines() if line.startswith("P building image")]
    assert len(builds) == 1, outputs


@pytest.mark.skipif(os.geteuid() != 0, reason="debootstrap needs root")
def test_missing_base_is_made_with_debootstrap(client, recipes, monkeypatch: pytest.MonkeyPatch) -> None:
    """The whole path with a throwaway base tag (never the shared debian:bookworm-slim): about 40 s."""
    root, server, made = recipes
    base = f"mailtls-rt-test-base-{secrets.token_hex(3)}:bookworm"
    monkeypatch.setattr(runtime, "BASE_IMAGE", base)
    made.append(base)
    _write_recipe(root, server, TINY.replace("debian:bookworm-slim", base), {"hello.txt": "on the new base\n"})
    lines: list[str] = []
    tag = runtime.ensure_image(server, progress=lines.append, containers_dir=root)
    made.append(tag)
    assert any(line.startswith(f"creating the Debian base image {base}") for line in lines)
    assert any("Base system installed successfully" in line for line in lines)
    assert _run_image(client, tag) == "on the new base\n"
    assert client.api.inspect_image(base)["Config"]["Cmd"] == ["bash"]
    # The base itself is not rebuilt, and images on it do not change tag, while it exists.
    assert runtime.ensure_base_image(tag=base) == runtime._image_id(client, base)
    assert runtime.ensure_image(server, containers_dir=root) == tag


def test_prune_keeps_the_newest_image_of_each_server(client) -> None:
    # Only images of a throwaway repository, built here from nothing: other runs' images stay untouched.
    repo = f"mailtls-prunetest-{secrets.token_hex(4)}"
    made = []
    try:
        for age in ("old", "new"):  # built one after the other: "new" is the newer
            recipe = io.BytesIO(f"FROM scratch\nLABEL pytest-mailtls.prunetest={repo}-{age}\n".encode())
            image, _ = client.images.build(fileobj=recipe, tag=f"{repo}:{age}", rm=True)
            made.append(image)
        older, newer = made
        assert older.attrs["Created"] < newer.attrs["Created"]
        removed = runtime.prune_images(repositories=[repo])
        assert removed == [f"{repo}:old"]  # every tag it removed: none of another run's
        assert {t for i in client.images.list(name=repo) for t in i.tags} == {f"{repo}:new"}
    finally:
        for tag in (f"{repo}:old", f"{repo}:new"):
            with contextlib.suppress(Exception):
                client.images.remove(tag)
