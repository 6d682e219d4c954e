"""How fast one Apache James JVM serves the whole James grid, and how much memory it keeps.

    python benchmarks/bench_james.py [--repeat 3] [--selection full] [--cold-build] [--json FILE]

``--cold-build`` first builds the image from scratch (``nocache``: apt, Maven Central, javac, the CDS training
run) under a throwaway tag, times it and removes it; the local Debian base must exist. Then the image is
built or found through the runtime and the session PKI made before timing, as in a test session where the
image is warm. Each trial renders the configuration (keystores included), starts a fresh container and
waits until the test user exists and every cell passed a real exchange (``readiness.wait_ready``: greeting
and capabilities on plain cells, a verified TLS handshake on the others). The container's own log
timestamps split the time into: engine (create, start, publish ports), jvm (process start to "JAMES server
started"), users (WebAdmin provisioning) and verify (every port's handshake). Memory is the JVM's resident
set (VmRSS, VmHWM of PID 1) after readiness and again after one more handshake on every cell plus 50 messages.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import secrets
import smtplib
import statistics
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from pytest_mailtls import runtime
from pytest_mailtls.backends.base import StartOptions
from pytest_mailtls.backends.james import JamesBackend, JamesServer, prepare_build_context
from pytest_mailtls.matrix import load_matrix
from pytest_mailtls.pki import SessionPKI
from pytest_mailtls.policy import Cell
from pytest_mailtls.readiness import check_endpoint


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


def _timestamps(server: JamesServer) -> dict[str, float]:
    """Seconds since the container's start at which its log shows the JVM up and the users made."""
    api = runtime.docker_client().api
    attrs = api.inspect_container(server.container.id)
    started = _parse(attrs["State"]["StartedAt"])
    marks: dict[str, float] = {}
    for raw in api.logs(server.container.id, timestamps=True).decode("utf-8", "replace").splitlines():
        stamp, _, text = raw.partition(" ")
        for key, words in (("jvm", "JAMES server started"), ("users", "MAILTLS: provisioned")):
            if key not in marks and words in text:
                marks[key] = (_parse(stamp) - started).total_seconds()
    return marks


def _parse(stamp: str) -> dt.datetime:
    # Docker writes nanoseconds; datetime takes microseconds.
    head, _, frac = stamp.rstrip("Z").partition(".")
    return dt.datetime.fromisoformat(f"{head}.{(frac + '000000')[:6]}+00:00")


def _rss(server: JamesServer) -> tuple[int, int]:
    code, out = server.container.exec(["grep", "-E", "VmRSS|VmHWM", "/proc/1/status"])
    if code != 0:
        raise RuntimeError(f"cannot read the JVM's memory: {out}")
    values = {line.split(":")[0]: int(line.split()[1]) // 1024 for line in out.splitlines() if ":" in line}
    return values.get("VmRSS", -1), values.get("VmHWM", -1)


def _traffic(server: JamesServer) -> None:
    """One more verified handshake on every cell, then 50 messages through the MX port."""
    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(check_endpoint, server.endpoints))
    mx = next(e for e in server.endpoints if e.id == "james-smtp-plain-open")
    for n in range(50):
        msg = EmailMessage()
        msg["From"], msg["To"], msg["Subject"] = mx.address, "bench@example.org", f"bench {n}"
        msg.set_content("x" * 2000)
        with smtplib.SMTP(mx.host, mx.port, timeout=30) as smtp:
            smtp.send_message(msg)


def trial(cells: Sequence[Cell], pki: SessionPKI, workdir: Path) -> dict[str, float]:
    marks: dict[str, float] = {}

    def progress(line: str) -> None:
        if "starting one JVM" in line:
            marks["rendered"] = time.perf_counter()

    began = time.perf_counter()
    server = JamesBackend().start(cells, StartOptions(pki=pki, workdir=workdir, progress=progress))
    total = time.perf_counter() - began
    try:
        logs = _timestamps(server)
        rss, hwm = _rss(server)
        _traffic(server)
        rss_after, hwm_after = _rss(server)
        stats = runtime.docker_client().api.stats(server.container.id, stream=False)
        cgroup_mb = stats.get("memory_stats", {}).get("usage", 0) / 2**20
    finally:
        stopping = time.perf_counter()
        server.stop()
        stop = time.perf_counter() - stopping
    render = marks["rendered"] - began
    container_life = total - render  # image lookup + engine + JVM + users + verification
    return {
        "render_s": render,
        "jvm_s": logs.get("jvm", float("nan")),
        "users_s": logs.get("users", float("nan")) - logs.get("jvm", float("nan")),
        "verify_s": container_life - logs.get("users", float("nan")),
        "start_to_verified_s": container_life,
        "total_s": total,
        "stop_s": stop,
        "rss_ready_mb": rss,
        "rss_after_traffic_mb": rss_after,
        "hwm_mb": max(hwm, hwm_after),
        "cgroup_mb": cgroup_mb,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--selection", default="full")
    parser.add_argument("--cold-build", action="store_true", help="also time a from-scratch image build")
    parser.add_argument("--json", type=Path, help="write the figures here as JSON")
    args = parser.parse_args(argv)
    problem = runtime.engine_problem()
    if problem:
        raise SystemExit(problem)
    results: dict[str, Any] = {}
    if args.cold_build:
        print("cold image build (no cache) ...", flush=True)
        results["cold_build_s"] = cold_build()
        print(f"cold build: {results['cold_build_s']:.1f} s", flush=True)
    cells = load_matrix().cells(servers=["james"], selection=args.selection)
    with tempfile.TemporaryDirectory(prefix="mailtls-james-bench-") as tmp:
        root = Path(tmp)
        pki = SessionPKI(root / "pki")
        for cell in cells:
            if cell.cert is not None:
                pki.server_files(cell.cert)
        warm = time.perf_counter()
        context = prepare_build_context(runtime.containers_root() / "james", root / "context")
        results["image"] = runtime.ensure_image("james", containers_dir=context, progress=print)
        results["image_check_s"] = time.perf_counter() - warm
        trials = []
        for n in range(args.repeat):
            figures = trial(cells, pki, root / f"trial-{n}")
            trials.append(figures)
            print(f"trial {n + 1}: " + ", ".join(f"{k}={v:.2f}" for k, v in figures.items()), flush=True)
    results["cells"] = len(cells)
    results["trials"] = trials
    results["median"] = {k: statistics.median(t[k] for t in trials) for k in trials[0]}
    results["max"] = {k: max(t[k] for t in trials) for k in trials[0]}
    print(f"\n{len(cells)} James cells, {args.repeat} trials (median / max):")
    for key in trials[0]:
        print(f"  {key:22} {results['median'][key]:8.2f} / {results['max'][key]:8.2f}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
