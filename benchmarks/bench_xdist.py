"""A user suite over the whole default grid: one process against pytest-xdist, in one run.

    python benchmarks/bench_xdist.py [--workers 4] [--repeat 3] [--servers auto] [--select full]
                                     [--per-worker] [--cold] [--baseline PATH]

Writes a test module with one test that takes ``mailtls_server`` and makes one smtplib/imaplib/poplib
connection per cell (the issue's "186-cell user test"), then runs pytest on it in one process and with
``-n WORKERS``, alternating, ``--repeat`` times each. For each run it prints the wall time and how many
server containers the run started (containers whose owner process descends from that pytest), then the
median ratio. ``--per-worker`` adds the old behaviour (``--mailtls-xdist-grid per-worker``: a grid per
worker) for comparison.

The runs share one temp dir, so pytest's cache persists between rounds: every round after the first is
*warm* (the controller starts the last run's grid before its workers, from the cache); a round 0, not
counted, fills the cache first. ``--cold`` passes
``-p no:cacheprovider`` to every run, as on CI without a cache. ``--baseline PATH`` runs every mode a
second time with ``PYTHONPATH=PATH`` (another checkout, e.g. the main branch), alternating with this one
(``PYTHONPATH`` of this process) in each round, and prints both arms' ratios.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

TEST = """
import imaplib, poplib, smtplib, ssl


def test_connect(mailtls_server):
    ep = mailtls_server
    ctx = ssl.create_default_context(cafile=ep.ca_file)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        if ep.protocol == "smtp":
            c = smtplib.SMTP_SSL(ep.host, ep.port, context=ctx, timeout=10) if ep.mode == "implicit" else smtplib.SMTP(ep.host, ep.port, timeout=10)
            c.ehlo()
            c.quit()
        elif ep.protocol == "imap":
            c = imaplib.IMAP4_SSL(ep.host, ep.port, ssl_context=ctx, timeout=10) if ep.mode == "implicit" else imaplib.IMAP4(ep.host, ep.port, timeout=10)
            c.logout()
        else:
            c = poplib.POP3_SSL(ep.host, ep.port, context=ctx, timeout=10) if ep.mode == "implicit" else poplib.POP3(ep.host, ep.port, timeout=10)
            c.quit()
    except (ssl.SSLError, OSError, smtplib.SMTPException, imaplib.IMAP4.error, poplib.error_proto):
        pass  # legacy-only cells refuse this Python's TLS, mTLS cells a client without a certificate
"""


def _ancestors(pid: int) -> set[int]:
    seen = set()
    while pid > 1 and pid not in seen:
        seen.add(pid)
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            break
        pid = int(fields[1])
    return seen


def _watch(root: int, found: set[str], done: threading.Event) -> None:
    """Containers of pytest-mailtls whose owner process descends from ``root`` (polled while it runs)."""
    import docker

    client = docker.from_env()
    while not done.is_set():
        try:
            for c in client.api.containers(filters={"label": "pytest-mailtls=1"}):
                pid = int(c["Labels"].get("pytest-mailtls.pid", "0"))
                if root in _ancestors(pid):
                    found.add(c["Id"])
        except Exception:
            pass
        done.wait(0.2)


def run(folder: Path, extra: list[str], env: dict[str, str] | None = None) -> tuple[float, int, str]:
    cmd = [sys.executable, "-m", "pytest", "-q", "test_grid.py", *extra]
    start = time.perf_counter()
    process = subprocess.Popen(cmd, cwd=folder, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    found: set[str] = set()
    done = threading.Event()
    watcher = threading.Thread(target=_watch, args=(process.pid, found, done), daemon=True)
    watcher.start()
    out, _ = process.communicate()
    wall = time.perf_counter() - start
    done.set()
    watcher.join()
    last = out.strip().splitlines()[-1] if out.strip() else "(no output)"
    if process.returncode != 0:
        print(out[-3000:])
        raise SystemExit(f"pytest failed: {' '.join(cmd)}")
    return wall, len(found), last


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--servers", default="auto")
    parser.add_argument("--select", default=None)
    parser.add_argument("--per-worker", action="store_true", help="also run the old grid-per-worker behaviour")
    parser.add_argument("--cold", action="store_true", help="no pytest cache (-p no:cacheprovider): cold runs")
    parser.add_argument("--baseline", metavar="PATH", help="also run every mode with PYTHONPATH=PATH, alternating")
    args = parser.parse_args(argv)
    common = [f"--mailtls-servers={args.servers}"] + ([f"--mailtls-select={args.select}"] if args.select else [])
    if args.cold:
        common = ["-p", "no:cacheprovider", *common]
    modes = {
        "one process": common,
        f"-n {args.workers} shared": [*common, "-n", str(args.workers)],
    }
    if args.per_worker:
        modes[f"-n {args.workers} per-worker"] = [*common, "-n", str(args.workers), "--mailtls-xdist-grid=per-worker"]
    os.environ.setdefault("PYTHONDONTWRITEBYTECODE", "1")
    arms: dict[str, dict[str, str] | None] = {"this": None}
    if args.baseline:
        arms = {"baseline": {**os.environ, "PYTHONPATH": str(Path(args.baseline).resolve())}, "this": None}
    times: dict[tuple[str, str], list[float]] = {(a, m): [] for a in arms for m in modes}
    loads: list[float] = []
    with tempfile.TemporaryDirectory(prefix="bench-xdist-") as tmp:
        # One folder per arm: one arm's cache must not warm the other's.
        folders = {arm: Path(tmp) / arm for arm in arms}
        for folder in folders.values():
            folder.mkdir()
            (folder / "test_grid.py").write_text(TEST)
        first = 1 if args.cold else 0  # warm: round 0 fills each arm's cache and is not counted
        for round_ in range(first, args.repeat + 1):
            for arm, env in arms.items():
                for mode, extra in modes.items():
                    wall, containers, last = run(folders[arm], extra, env)
                    if round_ == 0:
                        print(f"round 0 {arm:8s} {mode:22s} {wall:6.1f} s  (warm-up, not counted)", flush=True)
                        continue
                    times[arm, mode].append(wall)
                    load = os.getloadavg()[0]
                    loads.append(load)
                    print(
                        f"round {round_} {arm:8s} {mode:22s} {wall:6.1f} s  {containers} containers  load {load:.1f}"
                        f"  ({last})",
                        flush=True,
                    )
    print(
        f"{'cold' if args.cold else 'warm'}; load average (1 min) after each run: "
        f"min {min(loads):.1f} median {statistics.median(loads):.1f} max {max(loads):.1f} ({os.cpu_count()} cores)"
    )
    for arm in arms:
        base = statistics.median(times[arm, "one process"])
        for mode in modes:
            median = statistics.median(times[arm, mode])
            print(f"{arm:8s} {mode:22s} median {median:6.1f} s  ratio to one process {median / base:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
