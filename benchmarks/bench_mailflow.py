"""The mail flow (Postfix -> LMTP -> Dovecot): start time of the combined stack, and SMTP-to-IMAP time.

    python benchmarks/bench_mailflow.py [--repeat 3] [--messages 200] [--threads 8] [--selection full]

Images are built (or found) and the session PKI made before timing, as in a test session with warm
images. Each trial starts the combined stack for every Postfix and Dovecot cell of the selection, side by
side as a grid does (``backends.stack.start_stack``: Dovecot's sockets appear, Postfix starts on them),
until every port of both passed a real exchange. Then ``--threads`` clients send ``--messages`` messages
over SMTP (STARTTLS + AUTH through Dovecot on one cell, implicit TLS + AUTH on another, a new session every
5 messages) while one IMAP session polls (NOOP + UID SEARCH) until all of them are in the INBOX: "accepted"
is when the last SMTP session ended, "in INBOX" when IMAP saw the last message; both from the first byte.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
import uuid
from collections.abc import Sequence
from email.message import EmailMessage
from pathlib import Path

from pytest_mailtls import runtime
from pytest_mailtls.backends.base import StartOptions
from pytest_mailtls.backends.stack import MailStack, start_stack
from pytest_mailtls.connect import open_client
from pytest_mailtls.manifest import Endpoint
from pytest_mailtls.matrix import load_matrix
from pytest_mailtls.pki import SessionPKI
from pytest_mailtls.policy import Cell
from pytest_mailtls.wire.recorder import Recorder

SENDERS = ("postfix-submission-starttls-intermediate-valid", "postfix-smtps-implicit-modern-valid")
READER = "dovecot-imaps-implicit-modern-valid"
PER_SESSION = 5


def _start(
    postfix: list[Cell], dovecot: list[Cell], pki: SessionPKI, workdir: Path
) -> tuple[MailStack, dict[str, float]]:
    marks: dict[str, float] = {}

    def progress(line: str) -> None:
        for server in ("postfix", "dovecot"):
            if line.startswith(f"{server}: ") and "cells ready in" in line:
                marks[f"{server}_ready"] = float(line.split("ready in ")[1].split(" s")[0])

    started = time.perf_counter()
    stack = start_stack(postfix, dovecot, StartOptions(pki=pki, workdir=workdir, progress=progress))
    marks["total"] = time.perf_counter() - started
    return stack, marks


def _flow(stack: MailStack, messages: int, threads: int) -> dict[str, float]:
    """Clients reach the cells through a session recorder, as in a grid (a sealed container has only sockets)."""
    with tempfile.TemporaryDirectory(prefix="mailtls-bench-") as sessions:
        recorder = Recorder(sessions)
        try:
            senders = [recorder.front(stack.endpoint(i)) for i in SENDERS]
            return _send_and_read(senders, recorder.front(stack.endpoint(READER)), messages, threads)
        finally:
            recorder.stop()


def _send_and_read(senders: list[Endpoint], reader: Endpoint, messages: int, threads: int) -> dict[str, float]:
    run = uuid.uuid4().hex
    counts = [messages // threads + (1 if i < messages % threads else 0) for i in range(threads)]
    errors: list[BaseException] = []

    def send(number: int) -> None:
        endpoint: Endpoint = senders[number % len(senders)]
        try:
            for first in range(0, counts[number], PER_SESSION):
                client = open_client(endpoint, context=endpoint.compatible_context(), timeout=30)
                client.login(endpoint.username, endpoint.password)
                for n in range(first, min(first + PER_SESSION, counts[number])):
                    msg = EmailMessage()
                    msg["From"] = endpoint.address
                    msg["To"] = f"bench-{number}-{n}@example.org"
                    msg["Subject"] = f"bench {number}/{n}"
                    msg["X-Mailtls-Run"] = run
                    msg.set_content("x" * 512)
                    client.send_message(msg)
                client.quit()
        except BaseException as exc:
            errors.append(exc)

    imap = open_client(reader, context=reader.compatible_context(), timeout=30)
    imap.login(reader.username, reader.password)
    imap.select("INBOX", readonly=True)
    workers = [threading.Thread(target=send, args=(i,)) for i in range(threads)]
    started = time.perf_counter()
    for t in workers:
        t.start()
    accepted = None
    seen = 0
    deadline = started + 300
    while seen < messages:
        if accepted is None and not any(t.is_alive() for t in workers):
            accepted = time.perf_counter() - started
            if errors:
                raise RuntimeError(f"{len(errors)} sending threads failed; first: {errors[0]!r}")
        imap.noop()
        _, data = imap.uid("SEARCH", "HEADER", "X-Mailtls-Run", run)
        seen = len(data[0].split())
        if time.perf_counter() > deadline:
            raise RuntimeError(f"only {seen} of {messages} messages reached the INBOX in 300 s")
        if seen < messages:
            time.sleep(0.02)
    in_inbox = time.perf_counter() - started
    for t in workers:
        t.join()
    imap.logout()
    return {"accepted": accepted if accepted is not None else in_inbox, "inbox": in_inbox}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--messages", type=int, default=200)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--selection", default=None, help="matrix selection (default: the matrix's default)")
    args = parser.parse_args(argv)
    matrix = load_matrix()
    postfix = matrix.cells(servers=["postfix"], selection=args.selection)
    dovecot = matrix.cells(servers=["dovecot"], selection=args.selection)
    ids = {c.id for c in postfix + dovecot}
    missing = [i for i in (*SENDERS, READER) if i not in ids]
    if missing:
        parser.error(f"the selection lacks the cells this benchmark sends and reads on: {', '.join(missing)}")
    image_started = time.perf_counter()
    for server in ("postfix", "dovecot"):
        runtime.ensure_image(server, progress=print)
    image_s = time.perf_counter() - image_started
    with tempfile.TemporaryDirectory(prefix="bench-mailflow-") as tmp:
        base = Path(tmp)
        pki_started = time.perf_counter()
        pki = SessionPKI(base / "pki")
        for cell in postfix + dovecot:
            if cell.cert is not None:
                pki.server_files(cell.cert)
        pki.client_files()
        pki_s = time.perf_counter() - pki_started
        print(f"images ready in {image_s:.2f} s; session PKI made in {pki_s:.2f} s")
        print(
            f"combined stack: {len(postfix)} Postfix + {len(dovecot)} Dovecot cells; "
            f"{args.messages} messages from {args.threads} threads per trial"
        )
        print(
            f"{'trial':>5} {'dovecot':>8} {'postfix':>8} {'START':>7} {'accepted':>9} {'IN INBOX':>9} {'msg/s':>7} {'stop':>6}"
        )
        results = []
        try:
            for n in range(args.repeat):
                stack, marks = _start(postfix, dovecot, pki, base / f"trial-{n}")
                try:
                    flow = _flow(stack, args.messages, args.threads)
                finally:
                    stopping = time.perf_counter()
                    stack.stop()
                    stop = time.perf_counter() - stopping
                r = {
                    "dovecot": marks["dovecot_ready"],
                    "postfix": marks["postfix_ready"],
                    "start": marks["total"],
                    "accepted": flow["accepted"],
                    "inbox": flow["inbox"],
                    "rate": args.messages / flow["inbox"],
                    "stop": stop,
                }
                results.append(r)
                print(
                    f"{n + 1:>5} {r['dovecot']:>8.2f} {r['postfix']:>8.2f} {r['start']:>7.2f} {r['accepted']:>9.2f} "
                    f"{r['inbox']:>9.2f} {r['rate']:>7.0f} {r['stop']:>6.2f}"
                )
        finally:
            runtime.stop_all()
    med = {k: statistics.median(r[k] for r in results) for k in results[0]}
    print(
        f"{'med':>5} {med['dovecot']:>8.2f} {med['postfix']:>8.2f} {med['start']:>7.2f} {med['accepted']:>9.2f} "
        f"{med['inbox']:>9.2f} {med['rate']:>7.0f} {med['stop']:>6.2f}"
    )
    print(
        "dovecot/postfix = each server from its container start until every port passed its exchange (Postfix's "
        "includes waiting for Dovecot's sockets); START = start_stack() wall time (render, containers, both "
        "ready); accepted/IN INBOX = seconds from the first SMTP byte until the last message was accepted / "
        "seen over IMAP; stop = removing both containers"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
