"""What the session recorder costs: per-connection latency and message rate, through it and around it, in one run.

    python benchmarks/bench_recorder.py [--server postfix|embedded] [--connections 300] [--messages 200]

Serves one STARTTLS submission cell (Postfix when an engine answers, else the embedded backend) through
``Grid``, so the cell has a recorder in front of it; the server's own port stays reachable as
``extra["upstream_host"]``/``extra["upstream_port"]``. Then, interleaving the two paths so that load drifts hit both alike:

* latency: connect, read the greeting, ``QUIT``, close (the recorder's share of a connection), and a
  whole STARTTLS handshake; medians and the difference;
* message rate: ``--messages`` messages from 2 processes of 2 threads, each its own connection (EHLO, STARTTLS, AUTH,
  MAIL, RCPT, DATA, QUIT), direct and through the recorder; messages per second and the ratio.
"""

from __future__ import annotations

import argparse
import multiprocessing
import smtplib
import socket
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import replace

from pytest_mailtls.grid import Grid, choose_servers
from pytest_mailtls.manifest import Endpoint
from pytest_mailtls.matrix import load_matrix
from pytest_mailtls.upstream import dial


def _greeting(host: str, port: int) -> float:
    start = time.perf_counter()
    with dial(host, port, timeout=5) as sock:
        f = sock.makefile("rb")
        f.readline()
        sock.sendall(b"QUIT\r\n")
        f.readline()
    return time.perf_counter() - start


class _SMTP(smtplib.SMTP):
    """smtplib dialling through :func:`dial`: the server's own end may be a sealed container's unix socket."""

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        return dial(host, port, timeout)


def _smtp(endpoint: Endpoint, timeout: float) -> smtplib.SMTP:
    smtp = _SMTP(timeout=timeout)
    smtp.connect(endpoint.host, endpoint.port)
    smtp._host = endpoint.server_hostname  # verify the certificate's name, whatever address was dialled
    return smtp


def _handshake(endpoint: Endpoint) -> float:
    start = time.perf_counter()
    with _smtp(endpoint, 10) as smtp:
        smtp.starttls(context=endpoint.client_context())
    return time.perf_counter() - start


def _send(endpoint: Endpoint, n: int) -> None:
    with _smtp(endpoint, 20) as smtp:
        smtp.starttls(context=endpoint.client_context())
        smtp.login(endpoint.username, endpoint.password)
        smtp.sendmail(endpoint.address, [endpoint.address], f"Subject: bench {n}\r\n\r\nbody\r\n".encode())


def _send_many(endpoint: Endpoint, numbers: list[int]) -> None:
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda n: _send(endpoint, n), numbers))


def _rate(endpoint: Endpoint, messages: int) -> float:
    # Senders are other processes, as real clients are: the recorder's thread does not share their GIL.
    start = time.perf_counter()
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("fork")) as pool:
        list(pool.map(_send_many, [endpoint, endpoint], [list(range(0, messages, 2)), list(range(1, messages, 2))]))
    return messages / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", choices=["postfix", "embedded"], default=None)
    parser.add_argument("--connections", type=int, default=300)
    parser.add_argument("--messages", type=int, default=200)
    args = parser.parse_args(argv)
    server = args.server or ("postfix" if choose_servers(None).engine_problem is None else "embedded")
    cells = [
        c
        for c in load_matrix().cells(servers=[server])
        if c.service.name == "submission"
        and str(c.mode) == "starttls"
        and c.policy
        and c.policy.name == "intermediate"
        and str(c.cert) == "valid"
        and c.auth.name == "default"
    ][:1]
    if not cells:
        print("no submission STARTTLS intermediate/valid cell in the matrix", file=sys.stderr)
        return 1
    with Grid(cells) as grid:
        relayed = grid.endpoints[0]
        # The server's own end: a published port on 127.0.0.1, or a sealed container's unix socket.
        host = str(relayed.extra.get("upstream_host", relayed.host))
        direct = replace(relayed, host=host, port=int(relayed.extra["upstream_port"]))
        print(f"{server}: cell {relayed.id}; recorder port {relayed.port}, server port {direct.port}")
        for endpoint in (direct, relayed):  # warm up both paths
            _handshake(endpoint)
        times: dict[str, list[float]] = {"direct": [], "recorder": []}
        hs: dict[str, list[float]] = {"direct": [], "recorder": []}
        for _ in range(args.connections):
            times["direct"].append(_greeting(direct.host, direct.port))
            times["recorder"].append(_greeting(relayed.host, relayed.port))
        for _ in range(max(20, args.connections // 5)):
            hs["direct"].append(_handshake(direct))
            hs["recorder"].append(_handshake(relayed))
        for what, data in (("greeting + QUIT", times), ("STARTTLS handshake", hs)):
            d, r = statistics.median(data["direct"]), statistics.median(data["recorder"])
            print(
                f"{what:20s} median direct {d * 1000:7.3f} ms, through the recorder {r * 1000:7.3f} ms: "
                f"+{(r - d) * 1000:.3f} ms per connection ({len(data['direct'])} each)"
            )
        per_message: dict[str, list[float]] = {"direct": [], "recorder": []}
        for n in range(max(20, args.messages // 4)):  # one message at a time, alternating the paths
            for name, endpoint in (("direct", direct), ("recorder", relayed)):
                start = time.perf_counter()
                _send(endpoint, n)
                per_message[name].append(time.perf_counter() - start)
        d, r = statistics.median(per_message["direct"]), statistics.median(per_message["recorder"])
        print(
            f"one message (STARTTLS, AUTH, send)  median direct {d * 1000:7.3f} ms, through the recorder "
            f"{r * 1000:7.3f} ms: +{(r - d) * 1000:.3f} ms ({len(per_message['direct'])} each, alternating)"
        )
        rates: dict[str, list[float]] = {"direct": [], "recorder": []}
        batch = max(20, args.messages // 10)
        for _ in range(max(1, args.messages // batch)):  # short batches, alternating, so load drifts hit both
            rates["direct"].append(_rate(direct, batch))
            rates["recorder"].append(_rate(relayed, batch))
        d, r = statistics.median(rates["direct"]), statistics.median(rates["recorder"])
        print(
            f"message rate ({len(rates['direct'])} alternating batches of {batch}, 2 processes x 2 threads, a connection "
            f"each): median direct {d:.1f} msg/s, "
            f"through the recorder {r:.1f} msg/s: ratio {r / d:.3f}"
        )
        recorded = len(relayed.sessions(since=0, wait=5))
        print(f"sessions recorded: {recorded}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
