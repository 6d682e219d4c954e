"""The cost of the certificate profiles: the session PKI with the ten older profiles against all of them, and
(with ``--grid``) a grid start of one server's certificate-fault cells with the older profiles against all.

    python benchmarks/bench_pki.py [--rounds 5] [--grid postfix]
    python benchmarks/bench_pki.py --pool [--rounds 7]   # SessionPKI.prepare (key pool) against one by one
    python benchmarks/bench_pki.py --baseline PATH [--rounds 7]   # every profile: PATH's code against this tree's

Each round makes a fresh PKI (CA included) with the older profiles, then another with every profile, in
alternation, so both see the same load; prints the median of each and their ratio. ``--grid SERVER`` then
starts the ``certificate-faults`` block of the default matrix on SERVER twice (older profiles, every
profile; fresh PKI each) and prints the time to ready. ``--pool`` makes every profile (and the client
certificate) with :meth:`SessionPKI.prepare`, which a grid's start calls (a second process makes RSA keys
alongside), against the same profiles one by one in this process, alternating. ``--baseline PATH`` makes
every profile and the client certificate the way a grid's start does, in fresh processes, with PATH's code
(a checkout or ``git archive`` of an older commit) and with this tree's, alternating.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pytest_mailtls.grid import Grid
from pytest_mailtls.matrix import load_matrix
from pytest_mailtls.pki import SessionPKI
from pytest_mailtls.policy import CertProfile

#: The profiles before the faults of issue 14.
OLDER = tuple(
    CertProfile(p)
    for p in (
        "valid",
        "ecdsa-p256",
        "expired",
        "not-yet-valid",
        "wrong-host",
        "self-signed",
        "untrusted-ca",
        "missing-intermediate",
        "weak-rsa-1024",
        "sha1-signature",
    )
)


def _make(profiles: tuple[CertProfile, ...]) -> float:
    with tempfile.TemporaryDirectory(prefix="bench-pki-") as tmp:
        started = time.perf_counter()
        pki = SessionPKI(Path(tmp) / "pki")
        for profile in profiles:
            pki.server_files(profile)
        elapsed = time.perf_counter() - started
        pki.close()
    return elapsed


def _prepare(pooled: bool) -> float:
    with tempfile.TemporaryDirectory(prefix="bench-pki-") as tmp:
        started = time.perf_counter()
        pki = SessionPKI(Path(tmp) / "pki")
        if pooled:
            pki.prepare(list(CertProfile), client=True)
        else:
            for profile in CertProfile:
                pki.server_files(profile)
            pki.client_files()
        elapsed = time.perf_counter() - started
        pki.close()
    return elapsed


def _pool(rounds: int) -> int:
    one_by_one: list[float] = []
    pooled: list[float] = []
    for _ in range(rounds):
        one_by_one.append(_prepare(False))
        pooled.append(_prepare(True))
    a, b = statistics.median(one_by_one), statistics.median(pooled)
    print(f"every profile one by one:        median {a:.3f} s ({', '.join(f'{x:.2f}' for x in one_by_one)})")
    print(f"prepare() with the key pool:     median {b:.3f} s ({', '.join(f'{x:.2f}' for x in pooled)})")
    print(f"one by one / pooled: {a / b:.2f} (load average {os.getloadavg()[0]:.1f}, {os.cpu_count()} cores)")
    return 0


_TRIAL = """
import sys, tempfile, time
from pytest_mailtls.pki import SessionPKI
from pytest_mailtls.policy import CertProfile
with tempfile.TemporaryDirectory() as tmp:
    started = time.perf_counter()
    pki = SessionPKI(tmp)
    if hasattr(pki, "prepare"):
        pki.prepare(list(CertProfile), client=True)
    else:  # before prepare(): what a grid's start did, profile by profile
        for profile in CertProfile:
            pki.server_files(profile)
        pki.client_files()
    print(time.perf_counter() - started)
    pki.close()
"""


def _baseline(path: str, rounds: int) -> int:
    here = str(Path(__file__).resolve().parents[1])
    times: dict[str, list[float]] = {"baseline": [], "this tree": []}
    for _ in range(rounds):
        for arm, tree in (("baseline", path), ("this tree", here)):
            env = {**os.environ, "PYTHONPATH": tree}
            out = subprocess.run(  # not from a checkout: '' first on sys.path would pick its package
                [sys.executable, "-c", _TRIAL],
                env=env,
                cwd=tempfile.gettempdir(),
                capture_output=True,
                text=True,
                check=True,
            )
            times[arm].append(float(out.stdout.strip()))
    for arm, values in times.items():
        print(f"{arm:10s} median {statistics.median(values):.3f} s ({', '.join(f'{x:.2f}' for x in values)})")
    ratio = statistics.median(times["baseline"]) / statistics.median(times["this tree"])
    print(f"baseline / this tree: {ratio:.2f} (load average {os.getloadavg()[0]:.1f}, {os.cpu_count()} cores)")
    return 0


def _grid(server: str, profiles: tuple[CertProfile, ...]) -> tuple[int, float]:
    cells = [
        c
        for c in load_matrix().cells(servers=[server])
        if c.cert in profiles and c.policy is not None and c.policy.name == "intermediate" and c.auth.name == "default"
    ]
    started = time.perf_counter()
    with Grid(cells):
        elapsed = time.perf_counter() - started
    return len(cells), elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--grid", default=None, help="also time a grid start on this server")
    parser.add_argument("--pool", action="store_true", help="prepare() with the key pool against one by one")
    parser.add_argument("--baseline", default=None, help="a tree with older code: its PKI against this tree's")
    args = parser.parse_args(argv)
    if args.baseline:
        return _baseline(args.baseline, args.rounds)
    if args.pool:
        return _pool(args.rounds)
    every = tuple(CertProfile)
    older: list[float] = []
    full: list[float] = []
    for _ in range(args.rounds):
        older.append(_make(OLDER))
        full.append(_make(every))
    a, b = statistics.median(older), statistics.median(full)
    print(
        f"PKI, {len(OLDER)} older profiles: median {a:.3f} s of {args.rounds} ({', '.join(f'{x:.2f}' for x in older)})"
    )
    print(
        f"PKI, all {len(every)} profiles:   median {b:.3f} s of {args.rounds} ({', '.join(f'{x:.2f}' for x in full)})"
    )
    print(f"ratio all/older: {b / a:.2f}; the new profiles add {b - a:.3f} s")
    if args.grid:
        n_old, t_old = _grid(args.grid, OLDER)
        n_all, t_all = _grid(args.grid, every)
        print(
            f"grid start on {args.grid}: {n_old} cells (older profiles) {t_old:.2f} s; {n_all} cells (all) {t_all:.2f} s"
        )
        print(f"ratio all/older: {t_all / t_old:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
