"""The ``mailtls`` command: serve the grid by hand, read captured mail, probe, verify, certify.

User errors end as one line on stderr and a non-zero exit, never a traceback.

PYTEST_DONT_REWRITE
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from . import __version__
from .backends import REGISTRY, docker_servers
from .clients.families import GENERIC as GENERIC_FAMILY
from .errors import MailTLSError, ManifestError, MatrixError, OptionError
from .policy import CELL_KEYS

if TYPE_CHECKING:  # the rest is imported by the commands that use it: `mailtls probe` starts fast
    from email.message import EmailMessage

    from .manifest import Endpoint
    from .policy import Cell

__all__ = ["main"]

EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


def _say(line: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {line}", file=sys.stderr, flush=True)


# --- selection shared by up/cells/verify/certify ------------------------------------


def _add_selection(p: argparse.ArgumentParser) -> None:
    p.add_argument("--servers", default="auto", help=f"comma-separated: {','.join(REGISTRY)} or auto (default)")
    p.add_argument("--matrix", default=None, help="matrix file (default: the shipped matrix.yaml)")
    p.add_argument("--select", default=None, help="named selection of the matrix (e.g. quick, full)")
    p.add_argument(
        "--where",
        action="append",
        default=[],
        metavar="KEY=VALUE[,VALUE]",
        help=f"keep cells whose KEY matches (globs allowed); KEY one of {', '.join(CELL_KEYS)}; repeatable",
    )
    p.add_argument("--ready-timeout", type=float, default=90.0, help="seconds each server may take to be ready")


def _selected_cells(
    args: argparse.Namespace, *, say: Callable[[str], None] = _say, need_engine: bool = True
) -> list[Cell]:
    from .selection import engine_needed_line, parse_where, resolve

    selection = resolve(
        servers=args.servers,
        matrix=args.matrix,
        select=args.select,
        where=parse_where(args.where),
        need_engine=need_engine,
    )
    if selection.note:
        say(selection.note)
    elif selection.engine_problem and any(s in docker_servers() for s in selection.servers):
        needing = [s for s in selection.servers if s in docker_servers()]
        raise MailTLSError(engine_needed_line(needing, selection.engine_problem, flag="--servers"))
    if not selection.cells:
        raise MailTLSError("the selection matches no cell: check --select and --where (`mailtls cells` lists them)")
    return selection.cells


def _check_writable(path: str, option: str, *, folder: bool) -> None:
    """Raise a one-line error now, before any cell runs, if ``path`` (a folder or a file) cannot be written."""
    target = Path(path)
    if target.exists():
        if folder and not target.is_dir():
            raise OptionError(f"{option} {path}: is an existing file, not a folder: choose another {option}")
        if not folder and target.is_dir():
            raise OptionError(f"{option} {path}: is a folder, not a file: choose another {option}")
    probe_in = target if folder and target.is_dir() else target.parent
    while not probe_in.exists() and probe_in != probe_in.parent:
        probe_in = probe_in.parent
    if not probe_in.is_dir():
        raise OptionError(f"{option} {path}: {probe_in} is a file, not a folder: choose another {option}")
    try:  # a real write: permissions, read-only mounts and full disks all answer here
        fd, probe = tempfile.mkstemp(dir=probe_in, prefix=".mailtls-write-check-")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise OptionError(
            f"{option} {path}: cannot write in {probe_in} ({exc.strerror}): choose another {option}"
        ) from None
    if target.exists() and not folder and not os.access(target, os.W_OK):
        raise OptionError(f"{option} {path}: the file is not writable: choose another {option}")


def _cell_row(cell: Cell) -> list[str]:
    versions = f"{cell.policy.min_version}..{cell.policy.max_version}" if cell.policy else "-"
    return [cell.id, cell.service.name, str(cell.mode), versions, str(cell.cert or "-"), cell.auth.name]


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=False)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    lines = [fmt.format(*header), fmt.format(*("-" * w for w in widths))]
    lines += [fmt.format(*row) for row in rows]
    return "\n".join(line.rstrip() for line in lines)


# --- commands ---------------------------------------------------------------------


def cmd_cells(args: argparse.Namespace) -> int:
    cells = _selected_cells(args, need_engine=False)
    header = ["CELL", "SERVICE", "MODE", "VERSIONS", "CERT", "AUTH"]
    print(_table(header, [_cell_row(c) for c in cells]))
    print(f"\n{len(cells)} cells")
    return EXIT_OK


def _endpoint_table(endpoints: Sequence[Endpoint]) -> str:
    rows = [[e.id, f"{e.host}:{e.port}", e.url, str(e.cert or "-"), e.auth.name] for e in endpoints]
    return _table(["CELL", "LISTEN", "URL", "CERT", "AUTH"], rows)


class _Stop(Exception):
    pass


def cmd_up(args: argparse.Namespace) -> int:
    from .grid import Grid
    from .manifest import ManifestOwner, check_replaceable, write_manifest

    manifest = Path(args.manifest)
    check_replaceable(manifest)  # before anything starts: another run's live manifest stays as it is
    cells = _selected_cells(args)
    stop = threading.Event()

    def on_term(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    _say(f"starting {len(cells)} cells")
    started = time.monotonic()
    with Grid(cells, ready_timeout=args.ready_timeout, progress=_say) as grid:
        endpoints = grid.endpoints
        check_replaceable(manifest)  # another `mailtls up` may have started meanwhile
        write_manifest(manifest, endpoints, owner=ManifestOwner.current("mailtls up"))
        print(_endpoint_table(endpoints))
        for cell_id, why in grid.skipped.items():
            _say(f"not served: {cell_id}: {why}")
        _say(
            f"{len(endpoints)} cells ready in {time.monotonic() - started:.1f} s; "
            f"CA: {grid.pki.ca_file}; user {endpoints[0].username if endpoints else '-'} "
            f"password {endpoints[0].password if endpoints else '-'}"
        )
        _say(f"manifest: {manifest.resolve()}  (mailtls messages --manifest {manifest} --cell ID)")
        if args.once:
            return EXIT_OK
        _say("serving until Ctrl-C / SIGTERM")
        stop.wait()
    return EXIT_OK


def cmd_messages(args: argparse.Namespace) -> int:
    from .manifest import find_endpoint, read_manifest

    endpoint = find_endpoint(read_manifest(args.manifest, live=True), args.cell)
    messages = endpoint.messages()
    if args.json:
        out = [
            {
                "from": _header(m, "From"),
                "to": _header(m, "To"),
                "original_to": _header(m, "X-Original-To"),
                "cell": _header(m, "X-Mailtls-Cell"),
                "subject": _header(m, "Subject"),
                "date": _header(m, "Date"),
                "message_id": _header(m, "Message-ID"),
                "body": _body(m),
            }
            for m in messages
        ]
        print(json.dumps(out, indent=2))
        return EXIT_OK
    if not messages:
        print(f"{endpoint.id}: no messages")
    for i, m in enumerate(messages, 1):
        print(f"--- {i}: From {m.get('From')} To {m.get('X-Original-To') or m.get('To')} Subject {m.get('Subject')}")
        print(_body(m).rstrip())
    return EXIT_OK


def _header(message: EmailMessage, name: str) -> str | None:
    value = message.get(name)
    return None if value is None else " ".join(str(value).split())  # unfold long headers


def _body(message: object) -> str:
    from email.message import EmailMessage

    assert isinstance(message, EmailMessage)
    part = message.get_body(preferencelist=("plain", "html"))
    return part.get_content() if part is not None else ""


def cmd_probe(args: argparse.Namespace) -> int:
    from .probe import parse_target, port_defaults, probe

    host, port = parse_target(args.target)
    protocol, mode = args.protocol, args.mode
    default_protocol, default_mode = port_defaults(port)
    protocol, mode = protocol or default_protocol, mode or default_mode
    if protocol is None or mode is None:
        raise MailTLSError(
            f"port {port} is not a well-known mail port: pass --protocol smtp|imap|pop3 and --mode starttls|implicit"
        )
    if bool(args.client_cert) != bool(args.client_key):
        raise MailTLSError("--client-cert and --client-key go together")
    result = probe(
        host,
        port,
        protocol=protocol,
        mode=mode,
        server_hostname=args.server_name,
        ca_file=args.ca_file,
        client_cert=args.client_cert,
        client_key=args.client_key,
        timeout=args.timeout,
        concurrency=args.concurrency,
    )
    print(json.dumps(result.to_json(), indent=2) if args.json else result.render())
    return EXIT_OK


def cmd_verify(args: argparse.Namespace) -> int:
    from .grid import Grid
    from .manifest import read_manifest
    from .verify import verify_endpoints

    def run(endpoints: Sequence[Endpoint]) -> int:
        _say(f"verifying {len(endpoints)} cells")
        started = time.monotonic()
        report = verify_endpoints(endpoints, progress=_say, timeout=args.timeout, workers=args.workers)
        print(report.render_table())
        if args.json:
            Path(args.json).write_text(json.dumps(report.to_json(), indent=2) + "\n", encoding="utf-8")
        verdict = "every cell tells the truth" if report.ok else f"{len(report.mismatches)} mismatch(es)"
        _say(f"{verdict} ({time.monotonic() - started:.1f} s)")
        return EXIT_OK if report.ok else EXIT_FAIL

    if args.json:
        _check_writable(args.json, "--json", folder=False)
    if args.manifest:
        return run(read_manifest(args.manifest, live=True))
    cells = _selected_cells(args)
    with Grid(cells, ready_timeout=args.ready_timeout, progress=_say) as grid:
        for cell_id, why in grid.skipped.items():
            _say(f"not served: {cell_id}: {why}")
        return run(grid.endpoints)


class _ProgressBar:
    """A one-line bar on a terminal; a line per step elsewhere (CI logs)."""

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()

    def __call__(self, done: int, total: int, line: str) -> None:
        if not self.tty:
            _say(f"[{done}/{total}] {line}")
            return
        width = 30
        filled = width * done // max(total, 1)
        text = f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} {line}"[:160]
        sys.stderr.write(text.ljust(160))
        if done == total:
            sys.stderr.write("\n")
        sys.stderr.flush()


def cmd_certify(args: argparse.Namespace) -> int:
    from .certify import certify, exit_status
    from .clients import command_client, get_client
    from .grid import Grid
    from .manifest import read_manifest
    from .report import shard_of

    if bool(args.client) == bool(args.command):
        raise MailTLSError("certify needs exactly one of --client NAME or --command TEMPLATE")
    _check_writable(args.report, "--report", folder=True)
    shard = _shard(args.shard)
    endpoints_from_manifest = read_manifest(args.manifest, live=True) if args.manifest else None
    if endpoints_from_manifest is not None and shard is not None:
        endpoints_from_manifest = [e for e in endpoints_from_manifest if shard_of(e.id, shard[1]) == shard[0]]
    if args.command:
        protocols = tuple(p.strip() for p in args.protocols.split(",") if p.strip()) if args.protocols else None
        for proto in protocols or ():
            if proto not in ("smtp", "imap", "pop3"):
                raise MailTLSError(f"--protocols: unknown protocol {proto!r}; choose from smtp, imap, pop3")
        client = command_client(args.command, name=args.name or GENERIC_FAMILY, family=args.family, protocols=protocols)
    else:
        if args.name or args.family != GENERIC_FAMILY or args.protocols:
            raise MailTLSError(
                "--name, --family and --protocols describe a --command client; built-in clients have their own"
            )
        client = get_client(args.client)
    if hasattr(client, "progress"):
        client.progress = _say  # the Java client says when it builds
    why = client.unavailable()
    if why:
        raise MailTLSError(why)

    def run(endpoints: Sequence[Endpoint], logs_for: Callable[[Endpoint], list[str]]) -> int:
        _say(f"certifying {client.name} on {len(endpoints)} cells")
        report = certify(
            client, endpoints, logs_for=logs_for, progress=_ProgressBar(), send=not args.no_send, workers=args.workers
        )
        rows = [[r.manifest["id"], r.expected, r.actual, r.verdict, r.negotiated_version or "-"] for r in report.cells]
        print(_table(["CELL", "EXPECTED", "ACTUAL", "VERDICT", "NEGOTIATED"], rows))
        try:
            paths = report.write_all(args.report)
        except OSError as exc:
            raise MailTLSError(f"--report {args.report}: cannot write the report: {exc.strerror or exc}") from None
        counts = report.summary
        print(
            f"\n{client.name}: {counts['pass']} pass, {counts['refused-correctly']} refused correctly, "
            f"{counts['incompatible']} incompatible, {counts['insecure']} insecure; report: {paths['html']}"
        )
        return exit_status(report)

    try:
        if endpoints_from_manifest is not None:
            return run(endpoints_from_manifest, lambda e: [])
        cells = _selected_cells(args)
        if shard is not None:  # start only this shard's cells
            cells = [c for c in cells if shard_of(c.id, shard[1]) == shard[0]]
            _say(f"shard {shard[0]}/{shard[1]}: {len(cells)} cells")
        with Grid(cells, ready_timeout=args.ready_timeout, progress=_say) as grid:
            for cell_id, skipped in grid.skipped.items():
                _say(f"not served: {cell_id}: {skipped}")
            return run(grid.endpoints, lambda e: grid.cell_logs(e.id))
    finally:
        client.close()


def _shard(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    match = re.fullmatch(r"(\d+)/(\d+)", text.strip())
    if match is None or not 1 <= int(match.group(1)) <= int(match.group(2)):
        raise OptionError(f"--shard {text!r}: write K/N with 1 <= K <= N, e.g. --shard 2/4")
    return int(match.group(1)), int(match.group(2))


def cmd_report(args: argparse.Namespace) -> int:
    from .report import merge_reports, read_report

    reports = []
    for folder in args.reports:
        path = Path(folder) / "report.json" if Path(folder).is_dir() else Path(folder)
        try:
            reports.append(read_report(path))
        except FileNotFoundError:
            raise MailTLSError(f"{path}: no report.json there; give the --report folders of the shards") from None
        except (ValueError, KeyError, TypeError) as exc:
            raise MailTLSError(f"{path}: not a certify report ({exc})") from None
    _check_writable(args.out, "--out", folder=True)
    try:
        merged = merge_reports(reports)
    except ValueError as exc:
        raise MailTLSError(str(exc)) from None
    paths = merged.write_all(args.out)
    counts = merged.summary
    print(
        f"{merged.client}: {counts['total']} cells from {len(reports)} reports: {counts['pass']} pass, "
        f"{counts['refused-correctly']} refused correctly, {counts['incompatible']} incompatible, "
        f"{counts['insecure']} insecure; report: {paths['html']}"
    )
    return 0 if counts["ok"] else 1


def cmd_images(args: argparse.Namespace) -> int:
    from . import runtime
    from .errors import ImageBuildError
    from .grid import get_backend
    from .selection import parse_servers

    if args.action == "prune":
        removed = runtime.prune_images(progress=_say)
        print(f"removed {len(removed)} old image(s)")
        return EXIT_OK
    servers = parse_servers(args.servers) or list(docker_servers())
    for server in servers:
        if server not in docker_servers():
            raise MailTLSError(f"{server} has no image; images exist for {', '.join(docker_servers())}")
    try:  # a malformed value is a usage error, said before any engine is asked
        if args.registry:
            runtime.check_registry(args.registry, "--registry")
        if args.base_image:
            runtime.check_image_ref(args.base_image, "--base-image")
    except ImageBuildError as exc:
        raise OptionError(str(exc)) from None
    # pull obtains images without building anything; build and push build what no registry holds.
    with runtime.using_images(base=args.base_image, registry=args.registry, build=args.action != "pull") as settings:
        registry = settings.registry
        if args.action in ("pull", "push") and registry is None:
            raise OptionError(
                f"`mailtls images {args.action}` needs a registry: --registry HOST[:PORT][/PATH] "
                f"(or {runtime.REGISTRY_ENV}), e.g. --registry 127.0.0.1:5000"
            )
        started = time.monotonic()
        base_id = runtime.ensure_base_image(progress=_say)
        print(f"base: {settings.base} ({base_id[7:19]}, {time.monotonic() - started:.1f} s)")
        if args.action == "base":
            return EXIT_OK
        if args.action == "push" and registry is not None:
            if "@" in settings.base:  # a digest names the same image everywhere: no copy is needed
                print(f"base: {settings.base} is pinned by digest; not pushed")
            else:
                print(f"base: pushed as {runtime.push_image(settings.base, registry, progress=_say)}")
        missing = 0
        for server in servers:
            started = time.monotonic()
            try:
                tag = get_backend(server).image(progress=_say)
            except ImageBuildError as exc:
                if args.action != "pull":
                    raise
                print(f"mailtls: {server}: {exc}", file=sys.stderr)
                missing += 1
                continue
            if args.action == "push" and registry is not None:
                print(f"{server}: {tag} pushed as {runtime.push_image(tag, registry, progress=_say)}")
            else:
                print(f"{server}: {tag} ({time.monotonic() - started:.1f} s)")
    return EXIT_FAIL if missing else EXIT_OK


def cmd_reap(args: argparse.Namespace) -> int:
    from . import runtime

    removed = runtime.reap_orphans(progress=_say)
    print(f"removed {len(removed)} orphaned item(s) (containers, networks, volumes, temp dirs)")
    return EXIT_OK


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not at least 1")
    return value


def _families() -> list[str]:
    from .clients.families import family_names

    return list(family_names())


def _client_names() -> list[str]:
    from .clients import CLIENT_NAMES

    return list(CLIENT_NAMES)


def _placeholders() -> list[str]:
    from .clients.placeholders import PLACEHOLDERS

    return list(PLACEHOLDERS)


# --- wiring -----------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mailtls",
        description="Serve real mail servers across a grid of TLS policies; probe, verify and certify.",
    )
    parser.add_argument("--version", action="version", version=f"mailtls {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("cells", help="list the cells of a selection without starting anything")
    _add_selection(p)
    p.set_defaults(func=cmd_cells)

    p = sub.add_parser("up", help="start the servers for a selection, write the manifest, serve until Ctrl-C")
    _add_selection(p)
    p.add_argument("--manifest", default="manifest.json", help="where to write the manifest (default: manifest.json)")
    p.add_argument("--once", action="store_true", help="exit (and remove the servers) as soon as all cells are ready")
    p.set_defaults(func=cmd_up)

    p = sub.add_parser("messages", help="print the messages one cell received")
    p.add_argument("--manifest", default="manifest.json", help="manifest written by `mailtls up`")
    p.add_argument("--cell", required=True, help="cell id, as listed by `mailtls up`")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_messages)

    p = sub.add_parser(
        "probe", help="what a mail server really accepts: versions, ciphers, certificate, STARTTLS, auth"
    )
    p.add_argument("target", metavar="HOST:PORT")
    p.add_argument("--protocol", choices=["smtp", "imap", "pop3"], help="default: from a well-known port")
    p.add_argument("--mode", choices=["starttls", "implicit"], help="default: from a well-known port")
    p.add_argument("--server-name", default=None, help="name to verify and send as SNI (default: HOST)")
    p.add_argument("--ca-file", default=None, help="CA to verify the certificate against (default: system store)")
    p.add_argument("--client-cert", default=None, help="PEM client certificate for mutual TLS")
    p.add_argument("--client-key", default=None, help="its key")
    p.add_argument("--timeout", type=float, default=5.0, help="seconds per connection (default 5)")
    p.add_argument("--concurrency", type=int, default=8, help="parallel handshakes (default 8)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_probe)

    p = sub.add_parser("verify", help="probe every cell and compare with what it declares; exit 1 on a mismatch")
    _add_selection(p)
    p.add_argument("--manifest", default=None, help="verify running servers from this manifest instead of starting any")
    p.add_argument("--json", default=None, metavar="FILE", help="also write the report as JSON")
    p.add_argument("--timeout", type=float, default=5.0, help="seconds per connection (default 5)")
    p.add_argument("--workers", type=int, default=8, help="cells probed at once (default 8)")
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("certify", help="run a client across the grid; report what worked, what failed and why")
    _add_selection(p)
    p.add_argument("--client", default=None, help="built-in client: " + ", ".join(_client_names()))
    p.add_argument(
        "--command",
        default=None,
        metavar="TEMPLATE",
        help="your client as a command line (split like a shell line, no shell runs; exit 0 = success) with "
        "placeholders " + " ".join(f"{{{name}}}" for name in _placeholders()) + "; what it offers is read from "
        "its own ClientHello (docs/certify.md)",
    )
    p.add_argument("--name", default=None, help="with --command: the client's name in the report")
    p.add_argument(
        "--family",
        default=GENERIC_FAMILY,
        choices=_families(),
        help="with --command: the client's family, so that diagnoses and remedies use its own settings "
        f"(its TLS version, cipher and verification knobs); default: {GENERIC_FAMILY}",
    )
    p.add_argument(
        "--protocols",
        default=None,
        metavar="LIST",
        help="with --command: the protocols it speaks (default smtp,imap,pop3)",
    )
    p.add_argument("--manifest", default=None, help="certify against running servers from this manifest")
    p.add_argument("--report", default="mailtls-report", help="report folder (default: mailtls-report)")
    p.add_argument("--no-send", action="store_true", help="connect and log in, but send no message")
    p.add_argument(
        "--shard",
        default=None,
        metavar="K/N",
        help="certify only shard K of N (a stable split by cell id); merge the reports with `mailtls report merge`",
    )
    p.add_argument(
        "--workers",
        type=_positive_int,
        default=8,
        metavar="N",
        help="cells certified at once (default 8; each cell's sessions and log lines stay its own)",
    )
    p.set_defaults(func=cmd_certify)

    p = sub.add_parser("report", help="merge the reports of certify shards into one")
    p.add_argument("action", choices=["merge"], help="merge: one report from shard reports")
    p.add_argument(
        "reports", nargs="+", metavar="DIR", help="the --report folders (or report.json files) of the shards"
    )
    p.add_argument("--out", default="mailtls-report", help="where the merged report goes (default: mailtls-report)")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser(
        "images",
        help="obtain the server images: pulled from a registry when one holds them, built otherwise (content tags)",
    )
    p.add_argument(
        "action",
        choices=["build", "base", "pull", "push", "prune"],
        help="build: the server images (pulled from --registry first, if given); base: the base image only; "
        "pull: from --registry, building nothing; push: to --registry (built first if missing); "
        "prune: remove all but the newest of each",
    )
    p.add_argument("--servers", default=None, help="which images (default: every container server)")
    p.add_argument(
        "--registry",
        default=None,
        metavar="HOST[:PORT][/PATH]",
        help="registry to share images through by their content tags, e.g. 127.0.0.1:5000 or "
        "registry.example.org/team (default: $MAILTLS_REGISTRY)",
    )
    p.add_argument(
        "--base-image",
        default=None,
        metavar="REF",
        help="the image every recipe starts FROM (default: $MAILTLS_BASE_IMAGE, else debian:bookworm-slim)",
    )
    p.set_defaults(func=cmd_images)

    p = sub.add_parser("reap", help="remove containers left behind by runs that died")
    p.set_defaults(func=cmd_reap)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse already printed the usage error
        return int(exc.code or 0)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        _say("interrupted; servers removed")
        return EXIT_INTERRUPTED
    except MailTLSError as exc:
        print(f"mailtls: error: {exc}", file=sys.stderr)
        return EXIT_USAGE if isinstance(exc, MatrixError | ManifestError | OptionError) else EXIT_FAIL
    except BrokenPipeError:
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
