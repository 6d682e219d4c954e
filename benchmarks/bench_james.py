"""How fast one Apache James JVM serves the whole James grid, and how much memory it keeps.

    python benchmarks/bench_james.py [--repeat 3] [--selection full] [--cold-build] [--json FILE]
    python benchmarks/bench_james.py --baseline REV [--repeat 5] [--stack]   # before (REV) against after (this tree)

Each trial renders the configuration (keystores included), starts a fresh container and waits until the test
user exists and every cell passed a real exchange (``readiness.wait_ready``: greeting and capabilities on
plain cells, a verified TLS handshake on the others), as ``JamesBackend.start`` does for a test session with
the image warm. Figures, all from one trial:

* ``ready_s``: container start (the engine's ``StartedAt``) to every cell verified, the issue's measure;
* ``jvm_s`` and ``users_s``: container start to "JAMES server started", then to the test user's creation,
  from the container's own log timestamps; ``verify_s``: from there to every cell verified;
* ``engine_s``: creating and starting the container with its published ports, before ``StartedAt``;
* ``jvm_cpu_s``: the JVM's CPU seconds (user + system) when every cell was verified. On a loaded machine
  this moves much less than the wall times, so it tells a real change from noise;
* ``rss_ready_mb``: the JVM's resident set when ready, and ``rss_after_traffic_mb`` after one more handshake
  on every cell plus 50 messages; ``hwm_mb`` the peak; ``cgroup_ready_mb`` the container's memory as its
  cgroup counts it when ready (``memory.current``);
* ``stack_ready_s`` (``--stack``): how long the Postfix and Dovecot grid took to start beside it;
* ``rsa_by_nss``: 1 when the log says NSS signs the handshakes (``MAILTLS: RSA signatures by SunPKCS11-...``).

``--stack`` starts the Postfix and Dovecot grid (their full selection, through ``Grid``) at the same moment as
James in each trial: the other work of a session that serves every server, competing for the same cores.

``--baseline REV`` measures two versions in one run: REV's code and image recipe (exported with ``git
archive`` into a temp folder) against this working tree's, trial by trial in alternating order, each trial in
a fresh process that imports its own version's package. It prints the medians side by side and the ratio
after/before, with the load average at each trial. REV's image is built first if the cache lacks it.

``--cold-build`` first builds the image from scratch (``nocache``: apt, Maven Central, javac, the CDS training
run) under a throwaway tag, times it and removes it; the local Debian base must exist.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import secrets
import smtplib
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from pytest_mailtls import runtime
from pytest_mailtls.backends import servable
from pytest_mailtls.backends.base import StartOptions
from pytest_mailtls.backends.james import JamesBackend, JamesServer, prepare_build_context
from pytest_mailtls.matrix import load_matrix
from pytest_mailtls.pki import SessionPKI
from pytest_mailtls.policy import Cell
from pytest_mailtls.readiness import check_endpoint
from pytest_mailtls.upstream import dial

#: The figures a trial reports, in print order.
FIGURES = (
    "ready_s",
    "engine_s",
    "jvm_s",
    "users_s",
    "verify_s",
    "jvm_cpu_s",
    "rss_ready_mb",
    "rss_after_traffic_mb",
    "hwm_mb",
    "cgroup_ready_mb",
    "render_s",
    "stop_s",
    "stack_ready_s",
    "rsa_by_nss",
)
REPO = Path(__file__).resolve().parent.parent


def cold_build() -> float:
    """Seconds for a from-scratch build of the James image (no layer cache), under a throwaway tag."""
    client = runtime.docker_client()
    tag = f"mailtls-james-bench:cold-{secrets.token_hex(4)}"
    with tempfile.TemporaryDirectory(prefix="mailtls-james-bench-") as tmp:
        context = prepare_build_context(runtime.containers_root() / "james", Path(tmp)) / "james"
        started = time.perf_counter()
        for chunk in client.api.build(
            path=str(context), tag=tag, nocache=True, rm=True, forcerm=True, pull=False,
            network_mode="host", decode=True,
        ):  # fmt: skip
            if "error" in chunk:
                raise SystemExit(f"cold build failed: {chunk['error']}")
            text = str(chunk.get("stream", "")).strip()
            if text.startswith("Step ") or "CDS" in text:
                print(f"  [{time.perf_counter() - started:6.1f} s] {text[:110]}", flush=True)
        elapsed = time.perf_counter() - started
    client.api.remove_image(tag)
    return elapsed


def _parse(stamp: str) -> dt.datetime:
    # Docker writes nanoseconds; datetime takes microseconds.
    head, _, frac = stamp.rstrip("Z").partition(".")
    return dt.datetime.fromisoformat(f"{head}.{(frac + '000000')[:6]}+00:00")


def _started_at(server: JamesServer) -> dt.datetime:
    return _parse(runtime.docker_client().api.inspect_container(server.container.id)["State"]["StartedAt"])


def _timestamps(server: JamesServer, started: dt.datetime) -> dict[str, float]:
    """Seconds since the container's start at which its log shows the JVM up and the users made."""
    api = runtime.docker_client().api
    marks: dict[str, float] = {"rsa_by_nss": 0.0}
    for raw in api.logs(server.container.id, timestamps=True).decode("utf-8", "replace").splitlines():
        stamp, _, text = raw.partition(" ")
        if "MAILTLS: RSA signatures by SunPKCS11" in text:
            marks["rsa_by_nss"] = 1.0
        for key, words in (("jvm", "JAMES server started"), ("users", "MAILTLS: provisioned")):
            if key not in marks and words in text:
                marks[key] = (_parse(stamp) - started).total_seconds()
    return marks


def _jvm_status(server: JamesServer) -> tuple[float, int, int]:
    """The JVM's (PID 1) CPU seconds, resident and peak resident MB."""
    code, out = server.container.exec(["sh", "-c", "cat /proc/1/stat; grep -E 'VmRSS|VmHWM' /proc/1/status"])
    if code != 0:
        raise RuntimeError(f"cannot read the JVM's status: {out}")
    lines = out.splitlines()
    fields = lines[0].rsplit(")", 1)[1].split()  # after "pid (comm)": utime and stime are the 12th and 13th
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(fields[11]) + int(fields[12])) / ticks
    values = {line.split(":")[0]: int(line.split()[1]) // 1024 for line in lines[1:] if ":" in line}
    return cpu, values.get("VmRSS", -1), values.get("VmHWM", -1)


def _cgroup_mb(server: JamesServer) -> float:
    """The container's memory as its cgroup counts it (cgroup v2 ``memory.current``, v1 ``usage_in_bytes``):
    the JVM and the relay, page cache included."""
    code, out = server.container.exec(
        ["sh", "-c", "cat /sys/fs/cgroup/memory.current 2>/dev/null || cat /sys/fs/cgroup/memory/memory.usage_in_bytes"]
    )
    return int(out.split()[0]) / 2**20 if code == 0 and out.split() else float("nan")


def _traffic(server: JamesServer) -> None:
    """One more verified handshake on every cell, then 50 messages through the MX port."""
    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(check_endpoint, server.endpoints))
    mx = next(e for e in server.endpoints if e.id == "james-smtp-plain-open")
    for n in range(50):
        msg = EmailMessage()
        msg["From"], msg["To"], msg["Subject"] = mx.address, "bench@example.org", f"bench {n}"
        msg.set_content("x" * 2000)
        with smtplib.SMTP(timeout=30) as smtp:
            # The backend's own endpoint: dial it as the recorder does (a sealed container has only a socket).
            smtp.sock = dial(mx.host, mx.port, 30)
            smtp.getreply()
            smtp.send_message(msg)


class _Stack:
    """The Postfix and Dovecot grid, started in a thread (``--stack``): other work while James starts."""

    def __init__(self, workdir: Path) -> None:
        from pytest_mailtls.grid import Grid

        cells = load_matrix().cells(servers=["postfix", "dovecot"], selection="full")
        self.grid = Grid(cells, workdir=workdir, ready_timeout=180)
        self.ready_s = float("nan")
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._start, name="bench-stack", daemon=True)

    def _start(self) -> None:
        began = time.perf_counter()
        try:
            self.grid.__enter__()
            self.ready_s = time.perf_counter() - began
        except BaseException as exc:  # reported by stop()
            self.error = exc

    def stop(self) -> None:
        self.thread.join()
        if self.error is None:
            self.grid.__exit__(None, None, None)
        else:
            raise SystemExit(f"the Postfix and Dovecot grid did not start: {self.error}")


def trial(cells: Sequence[Cell], pki: SessionPKI, workdir: Path, *, stack: bool = False) -> dict[str, float]:
    marks: dict[str, float] = {}

    def progress(line: str) -> None:
        if "starting one JVM" in line or "starting one container" in line:  # the latter since ContainerBackend
            marks["rendered"] = time.perf_counter()

    load = os.getloadavg()[0]
    others = _Stack(workdir / "stack") if stack else None
    began = time.perf_counter()
    if others is not None:
        others.thread.start()
    try:
        server = JamesBackend().start(cells, StartOptions(pki=pki, workdir=workdir / "james", progress=progress))
    except BaseException:
        if others is not None:
            others.stop()
        raise
    ready_wall = time.time()
    total = time.perf_counter() - began
    try:
        cpu, rss, hwm = _jvm_status(server)
        cgroup = _cgroup_mb(server)
        started = _started_at(server)
        logs = _timestamps(server, started)
        _traffic(server)
        _cpu, rss_after, hwm_after = _jvm_status(server)
    finally:
        stopping = time.perf_counter()
        server.stop()
        stop = time.perf_counter() - stopping
        if others is not None:
            others.stop()
    ready = ready_wall - started.timestamp()
    render = marks["rendered"] - began
    return {
        "ready_s": ready,
        "engine_s": total - render - ready,  # image lookup, create, start, publish ports
        "jvm_s": logs.get("jvm", float("nan")),
        "users_s": logs.get("users", float("nan")) - logs.get("jvm", float("nan")),
        "verify_s": ready - logs.get("users", float("nan")),
        "jvm_cpu_s": cpu,
        "rss_ready_mb": rss,
        "rss_after_traffic_mb": rss_after,
        "hwm_mb": max(hwm, hwm_after),
        "cgroup_ready_mb": cgroup,
        "render_s": render,
        "stop_s": stop,
        "stack_ready_s": others.ready_s if others is not None else float("nan"),
        "rsa_by_nss": logs["rsa_by_nss"],
        "load": load,
    }


def _prepare(selection: str, root: Path) -> tuple[list[Cell], SessionPKI, str]:
    """The cells, a session PKI with every certificate made, and the image (built if the cache lacks it)."""
    cells = servable(load_matrix().cells(servers=["james"], selection=selection))
    pki = SessionPKI(root / "pki")
    for cell in cells:
        if cell.cert is not None:
            pki.server_files(cell.cert)
    context = prepare_build_context(runtime.containers_root() / "james", root / "context")
    image = runtime.ensure_image("james", containers_dir=context, progress=print)
    return cells, pki, image


def _summary(trials: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    keys = [k for k in trials[0] if k != "load"]
    return {
        "median": {k: statistics.median(t[k] for t in trials) for k in keys},
        "max": {k: max(t[k] for t in trials) for k in keys},
    }


def one_trial(selection: str, out: Path, *, stack: bool) -> int:
    """One trial in this process (the unit of ``--baseline``): figures as JSON into ``out``."""
    with tempfile.TemporaryDirectory(prefix="mailtls-james-bench-") as tmp:
        cells, pki, image = _prepare(selection, Path(tmp))
        figures = trial(cells, pki, Path(tmp) / "trial", stack=stack)
    package = str(Path(runtime.__file__).resolve().parent.parent)
    out.write_text(json.dumps({"image": image, "cells": len(cells), "package": package, "figures": figures}))
    return 0


def _export(rev: str, target: Path) -> Path:
    """REV's files (``git archive``), so its package and image recipe can run beside this tree's."""
    tree = target / "baseline"
    tree.mkdir()
    archive = subprocess.run(["git", "-C", str(REPO), "archive", rev], capture_output=True)
    if archive.returncode != 0:
        raise SystemExit(f"--baseline {rev}: git archive failed: {archive.stderr.decode().strip()}")
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive.stdout, check=True)
    return tree


def _subprocess_trial(tree: Path, selection: str, out: Path, *, stack: bool) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--one-trial", str(out), "--selection", selection]
    cmd += ["--stack"] if stack else []
    done = subprocess.run(cmd, env=env, cwd=tree, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"trial with {tree} failed:\n{done.stdout[-2000:]}{done.stderr[-4000:]}")
    result: dict[str, Any] = json.loads(out.read_text())
    if Path(result["package"]) != tree.resolve():
        raise SystemExit(f"the trial for {tree} imported pytest_mailtls from {result['package']}")
    return result


def compare(rev: str, repeat: int, selection: str, *, stack: bool) -> dict[str, Any]:
    """``repeat`` trials of REV and of this tree, alternating which goes first; medians and ratios."""
    sides: dict[str, list[dict[str, float]]] = {"before": [], "after": []}
    images: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="mailtls-james-bench-") as tmp:
        root = Path(tmp)
        trees = {"before": _export(rev, root), "after": REPO}
        for n in range(repeat):
            order = ("before", "after") if n % 2 == 0 else ("after", "before")
            for side in order:
                result = _subprocess_trial(trees[side], selection, root / f"{side}-{n}.json", stack=stack)
                images[side] = result["image"]
                sides[side].append(result["figures"])
                shown = ", ".join(f"{k}={v:.2f}" for k, v in result["figures"].items())
                print(f"round {n + 1} {side:6} {shown}", flush=True)
    summary = {side: _summary(trials) for side, trials in sides.items()}
    loads = [t["load"] for trials in sides.values() for t in trials]
    print(f"\nbefore: {rev} ({images['before']}); after: this tree ({images['after']})")
    other = "Postfix and Dovecot starting alongside" if stack else "James alone"
    print(f"{repeat} trials each, alternating, {other}; load average 1 min {min(loads):.1f}-{max(loads):.1f}, "
          f"{os.cpu_count()} cores\n")  # fmt: skip
    print(f"  {'median':22} {'before':>9} {'after':>9} {'after/before':>13}")
    ratios: dict[str, float] = {}
    for key in FIGURES:
        before, after = summary["before"]["median"][key], summary["after"]["median"][key]
        ratios[key] = after / before if before else float("nan")
        print(f"  {key:22} {before:9.2f} {after:9.2f} {ratios[key]:13.2f}")
    return {"baseline": rev, "images": images, "trials": sides, "summary": summary, "ratio": ratios}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--selection", default="full")
    parser.add_argument("--cold-build", action="store_true", help="also time a from-scratch image build")
    parser.add_argument("--baseline", metavar="REV", help="also run git revision REV, alternating, and compare")
    parser.add_argument("--json", type=Path, help="write the figures here as JSON")
    parser.add_argument("--stack", action="store_true", help="start Postfix and Dovecot with James in each trial")
    parser.add_argument("--one-trial", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    problem = runtime.engine_problem()
    if problem:
        raise SystemExit(problem)
    if args.one_trial:
        return one_trial(args.selection, args.one_trial, stack=args.stack)
    results: dict[str, Any] = {}
    if args.cold_build:
        print("cold image build (no cache) ...", flush=True)
        results["cold_build_s"] = cold_build()
        print(f"cold build: {results['cold_build_s']:.1f} s", flush=True)
    if args.baseline:
        results["compare"] = compare(args.baseline, args.repeat, args.selection, stack=args.stack)
    else:
        with tempfile.TemporaryDirectory(prefix="mailtls-james-bench-") as tmp:
            root = Path(tmp)
            cells, pki, results["image"] = _prepare(args.selection, root)
            trials = []
            for n in range(args.repeat):
                figures = trial(cells, pki, root / f"trial-{n}", stack=args.stack)
                trials.append(figures)
                print(f"trial {n + 1}: " + ", ".join(f"{k}={v:.2f}" for k, v in figures.items()), flush=True)
        results.update(cells=len(cells), trials=trials, **_summary(trials))
        loads = [t["load"] for t in trials]
        print(
            f"\n{len(cells)} James cells, {args.repeat} trials, load average {min(loads):.1f}-{max(loads):.1f}, "
            f"{os.cpu_count()} cores"
        )
        print("(median / max):")
        for key in FIGURES:
            print(f"  {key:22} {results['median'][key]:8.2f} / {results['max'][key]:8.2f}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
