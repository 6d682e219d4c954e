"""Where a cold ``-n 4`` run's time goes: one run of bench_xdist's test module, with the shared grid
daemon's log kept, printed as seconds since pytest was started.

    python benchmarks/xdist_timeline.py [--workers 4] [--repeat 1] [--baseline PATH]

Every run is cold (``-p no:cacheprovider``). A conftest in the run's folder copies the daemon's log
(``daemon.log`` of the run's shared directory) when the first worker ends its session, and notes when
each worker collected. Prints, per run: workers collected (first, last), the daemon's first line ("head
start" with this branch), "starting" (the grid start), "serving", the last worker's session end, exit.
``--baseline PATH`` runs the same with ``PYTHONPATH=PATH`` first, alternating.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

from bench_xdist import TEST  # type: ignore[import-not-found]

CONFTEST = """
import os, shutil, time

OUT = {out!r}


def _note(what):
    with open(os.path.join(OUT, "events.txt"), "a") as fh:
        fh.write(f"{{time.time():.3f}} {{what}}\\n")


def pytest_collection_finish(session):
    if hasattr(session.config, "workerinput"):
        _note("collected")


def pytest_sessionfinish(session):
    shared = getattr(session.config, "workerinput", {{}}).get("mailtls_shared")
    if shared:
        _note("worker-done")
        try:
            shutil.copy(os.path.join(shared["dir"], "daemon.log"), os.path.join(OUT, "daemon.log"))
        except OSError:
            pass
"""

_LINE = re.compile(r"^(\d\d):(\d\d):(\d\d)\.(\d{3}) mailtls shared grid: (.*)$")


def _daemon_times(log: Path, day: datetime) -> list[tuple[float, str]]:
    out = []
    for line in log.read_text().splitlines() if log.exists() else []:
        m = _LINE.match(line)
        if m:
            h, mi, s, ms, text = m.groups()
            stamp = day.replace(hour=int(h), minute=int(mi), second=int(s), microsecond=int(ms) * 1000)
            out.append((stamp.timestamp(), text))
    return out


def one(folder: Path, workers: int, env: dict[str, str] | None) -> str:
    out = folder / "out"
    if out.exists():
        for f in out.iterdir():
            f.unlink()
    out.mkdir(exist_ok=True)
    (folder / "conftest.py").write_text(CONFTEST.format(out=str(out)))
    (folder / "test_grid.py").write_text(TEST)
    start = time.time()
    day = datetime.fromtimestamp(start)
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_grid.py", "-n", str(workers)],
        cwd=folder,
        capture_output=True,
        text=True,
        env=env,
    )
    end = time.time()
    if proc.returncode != 0:
        return f"failed: {proc.stdout[-500:]}"
    events = [line.split(" ", 1) for line in (out / "events.txt").read_text().splitlines()]
    collected = sorted(float(t) for t, what in events if what == "collected")
    done = sorted(float(t) for t, what in events if what == "worker-done")
    daemon = _daemon_times(out / "daemon.log", day)

    def first(pattern: str) -> str:
        for stamp, text in daemon:
            if re.search(pattern, text):
                return f"{stamp - start:5.1f}"
        return "  -  "

    return (
        f"collected {collected[0] - start:4.1f}-{collected[-1] - start:4.1f}  daemon first line "
        f"{daemon[0][0] - start if daemon else float('nan'):4.1f}  grid start {first(r': starting ')}  "
        f"serving {first(r'^serving')}  workers done {done[-1] - start:5.1f}  exit {end - start:5.1f}  "
        f"load {os.getloadavg()[0]:.1f}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--baseline", metavar="PATH")
    args = parser.parse_args(argv)
    arms: dict[str, dict[str, str] | None] = {"this": None}
    if args.baseline:
        arms = {"baseline": {**os.environ, "PYTHONPATH": str(Path(args.baseline).resolve())}, "this": None}
    os.environ.setdefault("PYTHONDONTWRITEBYTECODE", "1")
    with tempfile.TemporaryDirectory(prefix="xdist-timeline-") as tmp:
        for round_ in range(1, args.repeat + 1):
            for arm, env in arms.items():
                folder = Path(tmp) / arm
                folder.mkdir(exist_ok=True)
                print(f"round {round_} {arm:8s} {one(folder, args.workers, env)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
