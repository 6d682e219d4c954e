"""Benchmark: ``pytest_mailtls.probe`` against sslyze and testssl.sh on one loopback STARTTLS port.

Not a test. It starts one embedded cell (default: the ``legacy`` policy on
submission with STARTTLS: TLSv1 to TLSv1.3, every cipher OpenSSL allows at
security level 0), then probes it with

* ``probe`` as a library call (in this process),
* ``probe`` in a fresh interpreter (``python -c``: what a ``mailtls probe`` run costs),
* ``python -m sslyze --starttls smtp`` restricted to versions, ciphers and the certificate,
* ``testssl -t smtp -p -E`` (protocols and ciphers per protocol),

checks that all of them find the same accepted versions and cipher suites, and
prints wall times (median of ``--runs``), the ratios to the probe and CPU seconds (a subprocess's own;
for the library call this process's, the in-process server's included).

    python benchmarks/bench_probe.py [--cell CELL_ID] [--runs 3] [--no-testssl] [--json out.json]

``--cell postfix-submission-starttls-legacy-valid`` (any container server's cell) serves it from the real
server in a container instead, its ports published on 127.0.0.1.

With ``--grid postfix,dovecot,james`` it serves those servers' default grid instead (Docker) and
times ``verify_endpoints`` over every cell ``--runs`` times, as ``mailtls verify`` runs it, with the
CPU seconds spent by this process and by each container (cgroup v1 ``cpuacct``, where readable):
a figure that other load on the machine does not inflate.

    python benchmarks/bench_probe.py --grid postfix,dovecot,james [--runs 2]
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from pytest_mailtls.backends.base import StartOptions  # noqa: E402
from pytest_mailtls.backends.embedded import EmbeddedBackend  # noqa: E402
from pytest_mailtls.manifest import Endpoint  # noqa: E402
from pytest_mailtls.matrix import load_matrix  # noqa: E402
from pytest_mailtls.pki import SessionPKI  # noqa: E402
from pytest_mailtls.policy import VERSIONS  # noqa: E402
from pytest_mailtls.verify import probe_endpoint  # noqa: E402

Found = dict[str, list[str]]  # version -> accepted cipher names (OpenSSL names; IANA names for TLS 1.3)

_SUBPROCESS_PROBE = """
import json, sys
from pytest_mailtls.probe import probe
r = probe(sys.argv[1], int(sys.argv[2]), protocol="smtp", mode="starttls", server_hostname=sys.argv[3], ca_file=sys.argv[4])
print(json.dumps(r.to_json()))
"""
_SSLYZE_KEYS = {
    "TLSv1": "tls_1_0_cipher_suites",
    "TLSv1.1": "tls_1_1_cipher_suites",
    "TLSv1.2": "tls_1_2_cipher_suites",
    "TLSv1.3": "tls_1_3_cipher_suites",
}
_TESTSSL_IDS = {"TLSv1": "tls1", "TLSv1.1": "tls1_1", "TLSv1.2": "tls1_2", "TLSv1.3": "tls1_3"}


def from_probe_json(doc: dict[str, Any]) -> Found:
    return {v: sorted(doc["versions"][v]["ciphers"]) for v in VERSIONS if doc["versions"][v]["accepted"]}


def run_probe_in_process(endpoint: Endpoint) -> tuple[float, Found]:
    started = time.perf_counter()
    result = probe_endpoint(endpoint)
    return time.perf_counter() - started, from_probe_json(result.to_json())


def run_probe_subprocess(endpoint: Endpoint) -> tuple[float, Found]:
    cmd = [sys.executable, "-c", _SUBPROCESS_PROBE, endpoint.host, str(endpoint.port), endpoint.server_hostname]
    cmd.append(endpoint.ca_file)
    started = time.perf_counter()
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=120, cwd=ROOT).stdout
    return time.perf_counter() - started, from_probe_json(json.loads(out))


def run_probe_command(endpoint: Endpoint) -> tuple[float, Found]:
    """``mailtls probe`` itself (argument parsing and the CLI's imports included)."""
    cmd = [sys.executable, "-m", "pytest_mailtls", "probe", f"{endpoint.host}:{endpoint.port}", "--json"]
    cmd += ["--protocol", "smtp", "--mode", "starttls", "--server-name", endpoint.server_hostname]
    cmd += ["--ca-file", endpoint.ca_file]
    started = time.perf_counter()
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=120, cwd=ROOT).stdout
    return time.perf_counter() - started, from_probe_json(json.loads(out))


def run_sslyze(endpoint: Endpoint, work: Path) -> tuple[float, Found]:
    out = work / "sslyze.json"
    cmd = [sys.executable, "-m", "sslyze", "--quiet", "--starttls", "smtp", "--sslv2", "--sslv3", "--tlsv1"]
    cmd += [
        "--tlsv1_1",
        "--tlsv1_2",
        "--tlsv1_3",
        "--certinfo",
        f"--json_out={out}",
        f"{endpoint.host}:{endpoint.port}",
    ]
    started = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=300)
    elapsed = time.perf_counter() - started
    scan = json.loads(out.read_text())["server_scan_results"][0]["scan_result"]
    found: Found = {}
    for version, key in _SSLYZE_KEYS.items():
        result = scan[key]["result"]
        accepted = result["accepted_cipher_suites"]
        if accepted:
            found[version] = sorted(_sslyze_name(a) for a in accepted)
        # What sslyze did not even try, to tell its blind spots from disagreements.
        SSLYZE_TESTED[version] = {_sslyze_name(a) for a in accepted + result["rejected_cipher_suites"]}
    return elapsed, found


SSLYZE_TESTED: dict[str, set[str]] = {}


def _sslyze_name(entry: dict[str, Any]) -> str:
    suite = entry["cipher_suite"]
    return str(suite["openssl_name"] or suite["name"])


def run_testssl(endpoint: Endpoint, work: Path) -> tuple[float, Found]:
    out = work / "testssl.json"
    out.unlink(missing_ok=True)
    cmd = ["testssl", "--quiet", "--color", "0", "--warnings", "off", "--nodns", "none", "-t", "smtp", "-p", "-E"]
    cmd += ["--jsonfile", str(out), f"{endpoint.host}:{endpoint.port}"]
    started = time.perf_counter()
    subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=600)
    elapsed = time.perf_counter() - started
    found: Found = {}
    for item in json.loads(out.read_text()):
        for version, tag in _TESTSSL_IDS.items():
            if item["id"].startswith(f"cipher-{tag}_x"):
                found.setdefault(version, []).append(item["finding"].split()[3])
    return elapsed, {v: sorted(c) for v, c in found.items()}


def compare(reference: Found, other: Found, tested: dict[str, set[str]] | None = None) -> tuple[list[str], bool]:
    """Differences between two findings as readable lines, and whether they are a real disagreement.

    Ciphers only the probe found are no disagreement when the other tool never offered them
    (known for sslyze, which reports what it tried).
    """
    diffs, disagree = [], False
    for version in VERSIONS:
        a, b = set(reference.get(version, [])), set(other.get(version, []))
        if a == b:
            continue
        line = f"{version}: only probe {sorted(a - b)}; only other {sorted(b - a)}"
        untried = sorted(c for c in a - b if tested is not None and c not in tested.get(version, set()))
        if untried:
            line += f" (never offered by that tool: {untried})"
        disagree = disagree or bool(b - a) or len(untried) < len(a - b)
        diffs.append(line)
    return diffs, disagree


def _containers() -> dict[str, str]:
    out = subprocess.run(
        ["docker", "ps", "--no-trunc", "--format", "{{.ID}} {{.Names}}"], capture_output=True, text=True, check=False
    ).stdout
    return dict(line.split(maxsplit=1) for line in out.splitlines() if line.strip())


def _container_cpu(container_id: str) -> float | None:
    try:
        return int(Path(f"/sys/fs/cgroup/cpuacct/docker/{container_id}/cpuacct.usage").read_text()) / 1e9
    except (OSError, ValueError):
        return None


def _cpu() -> tuple[float, float]:
    """CPU seconds (user + system) of this process and of its finished children."""
    me, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime, children.ru_utime + children.ru_stime


def _own_cpu() -> float:
    return sum(_cpu())


def bench_grid(servers: list[str], runs: int) -> int:
    """``verify_endpoints`` over the default grid of ``servers``: wall and CPU seconds per run."""
    from pytest_mailtls.grid import Grid
    from pytest_mailtls.verify import verify_endpoints

    cells = load_matrix().cells(servers=servers)
    before = _containers()
    ok = True
    with Grid(cells, ready_timeout=180) as grid:
        mine = {cid: name for cid, name in _containers().items() if cid not in before}
        print(f"{len(grid.endpoints)} cells served by {', '.join(sorted(mine.values())) or 'no container'}")
        print(f"machine: {os.cpu_count()} cpus, python {sys.version.split()[0]}")
        for run in range(runs):
            load = os.getloadavg()[0]
            cpu0, own0 = {c: _container_cpu(c) for c in mine}, _own_cpu()
            started = time.perf_counter()
            report = verify_endpoints(grid.endpoints)
            wall = time.perf_counter() - started
            own = _own_cpu() - own0
            spent = {
                mine[c]: round(after - before_, 1)
                for c, before_ in cpu0.items()
                if before_ is not None and (after := _container_cpu(c)) is not None
            }
            total = own + sum(spent.values())
            ok = ok and report.ok
            print(
                f"  run {run + 1}: {len(report.verdicts)} cells in {wall:.1f} s, "
                f"{'all match' if report.ok else f'{len(report.mismatches)} MISMATCH(ES)'}; load {load:.1f}; "
                f"CPU s: verify {own:.1f}, containers {spent}, total {total:.1f}"
            )
            for mismatch in report.mismatches[:10]:
                print(f"    {mismatch}")
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cell", default="embedded-submission-starttls-legacy-valid")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-testssl", action="store_true", help="skip testssl.sh (about 10-25 s per run)")
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument("--grid", help="verify these servers' default grid instead, e.g. postfix,dovecot,james")
    args = parser.parse_args(argv)
    if args.grid:
        return bench_grid(args.grid.split(","), args.runs)

    # Bytecode for this package, as `pip install` leaves it (sslyze's is in site-packages): on a machine with
    # PYTHONDONTWRITEBYTECODE, every fresh probe would otherwise compile its modules from source again.
    compileall.compile_dir(str(ROOT / "pytest_mailtls"), quiet=1)
    work = Path(tempfile.mkdtemp(prefix="mailtls-bench-"))
    server_name = args.cell.split("-", 1)[0]
    cells = [c for c in load_matrix().cells(servers=[server_name]) if c.id == args.cell]
    if not cells:
        parser.error(f"no cell {args.cell!r} in the default matrix")
    if server_name == "embedded":
        backend: Any = EmbeddedBackend()
    else:
        # A real server in a container, published on 127.0.0.1 (sslyze and testssl.sh dial no unix socket):
        # the server's work then runs in the container, not on this process's event loop.
        os.environ["MAILTLS_PUBLISH_PORTS"] = "1"
        from pytest_mailtls.grid import get_backend

        backend = get_backend(server_name)
    pki = SessionPKI(work / "pki")
    t0 = time.perf_counter()
    server = backend.start(cells, StartOptions(pki=pki, workdir=work / "server"))
    start_time = time.perf_counter() - t0
    endpoint = server.endpoints[0]
    print(f"cell {endpoint.id} on {endpoint.host}:{endpoint.port} (started in {start_time:.3f} s)")
    print(f"machine: {os.cpu_count()} cpus, python {sys.version.split()[0]}")

    tools: list[tuple[str, Any]] = [
        ("probe (library call)", lambda: run_probe_in_process(endpoint)),
        ("probe (fresh interpreter)", lambda: run_probe_subprocess(endpoint)),
        ("mailtls probe (command)", lambda: run_probe_command(endpoint)),
        ("sslyze --starttls smtp", lambda: run_sslyze(endpoint, work)),
    ]
    if not args.no_testssl and shutil.which("testssl"):
        tools.append(("testssl -t smtp -p -E", lambda: run_testssl(endpoint, work)))
    results: dict[str, dict[str, Any]] = {}
    try:
        for name, run in tools:
            times, cpus, found = [], [], {}
            for _ in range(args.runs):
                own, children = _cpu()
                elapsed, found = run()
                own_after, children_after = _cpu()
                times.append(elapsed)
                # A subprocess: its CPU seconds. The library call: this process's (the embedded server's too).
                cpus.append(children_after - children if children_after > children else own_after - own)
            results[name] = {
                "times": times,
                "median": statistics.median(times),
                "cpu_median": statistics.median(cpus),
                "found": found,
            }
            print(
                f"  {name:<28} median {statistics.median(times):7.3f} s  runs {[round(t, 3) for t in times]}"
                f"  CPU {statistics.median(cpus):.3f} s"
            )
    finally:
        server.stop()

    reference = results["probe (library call)"]
    base = reference["median"]
    print()
    print(
        f"{'tool':<28} {'median s':>9} {'x probe':>8} {'CPU s':>7}  versions / ciphers per version        same as probe"
    )
    for name, res in results.items():
        found = res["found"]
        counts = " ".join(f"{v.removeprefix('TLSv')}:{len(found[v])}" for v in VERSIONS if v in found)
        diffs, disagree = compare(reference["found"], found, SSLYZE_TESTED if name.startswith("sslyze") else None)
        res["differences"], res["disagrees"] = diffs, disagree
        res["ratio"] = res["median"] / base
        same = "NO" if disagree else "yes" if not diffs else "yes, within what it tries"
        print(f"{name:<28} {res['median']:9.3f} {res['ratio']:8.1f} {res['cpu_median']:7.3f}  {counts:<36} {same}")
        for diff in diffs:
            print(f"    {diff}")
    if args.json:
        args.json.write_text(json.dumps({"cell": endpoint.id, "results": results}, indent=2))
    shutil.rmtree(work, ignore_errors=True)
    return 0 if not any(r["disagrees"] for r in results.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
