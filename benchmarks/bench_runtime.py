"""What publishing ports costs: container start-to-mapped and removal time against the number of ports.

    python benchmarks/bench_runtime.py [--repeat 3]

Runs ``sleep`` containers of the local base image (nothing listens; this measures the engine only):
one container with N published ports, the same ports split over several containers started in
parallel, and host networking (nothing published). Every container is removed at the end.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from pytest_mailtls import runtime


def _trial(split: Sequence[int], host_network: bool) -> tuple[float, float]:
    def start(count: int) -> runtime.Container:
        ports = runtime.free_ports(count) if host_network else list(range(10001, 10001 + count))
        return runtime.start_container(
            runtime.BASE_IMAGE,
            name="mailtls-bench",
            ports=ports,
            command=["sleep", "120"],
            host_network=host_network,
        )

    started = time.perf_counter()
    with ThreadPoolExecutor(len(split)) as pool:
        list(pool.map(start, split))
    up = time.perf_counter() - started
    started = time.perf_counter()
    runtime.stop_all()
    return up, time.perf_counter() - started


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    runtime.docker_client()
    cases: list[tuple[str, list[int], bool]] = [
        ("no ports", [0], False),
        ("1 port", [1], False),
        ("10 ports", [10], False),
        ("40 ports, 1 container", [40], False),
        ("40 ports, 3 containers", [14, 13, 13], False),
        ("40 ports, host network", [40], True),
        ("3 containers, host network", [14, 13, 13], True),
    ]
    print(f"{'case':32} {'start->mapped':>14} {'remove':>8}   (median of {args.repeat})")
    try:
        for label, split, host in cases:
            results = [_trial(split, host) for _ in range(args.repeat)]
            up = statistics.median(r[0] for r in results)
            down = statistics.median(r[1] for r in results)
            print(f"{label:32} {up:13.3f}s {down:7.3f}s")
    finally:
        runtime.stop_all()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
