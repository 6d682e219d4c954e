"""How fast one Dovecot container serves the whole Dovecot grid: start to every port verified.

    python benchmarks/bench_dovecot.py [--repeat 5] [--selection full]

The image is built (or found) and the session PKI made before timing, as in a test session where the
image is warm. Each trial renders the configuration, starts a fresh container and waits until every
cell passed a real exchange (greeting and capabilities on plain cells, the TLS handshake on the others:
``readiness.wait_ready``); then it counts the container's processes and memory and removes it.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from pytest_mailtls import runtime
from pytest_mailtls.backends import servable
from pytest_mailtls.backends.base import StartOptions
from pytest_mailtls.backends.dovecot import DovecotBackend
from pytest_mailtls.matrix import load_matrix
from pytest_mailtls.pki import SessionPKI


def _trial(cells: list, pki: SessionPKI, workdir: Path) -> dict[str, float]:
    marks: dict[str, float] = {}

    def progress(line: str) -> None:
        if "starting one container" in line:
            marks["rendered"] = time.perf_counter()
        elif "cells ready in" in line:
            marks["ready_s"] = float(line.split("ready in ")[1].split(" s")[0])

    started = time.perf_counter()
    server = DovecotBackend().start(cells, StartOptions(pki=pki, workdir=workdir, progress=progress))
    total = time.perf_counter() - started
    try:
        code, out = server.container.exec(["sh", "-c", "ls -d /proc/[0-9]* | wc -l"])
        processes = int(out.strip()) - 1 if code == 0 else -1  # without the counting shell itself
        stats = runtime.docker_client().api.stats(server.container.id, stream=False)
        memory = stats.get("memory_stats", {}).get("usage", 0) / 2**20
    finally:
        stopping = time.perf_counter()
        server.stop()
        stop = time.perf_counter() - stopping
    render = marks["rendered"] - started
    ready = marks["ready_s"]
    return {
        "render": render,
        "engine": total - render - ready,
        "ready": ready,
        "total": total,
        "stop": stop,
        "processes": processes,
        "memory": memory,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--selection", default=None, help="matrix selection (default: the matrix's default)")
    args = parser.parse_args(argv)
    cells = servable(load_matrix().cells(servers=["dovecot"], selection=args.selection))
    image_started = time.perf_counter()
    image = runtime.ensure_image("dovecot", progress=print)
    image_s = time.perf_counter() - image_started
    with tempfile.TemporaryDirectory(prefix="bench-dovecot-") as tmp:
        base = Path(tmp)
        pki_started = time.perf_counter()
        pki = SessionPKI(base / "pki")
        for cell in cells:
            if cell.cert is not None:
                pki.server_files(cell.cert)
        if any(c.auth.client_cert for c in cells):
            pki.client_files()
        pki_s = time.perf_counter() - pki_started
        profiles = len({c.cert for c in cells if c.cert is not None})
        print(f"image {image} ready in {image_s:.2f} s; session PKI ({profiles} profiles) made in {pki_s:.2f} s")
        print(f"{len(cells)} Dovecot cells in ONE container, {args.repeat} trials")
        head = f"{'trial':>5} {'render':>7} {'engine':>7} {'ready':>7} {'TOTAL':>7} {'stop':>6} {'procs':>6} {'MiB':>6}"
        print(head)
        results = []
        try:
            for n in range(args.repeat):
                r = _trial(cells, pki, base / f"trial-{n}")
                results.append(r)
                print(
                    f"{n + 1:>5} {r['render']:>7.3f} {r['engine']:>7.3f} {r['ready']:>7.3f} {r['total']:>7.3f} "
                    f"{r['stop']:>6.2f} {r['processes']:>6.0f} {r['memory']:>6.1f}"
                )
        finally:
            runtime.stop_all()
    med = {k: statistics.median(r[k] for r in results) for k in results[0]}
    print(
        f"{'med':>5} {med['render']:>7.3f} {med['engine']:>7.3f} {med['ready']:>7.3f} {med['total']:>7.3f} "
        f"{med['stop']:>6.2f} {med['processes']:>6.0f} {med['memory']:>6.1f}"
    )
    print(
        "render = write configuration and PKI copies; engine = create + start the container (ports published); "
        "ready = from start until every cell passed its greeting/handshake; TOTAL = DovecotBackend.start()"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
