"""A run's servers are reachable only through their 127.0.0.1 ports.

One small grid (two cells each of Postfix, Dovecot and James) runs in each mode: *sealed* (a local engine:
the containers have no network, each cell port is a unix socket in the run's temp dir) and *published*
(``MAILTLS_PUBLISH_PORTS=1``, as on Docker Desktop, rootless or remote engines: ports published on 127.0.0.1,
a run network with inter-container traffic off). Neighbouring containers on the same engine, one on the default
bridge and one on a network of their own (the run's, when it has one), try every port every server listens on
(read from the container's /proc/net/tcp, plus LMTP's 24 and the mail ports) at every address the engine
reports for the server containers, and every 127.0.0.1 port of the run by the host's addresses: nothing
answers. Each probe is proved able to connect by a control listener it does reach. From the host every cell
answers on 127.0.0.1 and on no other address, the containers' included. The relay's address (127.0.0.2) earns
no trust: mail and logins are refused before TLS and AUTH exactly as the policies say. Keys on the host are
the owner's alone.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pytest_mailtls import runtime, upstream
from pytest_mailtls.grid import Grid
from pytest_mailtls.matrix import load_matrix

from .cellchecks import needs_engine

pytestmark = pytest.mark.integration

# Connects to every HOST:PORT argument at once (one process each, 1.5 s each at most) and prints
# "HOST:PORT open|closed". With CONTROL=port it first listens there itself, so that the probe's own
# address answers: proof that the probe and its network work. perl-base is part of the Debian base.
PROBE_PL = r"""
use IO::Socket::INET; $| = 1;
if (my $port = $ENV{CONTROL}) {
    my $server = IO::Socket::INET->new(LocalAddr => "0.0.0.0", LocalPort => $port, Listen => 16, ReuseAddr => 1)
        or die "control: $!";
    if (!fork) { while (my $c = $server->accept) { close $c } exit 0 }
}
my @kids;
for my $target (@ARGV) {
    my $pid = fork;
    if (!$pid) {
        my ($host, $port) = split /:/, $target;
        $host = $ENV{HOSTNAME} if $host eq "self";  # the engine maps the container's name to its address
        my $s = IO::Socket::INET->new(PeerAddr => $host, PeerPort => $port, Proto => "tcp", Timeout => 1.5);
        print "$target ", ($s ? "open" : "closed"), "\n";
        exit 0;
    }
    push @kids, $pid;
}
waitpid($_, 0) for @kids;
"""
CONTROL_PORT = 7
#: Ports mail servers use by default, probed on every container even though no cell uses them.
WELL_KNOWN = (24, 25, 110, 143, 465, 587, 993, 995, 4190, 8000)


@pytest.fixture(scope="module", params=["sealed", "published"])
def grid(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Grid]:
    needs_engine()
    if request.param == "sealed" and not runtime.sealed_routing():
        pytest.skip("the engine is not local (or MAILTLS_PUBLISH_PORTS is set): ports are published instead")
    published = request.param == "published"
    mp = pytest.MonkeyPatch()
    if published:
        mp.setenv("MAILTLS_PUBLISH_PORTS", "1")
    picked: dict[str, list[Any]] = {}
    for cell in load_matrix().cells(servers=["postfix", "dovecot", "james"], selection="quick"):
        if len(picked.setdefault(cell.server, [])) < 2:
            picked[cell.server].append(cell)
    cells = [c for group in picked.values() for c in group]
    try:
        with Grid(cells, workdir=tmp_path_factory.mktemp("isolation"), ready_timeout=120) as running:
            assert runtime.sealed_routing() is not published
            yield running
    finally:
        mp.undo()


def _sealed(grid: Grid) -> bool:
    return all(upstream.is_socket(str(e.extra["upstream_host"])) for e in grid.endpoints)


def _containers(grid: Grid) -> list[runtime.Container]:
    return [c for c in runtime.running_containers() if any(c.name == e.extra.get("container") for e in grid.endpoints)]


def _listening(container: runtime.Container) -> set[int]:
    """TCP ports the container listens on for other hosts (loopback listeners, such as Docker's DNS at
    127.0.0.11, cannot be reached from outside and are left out)."""
    code, out = container.exec(["cat", "/proc/net/tcp", "/proc/net/tcp6"])
    assert code == 0, out
    ports = set()
    for line in out.splitlines():
        fields = line.split()
        if len(fields) < 4 or fields[3] != "0A":  # 0A = LISTEN
            continue
        address, port = fields[1].rsplit(":", 1)
        if address in ("0100007F", "0B00007F", "00000000000000000000000001000000"):
            continue
        ports.add(int(port, 16))
    return ports


def _attrs(container: runtime.Container) -> dict[str, Any]:
    attrs: dict[str, Any] = runtime.docker_client().api.inspect_container(container.id)
    return attrs


def _addresses(container: runtime.Container) -> list[str]:
    """Every address the engine reports for ``container``, on any network."""
    networks = _attrs(container)["NetworkSettings"]["Networks"] or {}
    found = [n.get(key) for n in networks.values() for key in ("IPAddress", "GlobalIPv6Address")]
    return sorted(a for a in found if a)


def _probe(network: str, targets: list[str]) -> dict[str, str]:
    client = runtime.docker_client()
    out = client.containers.run(
        runtime.BASE_IMAGE,
        ["perl", "-e", PROBE_PL, *targets, "self:7"],
        environment={"CONTROL": str(CONTROL_PORT)},
        network=network,
        labels=runtime.container_labels({"pytest-mailtls.role": "isolation-probe"}),
        remove=True,
    )
    lines = out.decode().split("\n")
    return dict(line.split(" ", 1) for line in lines if " " in line)


def _host_ports(grid: Grid) -> list[int]:
    """Every port of the run on the host: each cell's, and the published port it forwards to when a
    recorder sits in front (``extra["upstream_port"]``)."""
    ports = {e.port for e in grid.endpoints}
    # Published ports only: sealed, the recorder dials a unix socket.
    ports |= {
        int(e.extra["upstream_port"])
        for e in grid.endpoints
        if e.extra.get("upstream_port") and e.extra.get("upstream_host") == "127.0.0.1"
    }
    return sorted(ports)


def _gateway(network: str) -> str:
    config = runtime.docker_client().api.inspect_network(network)["IPAM"]["Config"][0]
    if config.get("Gateway"):
        return str(config["Gateway"])
    # The default bridge does not always list it: the engine gives the bridge the subnet's first address.
    return str(next(ipaddress.ip_network(config["Subnet"]).hosts()))


def _host_addresses() -> set[str]:
    """IPv4 addresses of this host other than loopback: its interfaces, the Docker bridges' gateways."""
    found = set()
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(["hostname", "-I"], capture_output=True, text=True, timeout=10).stdout
        found |= {a for a in out.split() if "." in a}
    with contextlib.suppress(OSError):
        found |= {i[4][0] for i in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)}
    return {a for a in found if not a.startswith("127.")}


def test_servers_are_sealed_or_on_the_runs_own_network_with_inter_container_traffic_off(grid: Grid) -> None:
    containers = _containers(grid)
    assert len(containers) == 3
    for container in containers:
        attrs = _attrs(container)
        bindings = attrs["HostConfig"]["PortBindings"]
        if _sealed(grid):
            # No network at all: no address anything could dial, nothing published; a socket per cell port.
            assert attrs["HostConfig"]["NetworkMode"] == "none" and not bindings, bindings
            assert _addresses(container) == []
            assert container.sockets is not None and container.sockets.stat().st_mode & 0o777 == 0o700
            assert container.sockets.is_relative_to(grid.workdir), "inside the run's registered temp dir"
            cells = [e for e in grid.endpoints if e.extra.get("container") == container.name]
            assert {str(e.extra["upstream_host"]) for e in cells} == {
                str(container.sockets / str(e.extra["container_port"])) for e in cells
            }
            continue
        network = runtime.run_network()
        options = runtime.docker_client().api.inspect_network(network)["Options"]
        assert options.get("com.docker.network.bridge.enable_icc") == "false"
        assert list(attrs["NetworkSettings"]["Networks"]) == [network], "no address on the default bridge"
        assert bindings and all(b["HostIp"] == "127.0.0.1" for spec in bindings.values() for b in spec)


def test_dovecot_takes_lmtp_on_its_socket_only(grid: Grid) -> None:
    dovecot = next(c for c in _containers(grid) if "dovecot" in c.name)
    ports = _listening(dovecot)
    assert 24 not in ports
    assert ports == {int(e.extra["container_port"]) for e in grid.endpoints if e.cell.server == "dovecot"}
    _code, out = dovecot.exec(["sh", "-c", "test -S /mailtls/sockets/lmtp && echo socket"])
    assert out.strip() == "socket", out


def test_no_server_listens_beyond_its_cells(grid: Grid) -> None:
    for container in _containers(grid):
        cells = {int(e.extra["container_port"]) for e in grid.endpoints if e.extra.get("container") == container.name}
        assert _listening(container) == cells, container.name


@contextlib.contextmanager
def _neighbour_network(grid: Grid, where: str) -> Iterator[str]:
    """The default bridge, or the run's own network (published mode) or a fresh one (sealed: the run has none)."""
    if where == "default-bridge":
        yield "bridge"
    elif not _sealed(grid):
        yield runtime.run_network()
    else:
        api = runtime.docker_client().api
        name = f"mailtls-neighbour-{uuid.uuid4().hex[:8]}"
        api.create_network(name, driver="bridge", labels=runtime.container_labels())
        try:
            yield name
        finally:
            api.remove_network(name)


@pytest.mark.parametrize("where", ["default-bridge", "own-network"])
def test_no_neighbouring_container_reaches_any_server(grid: Grid, where: str) -> None:
    targets = []
    with _neighbour_network(grid, where) as network:
        for container in _containers(grid):
            ports = sorted(_listening(container) | set(WELL_KNOWN))
            targets += [f"{address}:{port}" for address in _addresses(container) for port in ports]
        # The host as a neighbour sees it, on every port of the run (bound to 127.0.0.1 only), and on the
        # mail ports (nothing of the run listens there on the host).
        for port in sorted(set(_host_ports(grid)) | set(WELL_KNOWN)):
            targets.append(f"{_gateway(network)}:{port}")
        seen = _probe(network, targets)
    assert seen.pop("self:7") == "open", "the probe reaches its own control listener"
    assert set(seen) == set(targets)
    assert [t for t, state in seen.items() if state != "closed"] == []


def test_a_neighbour_on_the_default_bridge_does_reach_a_container_there(grid: Grid) -> None:
    """The positive twin: on the default bridge (inter-container traffic on) the same probe does connect,
    so "closed" above is the network's doing, not the probe's."""
    client = runtime.docker_client()
    listen = (
        "use IO::Socket::INET; my $s = IO::Socket::INET->new(LocalPort => 2525, Listen => 5) or die; 1 while $s->accept"
    )
    control = client.containers.run(
        runtime.BASE_IMAGE,
        ["perl", "-e", listen],
        labels=runtime.container_labels({"pytest-mailtls.role": "isolation-control"}),
        detach=True,
    )
    try:
        control.reload()
        address = control.attrs["NetworkSettings"]["Networks"]["bridge"]["IPAddress"]
        for _ in range(50):
            seen = _probe("bridge", [f"{address}:2525"])
            if seen.get(f"{address}:2525") == "open":
                break
        assert seen[f"{address}:2525"] == "open"
    finally:
        control.remove(force=True)


def test_from_the_host_every_cell_answers_on_127_0_0_1_and_on_no_other_address(grid: Grid) -> None:
    addresses = _host_addresses() | {_gateway("bridge")}
    if not _sealed(grid):
        addresses.add(_gateway(runtime.run_network()))
    for port in _host_ports(grid):
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass
        for address in sorted(addresses):
            with pytest.raises(OSError), socket.create_connection((address, port), timeout=1.5):
                pass


def test_from_the_host_no_server_port_answers_at_any_container_address(grid: Grid) -> None:
    """Every address the engine reports for a server container (sealed: there is none), on every port the
    server listens on and the mail ports: refused or unreachable."""
    if not _sealed(grid) and runtime._gateway_is_local(runtime.run_network()):
        pytest.skip("published ports on a local engine: this host routes to the bridge (sealed mode closes that)")
    tried = []
    for container in _containers(grid):
        addresses = _addresses(container)
        assert (addresses == []) is _sealed(grid), addresses
        for address in addresses:
            for port in sorted(_listening(container) | set(WELL_KNOWN)):
                tried.append(f"{address}:{port}")
                with pytest.raises(OSError), socket.create_connection((address, port), timeout=1.5):
                    pass
    assert bool(tried) is not _sealed(grid)


def _smtp_reply(sock: socket.socket, reader: Any, command: str | None = None) -> str:
    """The last line of the server's (possibly multi-line) reply, to ``command`` if given."""
    if command is not None:
        sock.sendall(command.encode() + b"\r\n")
    last = ""
    while last[3:4] != " ":
        last = reader.readline().decode()
        assert last, f"connection closed after {command!r}"
    return last


def test_the_relay_address_earns_no_trust(grid: Grid) -> None:
    """Through the recorder (and, sealed, the relay from 127.0.0.2) the servers treat the client as the
    outsider it is: before STARTTLS and AUTH, Postfix and James refuse mail to an outside domain, and Dovecot
    keeps LOGIN disabled (a connection it took as local would count as secured). Postfix names 127.0.0.2."""
    for server in ("postfix", "james"):
        endpoint = next(e for e in grid.endpoints if e.cell.server == server)
        assert endpoint.cell.auth.required and endpoint.mode == "starttls"
        with socket.create_connection(("127.0.0.1", endpoint.port), timeout=10) as sock:
            reader = sock.makefile("rb")
            assert _smtp_reply(sock, reader).startswith("220")
            assert _smtp_reply(sock, reader, "EHLO neighbour.example").startswith("250")
            mail = _smtp_reply(sock, reader, "MAIL FROM:<someone@example.org>")
            rcpt = _smtp_reply(sock, reader, "RCPT TO:<elsewhere@example.net>")
            assert mail[:1] == "5" and rcpt[:1] == "5", (server, mail, rcpt)
    endpoint = next(e for e in grid.endpoints if e.cell.server == "dovecot")
    assert endpoint.protocol == "imap" and endpoint.mode == "starttls" and endpoint.cell.auth.tls_only
    with socket.create_connection(("127.0.0.1", endpoint.port), timeout=10) as sock:
        reader = sock.makefile("rb")
        assert reader.readline().startswith(b"* OK")
        lines = []
        for tag, command in ((b"a", b"CAPABILITY"), (b"b", f"LOGIN {endpoint.username} {endpoint.password}".encode())):
            sock.sendall(tag + b" " + command + b"\r\n")
            while not (lines and lines[-1].startswith(tag + b" ")):
                lines.append(reader.readline())
                assert lines[-1], lines
    capability = next(line for line in lines if line.startswith(b"* CAPABILITY"))
    assert b"LOGINDISABLED" in capability and b"AUTH=PLAIN" not in capability, capability
    assert lines[-1].startswith((b"b NO", b"b BAD")), lines  # the right password, refused in clear
    if _sealed(grid):
        assert "[127.0.0.2]" in grid.logs("postfix")


def test_keys_and_keystores_on_the_host_are_the_owners_alone(grid: Grid) -> None:
    keystores = [*grid.workdir.rglob("*.keystore.jks")]  # James' (one per certificate profile)
    secrets = [*grid.workdir.rglob("key.pem"), *keystores, *grid.pki.directory.rglob("key.pem")]
    assert keystores and len(secrets) >= 4
    assert {str(p): oct(p.stat().st_mode & 0o777) for p in secrets if p.stat().st_mode & 0o077} == {}
    assert grid.pki.directory.stat().st_mode & 0o077 == 0
    assert Path(grid.workdir / runtime.DIR_MARKER).exists(), "the work dir is registered like the containers"
