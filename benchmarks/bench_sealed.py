"""What sealing a server container costs: start, connection set-up, throughput and removal, three ways.

    python benchmarks/bench_sealed.py [--ports 20] [--connections 300] [--megabytes 16] [--repeat 3]

A perl server of the local base image greets on each of ``--ports`` ports and echoes what it gets. It runs
three ways, interleaved round by round so that load drifts hit all alike:

- ``direct``: on the run's bridge network, nothing published, dialled at the container's own address (what a
  local engine did before sealing; it leaves every cell reachable from the host at that address);
- ``sealed``: no network, one unix socket per port, relayed inside the container from 127.0.0.2
  (``runtime.start_container(sockets=...)``, the default on a local engine now);
- ``published``: ports published on 127.0.0.1 (``MAILTLS_PUBLISH_PORTS=1``, the other engines' way).

Per round and way: start until every port greets, ``--connections`` sequential connections (connect, greeting,
one line echoed, close), ``--megabytes`` echoed through one connection, removal. Medians, and each way's ratio to
``direct``. Every container (and the socket folders) is removed at the end.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pytest_mailtls import runtime
from pytest_mailtls.upstream import dial

SERVER_PL = r"""
use IO::Socket::INET; use IO::Select; $SIG{CHLD} = "IGNORE"; $| = 1;
my $sel = IO::Select->new;
for my $p (@ARGV) {
    $sel->add(IO::Socket::INET->new(LocalAddr => "0.0.0.0", LocalPort => $p, Listen => 128, ReuseAddr => 1)
        or die "cannot listen on $p: $!");
}
while (1) {
    for my $s ($sel->can_read) {
        my $c = $s->accept or next;
        if (fork) { close $c; next }
        syswrite($c, "hello\n");
        while (my $n = sysread($c, my $buf, 65536)) { syswrite($c, $buf) }
        exit 0;
    }
}
"""

Dial = Callable[[int], socket.socket]


def _start(way: str, ports: list[int], script: Path, folder: Path) -> tuple[Any, Dial]:
    mount = {str(script): {"bind": "/server.pl", "mode": "ro"}}
    command = ["perl", "/server.pl", *map(str, ports)]
    if way == "direct":
        api = runtime.docker_client().api
        network = runtime.run_network()
        created = api.create_container(
            runtime.BASE_IMAGE,
            name=f"mailtls-bench-direct-{os.getpid()}-{time.monotonic_ns()}",
            command=command,
            labels=runtime.container_labels(),
            host_config=api.create_host_config(network_mode=network, binds=[f"{script}:/server.pl:ro"]),
        )
        api.start(created["Id"])
        address = api.inspect_container(created["Id"])["NetworkSettings"]["Networks"][network]["IPAddress"]
        return created["Id"], lambda port: socket.create_connection((address, port), timeout=10)
    if way == "published":
        os.environ["MAILTLS_PUBLISH_PORTS"] = "1"
    try:
        container = runtime.start_container(
            runtime.BASE_IMAGE, name="mailtls-bench", ports=ports, volumes=mount, command=command, sockets=folder
        )
    finally:
        os.environ.pop("MAILTLS_PUBLISH_PORTS", None)
    assert (container.sockets is not None) is (way == "sealed"), way
    return container, lambda port: dial(*container.upstream(port), timeout=10)


def _greet(connect: Dial, port: int) -> bool:
    try:
        with connect(port) as sock:
            return sock.recv(16) == b"hello\n"
    except OSError:
        return False


def _round(way: str, args: argparse.Namespace, script: Path, folder: Path) -> dict[str, float]:
    ports = list(range(10000, 10000 + args.ports))
    started = time.perf_counter()
    handle, connect = _start(way, ports, script, folder)
    try:
        for port in ports:
            while not _greet(connect, port):
                time.sleep(0.01)
        up = time.perf_counter() - started
        started = time.perf_counter()
        for n in range(args.connections):
            with connect(ports[n % len(ports)]) as sock:
                reader = sock.makefile("rb")
                assert reader.readline() == b"hello\n"
                sock.sendall(b"ping\n")
                assert reader.readline() == b"ping\n"
        per_connection = (time.perf_counter() - started) / args.connections
        block, total = os.urandom(65536), args.megabytes * 1024 * 1024
        started = time.perf_counter()
        with connect(ports[0]) as sock:
            assert sock.recv(6) == b"hello\n"
            sock.settimeout(30)
            sent = received = 0
            while received < total:
                if sent < total and sent - received < 1024 * 1024:
                    sock.sendall(block)
                    sent += len(block)
                received += len(sock.recv(1 << 20))
        rate = args.megabytes / (time.perf_counter() - started)
    finally:
        started = time.perf_counter()
        if isinstance(handle, str):
            runtime.docker_client().api.remove_container(handle, force=True)
        else:
            handle.stop()
        down = time.perf_counter() - started
    return {"start": up, "connection": per_connection, "MB/s": rate, "remove": down}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ports", type=int, default=20)
    parser.add_argument("--connections", type=int, default=300)
    parser.add_argument("--megabytes", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    if not runtime.sealed_routing():
        parser.exit(1, "bench_sealed: this engine cannot seal containers (not local, or MAILTLS_PUBLISH_PORTS set)\n")
    ways = ("direct", "sealed", "published")
    results: dict[str, list[dict[str, float]]] = {way: [] for way in ways}
    with tempfile.TemporaryDirectory(prefix="mailtls-bench-") as tmp:
        script = Path(tmp) / "server.pl"
        script.write_text(SERVER_PL)
        script.chmod(0o644)
        Path(tmp).chmod(0o755)
        try:
            for n in range(args.repeat):
                for way in ways:
                    results[way].append(_round(way, args, script, Path(tmp) / f"{way}-{n}"))
        finally:
            runtime.stop_all()
    keys = ("start", "connection", "MB/s", "remove")
    medians = {way: {k: statistics.median(r[k] for r in results[way]) for k in keys} for way in ways}
    print(f"{args.ports} ports, {args.connections} connections, {args.megabytes} MB; median of {args.repeat}")
    print(f"{'way':10} {'start s':>9} {'conn ms':>9} {'MB/s':>8} {'remove s':>9}   ratios to direct")
    base = medians["direct"]
    for way in ways:
        m = medians[way]
        ratios = " ".join(f"{k} {m[k] / base[k]:.2f}" for k in keys)
        print(
            f"{way:10} {m['start']:9.3f} {m['connection'] * 1000:9.2f} {m['MB/s']:8.0f} {m['remove']:9.3f}   {ratios}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
