"""How fast Postfix serves the whole Postfix grid: one container for every cell versus one container per cell.

    python benchmarks/bench_postfix.py [--repeat 5] [--sample 6] [--selection full] [--no-tests]

The image is built (or found) and every certificate of the session PKI made before timing, as in a test
session where the image is warm. A trial renders the configuration, starts a fresh container and waits
until every cell passed a real exchange (``readiness.wait_ready``: greeting and EHLO on plain cells, the
TLS handshake on the others), then removes it. Times are split into render (config files, PKI copies),
engine (create + start the container, publish the ports) and ready (container running -> every port
verified).

Per-cell mode starts a sample of cells spread over the grid, each in its own container, one after the
other, and extrapolates linearly to the whole grid; it also starts the same sample all at once.
Finally it times the integration module (tests/integration/test_postfix.py) as a pytest subprocess.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from pytest_mailtls import readiness, runtime
from pytest_mailtls.backends import servable
from pytest_mailtls.backends.base import StartOptions
from pytest_mailtls.backends.postfix import PostfixBackend
from pytest_mailtls.matrix import load_matrix
from pytest_mailtls.pki import SessionPKI
from pytest_mailtls.policy import Cell

REPO = Path(__file__).resolve().parent.parent


class _Clock:
    """Wraps runtime.start_container and readiness.wait_ready to time the engine and readiness phases."""

    def __init__(self) -> None:
        self.phases: dict[str, float] = {}

    def wrap(self, module: Any, name: str, phase: str) -> None:
        original: Callable[..., Any] = getattr(module, name)

        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.phases[phase] = time.perf_counter() - started

        setattr(module, name, timed)


CLOCK = _Clock()
CLOCK.wrap(runtime, "start_container", "engine")
CLOCK.wrap(readiness, "wait_ready", "ready")


def trial(cells: Sequence[Cell], pki: SessionPKI, workdir: Path) -> dict[str, float]:
    """One start of one container serving ``cells``; phase times in seconds and the container's size."""
    started = time.perf_counter()
    server = PostfixBackend().start(cells, StartOptions(pki=pki, workdir=workdir))
    total = time.perf_counter() - started
    phases = dict(CLOCK.phases)
    try:
        code, out = server.container.exec(["sh", "-c", "ls -d /proc/[0-9]* | wc -l"])
        processes = int(out.strip()) - 1 if code == 0 else -1  # without the counting shell itself
        stats = runtime.docker_client().api.stats(server.container.id, stream=False)
        memory = stats.get("memory_stats", {}).get("usage", 0) / 2**20
    finally:
        stopping = time.perf_counter()
        server.stop()
        stop = time.perf_counter() - stopping
    return {
        "render": total - phases["engine"] - phases["ready"],
        "engine": phases["engine"],
        "ready": phases["ready"],
        "total": total,
        "stop": stop,
        "processes": processes,
        "memory": memory,
    }


def spread(cells: Sequence[Cell], n: int) -> list[Cell]:
    """``n`` cells evenly spread over the grid (so every family is represented)."""
    n = max(1, min(n, len(cells)))
    step = len(cells) / n
    return [cells[int(i * step)] for i in range(n)]


def summary(label: str, values: Sequence[float]) -> str:
    if len(values) == 1:
        return f"{label:<34} {values[0]:7.3f} s"
    return (
        f"{label:<34} median {statistics.median(values):6.3f} s   "
        f"min {min(values):6.3f}   max {max(values):6.3f}   (n={len(values)})"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5, help="trials of the one-container grid (default 5)")
    parser.add_argument("--sample", type=int, default=6, help="cells started one container each (default 6)")
    parser.add_argument("--selection", default=None, help="matrix selection (default: the matrix's default)")
    parser.add_argument("--no-tests", action="store_true", help="skip timing the integration module")
    args = parser.parse_args(argv)

    problem = runtime.engine_problem()
    if problem:
        print(problem, file=sys.stderr)
        return 2
    cells = servable(load_matrix().cells(servers=["postfix"], selection=args.selection))
    with tempfile.TemporaryDirectory(prefix="mailtls-bench-postfix-") as tmp:
        root = Path(tmp)
        started = time.perf_counter()
        image = runtime.ensure_image("postfix", progress=print)
        print(f"image {image} ready in {time.perf_counter() - started:.2f} s")
        started = time.perf_counter()
        pki = SessionPKI(root / "pki")
        for profile in dict.fromkeys(c.cert for c in cells if c.cert is not None):
            pki.server_files(profile)
        pki.client_files()
        print(f"session PKI (every profile used) made in {time.perf_counter() - started:.2f} s (not timed below)")

        print(f"\n== one container for all {len(cells)} Postfix cells, {args.repeat} trials")
        trial(cells, pki, root / "warmup")  # first start pays for page cache and docker-proxy binaries
        grid = [trial(cells, pki, root / f"grid-{i}") for i in range(args.repeat)]
        for key, label in (
            ("render", "render + files"),
            ("engine", "engine: create + start + ports"),
            ("ready", "container started -> all verified"),
            ("total", "start() total"),
            ("stop", "stop (remove)"),
        ):
            print(summary(label, [g[key] for g in grid]))
        print(f"{'container size':<34} {grid[-1]['processes']:.0f} processes, {grid[-1]['memory']:.0f} MiB")

        sample = spread(cells, args.sample)
        print(f"\n== one container per cell: a sample of {len(sample)} of {len(cells)} cells")
        per_cell = [trial([c], pki, root / f"cell-{i}") for i, c in enumerate(sample)]
        for key, label in (("engine", "engine per container"), ("ready", "ready per container")):
            print(summary(label, [p[key] for p in per_cell]))
        print(summary("start() per container", [p["total"] for p in per_cell]))
        print(f"{'memory per container':<34} {statistics.median(p['memory'] for p in per_cell):.0f} MiB")
        mean = statistics.fmean(p["total"] for p in per_cell)
        print(
            f"extrapolated, {len(cells)} containers one after the other: {mean * len(cells):.1f} s "
            f"({len(cells)} x mean {mean:.3f} s; linear extrapolation, not measured)"
        )
        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=len(sample)) as pool:
            list(pool.map(lambda ic: trial([ic[1]], pki, root / f"par-{ic[0]}"), enumerate(sample)))
        print(
            f"measured, the {len(sample)} sampled containers started at once: "
            f"{time.perf_counter() - started:.2f} s (includes their removal)"
        )
        one = statistics.median(g["total"] for g in grid)
        print(f"\none container for the grid: {one:.2f} s; per-cell containers, sequential: ~{mean * len(cells):.1f} s")

    if not args.no_tests:
        print("\n== integration module: tests/integration/test_postfix.py")
        started = time.perf_counter()
        result = subprocess.run(
            [sys.executable, "-m", "pytest", "tests/integration/test_postfix.py", "-q", "-p", "no:cacheprovider"],
            cwd=REPO,
            capture_output=True,
            text=True,
        )
        wall = time.perf_counter() - started
        last = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else result.stderr[-300:]
        print(f"wall time {wall:.1f} s: {last}")
        if result.returncode != 0:
            return result.returncode
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
