"""Certification, one cell at a time against N at a time, on the same running grid, in one run.

    python benchmarks/bench_certify.py [--servers postfix,dovecot,james] [--select full] [--client python]
                                       [--workers 8]

Serves the selection once (through ``Grid``, so every cell has its session recorder), certifies the client
sequentially and then with ``--workers`` cells at once, and prints both wall times, the summed client time
(what the clients themselves spent) and whether every verdict, class and negotiated version is the same.
"""

from __future__ import annotations

import argparse
import time

from pytest_mailtls.certify import certify
from pytest_mailtls.clients import get_client
from pytest_mailtls.grid import Grid, choose_servers, parse_servers
from pytest_mailtls.matrix import load_matrix
from pytest_mailtls.report import Report


def _key(report: Report) -> list[tuple[str, str, str, str | None, str | None]]:
    return [
        (r.id, r.verdict, r.actual, r.diagnosis.failure_class if r.diagnosis else None, r.negotiated_version)
        for r in report.cells
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--servers", default=None)
    parser.add_argument("--select", default=None)
    parser.add_argument("--client", default="python")
    parser.add_argument("--workers", type=int, default=8)
    args = parser.parse_args(argv)
    servers = choose_servers(parse_servers(args.servers)).servers
    cells = load_matrix().cells(servers=servers, selection=args.select)
    client = get_client(args.client)
    with Grid(cells) as grid:

        def logs(endpoint):  # type: ignore[no-untyped-def]
            return grid.cell_logs(endpoint.id)

        print(f"{args.client} on {len(grid.endpoints)} cells of {','.join(servers)}")
        runs = {}
        for workers in (1, args.workers):
            start = time.perf_counter()
            report = certify(client, grid.endpoints, logs_for=logs, workers=workers)
            runs[workers] = (time.perf_counter() - start, report)
            client_time = sum(r.duration for r in report.cells)
            print(
                f"workers {workers:2d}: {runs[workers][0]:6.1f} s wall, {client_time:5.1f} s summed client time "
                f"({runs[workers][0] / client_time:.1f}x)"
            )
        (t1, r1), (tn, rn) = runs[1], runs[args.workers]
        same = _key(r1) == _key(rn)
        print(f"speed-up {t1 / tn:.1f}x; verdicts, classes and negotiated versions identical: {same}")
    client.close()
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
