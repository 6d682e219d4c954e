"""What the recorder's passive relay path costs per chunk, in-process (no sockets, no event loop).

    PYTHONPATH=CHECKOUT python benchmarks/bench_relay_chunk.py [LABEL]

Relays a 1.4 kB TLS application-data chunk through ``_Connection.data`` of a session whose analysis has settled
(the steady state of a mail session: forward and count), 200 000 times, best of 5. Run it against two checkouts
in turn (``PYTHONPATH=/path/to/other``) to compare their passive paths: a CPU-bound figure that load on a shared
machine disturbs less than the socket benchmark (bench_recorder.py).
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from pytest_mailtls.manifest import Endpoint
from pytest_mailtls.matrix import load_matrix
from pytest_mailtls.wire import recorder as rec


class _Transport:
    def write(self, data: bytes) -> None:
        return None

    def get_extra_info(self, key: str, default: Any = None) -> Any:
        return ("127.0.0.1", 1) if key == "peername" else default

    def is_closing(self) -> bool:
        return False


class _Recorder:  # what a connection needs of its recorder
    _live: set[Any] = set()

    def _session_id(self) -> str:
        return "1"


def main() -> int:
    label = sys.argv[1] if len(sys.argv) > 1 else "this checkout"
    cell = next(
        c for c in load_matrix().cells(servers=["postfix"]) if c.id.endswith("submission-starttls-intermediate-valid")
    )
    endpoint = Endpoint(
        cell=cell, host="127.0.0.1", port=1, server_hostname="localhost", ca_file="x", username="u", password="p"
    )
    folder = Path(tempfile.mkdtemp(prefix="mailtls-bench-"))
    passive: Any = None if hasattr(rec, "Link") else rec.Tap()  # before active taps, every front held a passive Tap
    front = rec._Front(endpoint, ("127.0.0.1", 1), folder / "s.jsonl", passive)
    conn: Any = rec._Connection(_Recorder(), front, _Transport())  # type: ignore[arg-type]
    conn.upstream = _Transport()
    conn.analyzer._tls_active = True
    conn.analyzer.tls._broken = True  # settled: nothing more to read
    chunk = b"\x17\x03\x03" + b"x" * 1400
    n = 200_000
    best = []
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(n):
            conn.data("client", chunk)
        best.append((time.perf_counter() - start) / n * 1e9)
    (folder / "s.jsonl").unlink(missing_ok=True)
    folder.rmdir()
    print(f"{label}: {min(best):.0f} ns per relayed chunk (best of 5 x {n})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
