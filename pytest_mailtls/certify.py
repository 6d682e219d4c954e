"""Certify a client: run it against every endpoint, compare with the oracle, diagnose every failure.

``certify(client, endpoints)`` returns a :class:`~pytest_mailtls.report.Report`;
:func:`exit_status` turns it into the command's exit status (non-zero on any
``incompatible`` or ``insecure`` cell). :func:`check` does the same for one
endpoint inside a test, and :func:`assert_outcome` fails that test with the
diagnosis and its evidence.

PYTEST_DONT_REWRITE
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .clients.base import Client, ClientResult
from .clients.families import client_family
from .connect import tls_handshake
from .diagnose import UNCLASSIFIED, Diagnosis, Finding, diagnose, remedy
from .errors import MailTLSError
from .manifest import Endpoint
from .oracle import ClientProfile, Expectation, Verdict, applicable, expect, verdict
from .policy import VERSIONS, Mode
from .report import CellRecord, Report
from .tls import client_context
from .wire.attacks import VULNERABILITY_CLASSES, attack_named
from .wire.judge import WireView, findings, insecurity, offered_profile

__all__ = [
    "certify",
    "check",
    "exit_status",
    "assert_outcome",
    "version_findings",
    "CertifyProgress",
    "LogSource",
    "OutcomeError",
]

#: Called after each cell: ``(done, total, line)``; ``done`` counts from 1.
CertifyProgress = Callable[[int, int, str], None]
#: The server's log lines so far for an endpoint (certify keeps those that appear during the run).
LogSource = Callable[[Endpoint], list[str]]

#: At most this long, certify waits for a server to finish logging a connection (Postfix logs after the client
#: left); it stops as soon as the log has been quiet for ``LOG_QUIET`` seconds.
LOG_SETTLE = 1.0
LOG_QUIET = 0.15
#: When the evidence is still ambiguous, how long to wait for a server that logs late.
LATE_LOG_WAIT = 2.0
#: Cells certified at once by default: most of a cell's time is spent waiting (for the server's log to settle,
#: for delivery), so more workers than cores pay off.
DEFAULT_WORKERS = 8
#: At most this long, certify waits for the recorder to write down connections the client left open.
SESSION_WAIT = 2.0


def _no_progress(done: int, total: int, line: str) -> None:
    return None


def certify(
    client: Client,
    endpoints: Sequence[Endpoint],
    *,
    progress: CertifyProgress | None = None,
    logs_for: LogSource | None = None,
    send: bool = True,
    workers: int | None = None,
) -> Report:
    """Run ``client`` against each endpoint whose protocol it speaks, ``workers`` cells at a time.

    Each cell is run by one worker, so what is attributed to a run stays that run's own: the sessions the
    recorder wrote for that cell since the run began, and the server log lines about that cell that appeared
    meanwhile. Endpoints without a recorder are run one after another (``workers`` is then 1), as their
    log lines are the only witness. ``logs_for`` (optional) returns an endpoint's server log lines;
    ``progress`` hears about each finished cell; the report lists cells in ``endpoints`` order.
    """
    report_progress = progress or _no_progress
    started = dt.datetime.now(dt.UTC)
    wanted = [e for e in endpoints if applicable(client.profile, e.cell)]
    skipped = [e.id for e in endpoints if not applicable(client.profile, e.cell)]
    recorded = all(e.extra.get("sessions_file") for e in wanted)
    count = max(1, workers if workers is not None else DEFAULT_WORKERS) if recorded else 1
    records: list[CellRecord | None] = [None] * len(wanted)
    done = 0
    lock = threading.Lock()

    def one(index: int) -> None:
        nonlocal done
        record = check(client, wanted[index], logs_for=logs_for, send=send)
        with lock:
            records[index] = record
            done += 1
            report_progress(done, len(wanted), f"{wanted[index].id}: {record.verdict} ({record.actual})")

    if count == 1:
        for index in range(len(wanted)):
            one(index)
    else:
        pool = ThreadPoolExecutor(max_workers=count, thread_name_prefix="mailtls-certify")
        try:
            for future in [pool.submit(one, index) for index in range(len(wanted))]:
                future.result()  # re-raises a worker's error
        except BaseException:  # Ctrl-C: start no further cell; those running end with their client's deadline
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        pool.shutdown()
    return Report(
        client=client.name,
        profile=client.profile.to_json(),
        generated=started.isoformat(timespec="seconds"),
        cells=[r for r in records if r is not None],
        skipped=skipped,
    )


def check(client: Client, endpoint: Endpoint, *, logs_for: LogSource | None = None, send: bool = True) -> CellRecord:
    """One client session against one endpoint, judged from the wire first and diagnosed.

    With a session recorder in front of the cell (every grid has one), what crossed the wire decides: the
    client's own ClientHello replaces an undeclared profile's guesses, credentials or mail in clear on a
    port that offers TLS, application data over a certificate that must be refused and a session below the
    cell's secure offer are ``insecure`` whatever the client says, and a client that reports success
    without ever finishing a handshake did not succeed.
    """
    before = _safe_logs(logs_for, endpoint)
    started = time.time()
    result = client.run(endpoint, send=send)
    view = _wire(endpoint, since=started)
    server_lines = _new_lines(before, _settled_logs(logs_for, endpoint)) if logs_for is not None else []
    profile = client.profile
    if view is not None and not profile.declared:
        profile = offered_profile(profile, view, ok=result.ok)
    expectation = expect(profile, endpoint.cell)
    ok = result.ok
    if ok and view is not None and (why_not := _no_real_session(view)):
        ok = False
        result.error_text = (result.error_text + "\n" if result.error_text else "") + f"[pytest-mailtls] {why_not}"
    tls = result.tls
    if view is not None and view.sessions:
        tls = bool(view.tls)
    outcome, why = verdict(expectation, ok=ok, tls=tls)
    wire_insecure = insecurity(view, ok=ok) if view is not None else None
    diagnosis: Diagnosis | None
    if wire_insecure is not None and view is not None:
        cls, evidence = wire_insecure
        outcome = Verdict.INSECURE
        why = f"{cls}: the wire shows {evidence[0].removeprefix('wire: ')}"
        diagnosis = Diagnosis(cls, evidence, _insecure_remedy(cls, client, endpoint, profile, view))
    elif ok:
        diagnosis = (
            _insecure_diagnosis(client, endpoint, expectation, result, view) if outcome == Verdict.INSECURE else None
        )
    else:
        diagnosis, server_lines = _failure_diagnosis(
            client, endpoint, expectation, result, before, server_lines, logs_for, view, profile
        )
    network = endpoint.cell.network
    if network is not None and outcome == Verdict.REFUSED_CORRECTLY and diagnosis is not None:
        diagnosis = dataclasses.replace(diagnosis, remedy=attack_named(network).refused_remedy)
    actual = "success" if ok else diagnosis.failure_class if diagnosis else "unclassified"
    negotiated = view.negotiated if view is not None else None
    if negotiated is not None:
        result.negotiated_version, result.cipher = negotiated
    return CellRecord.build(
        endpoint,
        expectation=expectation,
        result=result,
        verdict=outcome,
        verdict_reason=why,
        actual=actual,
        diagnosis=diagnosis,
        server_log=server_lines,
        wire=view.to_json() if view is not None else None,
        client_offer=_offer(view),
    )


def _wire(endpoint: Endpoint, *, since: float) -> WireView | None:
    """The sessions the client opened on ``endpoint`` since ``since``; ``None`` without a recorder."""
    if not endpoint.extra.get("sessions_file"):
        return None
    try:
        sessions = endpoint.sessions(since=since, wait=SESSION_WAIT)
    except (OSError, ValueError) as exc:  # an unreadable record must not stop a certification
        warnings.warn(f"{endpoint.id}: sessions unreadable: {exc}", stacklevel=2)
        return None
    return WireView(endpoint.cell, tuple(sessions))


def _no_real_session(view: WireView) -> str | None:
    """Why a reported success is not one: no connection, or no TLS session and no cleartext exchange."""
    if not view.sessions:
        return "the client reported success, but no connection reached the cell"
    if any(s.client_finished for s in view.sessions):
        return None
    if any(s.client_hello is None and (s.dialogue or s.mail_commands) for s in view.sessions):
        return None  # a cleartext session: judged by what crossed
    return "the client reported success, but the wire shows no finished TLS handshake: " + "; ".join(view.summary())


def _offer(view: WireView | None) -> dict[str, Any] | None:
    hello = view.hello if view is not None else None
    if hello is None or hello.client_hello is None:
        return None
    h = hello.client_hello
    return {"versions": h.versions, "ciphers": h.ciphers, "sni": h.sni, "versions_from": h.versions_from}


def _insecure_remedy(cls: str, client: Client, endpoint: Endpoint, profile: ClientProfile, view: WireView) -> str:
    hello = view.hello.client_hello if view.hello is not None else None
    offer: dict[str, Any] = {"offered_versions": hello.versions, "offered_ciphers": hello.ciphers} if hello else {}
    if cls == "starttls-required":
        return (
            "the client sent credentials or mail without TLS on a port that offers it: require STARTTLS ("
            + remedy("starttls-required", cell=endpoint.cell, profile=profile).split(": ", 1)[-1]
            + ") and never authenticate or send before the TLS handshake succeeded"
        )
    if cls == "protocol-version-mismatch":
        return "the client settled for a legacy version: " + remedy(cls, cell=endpoint.cell, profile=profile, **offer)
    if cls == "no-shared-cipher" and endpoint.cell.policy is not None and endpoint.cell.policy.null_encryption:
        return (
            "the client offered and accepted a NULL-encryption suite (no encryption at all): take eNULL/NULL out "
            "of its cipher list and never lower its OpenSSL security level to 0"
        )
    if cls == "no-shared-cipher":
        return "the client offered no forward-secret AEAD suite: " + remedy(
            cls, cell=endpoint.cell, profile=profile, **offer
        )
    if cls in VULNERABILITY_CLASSES:
        return remedy(cls, cell=endpoint.cell, profile=profile)
    return _accepted_remedy(cls, client, endpoint)


def _failure_diagnosis(
    client: Client,
    endpoint: Endpoint,
    expectation: Expectation,
    result: ClientResult,
    before: list[str],
    server_lines: list[str],
    logs_for: LogSource | None,
    view: WireView | None = None,
    profile: ClientProfile | None = None,
) -> tuple[Diagnosis, list[str]]:
    """Diagnose a failure: the wire first, then the client's words, then the server's log (waited for when the
    evidence leaves several classes), then a version probe."""
    profile = profile or client.profile
    tls = result.tls
    if view is not None and view.sessions:
        tls = bool(view.tls)
    if tls is None and endpoint.mode is Mode.IMPLICIT and not profile.implicit_tls:
        tls = False  # the profile says it opens in plaintext
    wire = [Finding(f.line, f.classes, f.weight) for f in findings(view)] if view is not None else []
    hello = view.hello.client_hello if view is not None and view.hello is not None else None
    kwargs: dict[str, Any] = {
        "family": profile.family,
        "exception_type": result.exception_type,
        "server": endpoint.server,
        "cell": endpoint.cell,
        "profile": offered_profile(profile, view) if view is not None else profile,
        "expected": None if expectation.success else expectation.outcome,
        "tls": tls,
        "wire": wire,
        "offered_versions": hello.versions if hello else ([] if view is not None and view.silent_at_tls else None),
        "offered_ciphers": hello.ciphers if hello else None,
    }
    diagnosis = diagnose(result.error_text, server_lines=server_lines, **kwargs)
    if not diagnosis.ambiguous:
        return diagnosis, server_lines
    # Some servers log a failed handshake only when they notice the client is gone (Dovecot's login process).
    heard = any(e.startswith("server: ") for e in diagnosis.evidence)
    deadline = time.monotonic() + (0.0 if heard else LATE_LOG_WAIT)
    while logs_for is not None and time.monotonic() < deadline:
        time.sleep(0.1)
        latest = _new_lines(before, _safe_logs(logs_for, endpoint))
        if latest != server_lines:
            server_lines = latest
            diagnosis = diagnose(result.error_text, server_lines=server_lines, **kwargs)
            if not diagnosis.ambiguous:
                return diagnosis, server_lines
    # Still open between the version and something else: ask the server which versions it speaks
    # (the probe's own log lines come after the ones read for this run, so they are never mistaken for them).
    version_in_doubt = "protocol-version-mismatch" in diagnosis.tied or diagnosis.failure_class == UNCLASSIFIED
    heard_hello = view is not None and view.hello is not None  # the wire already told which versions were offered
    if (
        version_in_doubt
        and not heard_hello
        and endpoint.cell.tls
        and result.negotiated_version is None
        and tls is not False
    ):
        probed = version_findings(endpoint, profile, among=diagnosis.tied)
        if probed:
            diagnosis = diagnose(result.error_text, server_lines=server_lines, findings=probed, **kwargs)
    return diagnosis, server_lines


def _insecure_diagnosis(
    client: Client, endpoint: Endpoint, expectation: Expectation, result: ClientResult, view: WireView | None = None
) -> Diagnosis:
    """A success that must not happen: name what was accepted and what the client must stop doing."""
    negotiated = f"{result.negotiated_version} {result.cipher}" if result.negotiated_version else "plaintext"
    if view is not None and view.sessions:
        evidence = [f"wire: {line}" for line in view.summary()] + [f"oracle: {expectation.reason}"]
        cls = expectation.outcome if not expectation.success else "starttls-required"
        return Diagnosis(cls, evidence, _accepted_remedy(cls, client, endpoint))
    if expectation.success:  # it worked, but in plaintext on a port that offers TLS
        return Diagnosis(
            "starttls-required",
            [f"client: the session succeeded over {negotiated} although the port offers TLS"],
            "the client went on without TLS: "
            + remedy("starttls-required", cell=endpoint.cell, profile=client.profile),
        )
    cls = expectation.outcome
    evidence = [f"client: the session succeeded over {negotiated}", f"oracle: {expectation.reason}"]
    return Diagnosis(cls, evidence, _accepted_remedy(cls, client, endpoint))


def version_findings(
    endpoint: Endpoint, profile: ClientProfile, *, among: Sequence[str] = (), timeout: float = 5.0
) -> list[Finding]:
    """Ask the server which versions it completes a handshake at, to settle an ambiguous failure.

    Called only when the client's and the server's words left several classes
    (a server hanging up mid-handshake says nothing). One handshake per version,
    verification off and every cipher at security level 0: a probe of what the
    server speaks, not of what the client accepts.
    """
    accepted: list[str] = []
    for version in VERSIONS:
        ctx = client_context(
            version, "ALL:@SECLEVEL=0", client_cert=endpoint.client_cert_file, client_key=endpoint.client_key_file
        )
        try:
            tls_handshake(
                endpoint.host,
                endpoint.port,
                protocol=endpoint.protocol,
                implicit=endpoint.mode is Mode.IMPLICIT,
                context=ctx,
                server_hostname=endpoint.server_hostname,
                timeout=timeout,
            )
        except (OSError, MailTLSError):
            continue
        accepted.append(version)
    if not accepted:
        return []
    offered = profile.effective_versions
    said = f"the server completes handshakes at {' '.join(accepted)}; the client offers {' '.join(offered) or 'none'}"
    if not set(accepted) & set(offered):
        return [Finding(f"{said}: no common version", ("protocol-version-mismatch",))]
    # A common version exists: the failure lies elsewhere, among the other classes still in doubt.
    others = tuple(c for c in among if c != "protocol-version-mismatch") or ("no-shared-cipher",)
    return [Finding(f"{said}: the version is not the problem", others, 1)]


def _accepted_remedy(cls: str, client: Client, endpoint: Endpoint) -> str:
    p = client.profile
    family = client_family(p.family)
    if cls in ("starttls-not-offered", "starttls-required"):
        return (
            "the client sent its session (and credentials) in plaintext: require TLS "
            "(STARTTLS required, or implicit TLS) and never authenticate on a connection without it"
        )
    if cls in ("untrusted-certificate", "incomplete-chain", "certificate-expired", "certificate-not-yet-valid"):
        what = "verification is off" if not p.verify else "its verification let this certificate through"
        return f"the client accepted a certificate it must reject ({what}): " + family.knob("verify-on")
    if cls == "hostname-mismatch":
        return "the client does not check the certificate's host name: " + family.knob("hostname-on")
    if cls == "weak-key-or-signature":
        return "the client accepted an RSA key under 2048 bits or a SHA-1 signature: raise its minimum " + (
            family.knob("weak-on")
        )
    if cls == "weak-dh":
        policy = endpoint.cell.policy
        bits = f"a {policy.dh_bits}-bit" if policy is not None and policy.dh_bits else "a small"
        return (
            f"the client completed a DHE key exchange over {bits} DH group (under 2048 bits, breakable since "
            "Logjam): refuse DH groups under 2048 bits (OpenSSL: keep security level 2, no @SECLEVEL=1 or 0; JDK: "
            'jdk.tls.disabledAlgorithms += "DH keySize < 2048"), or offer ECDHE suites only'
        )
    if cls in ("protocol-version-mismatch", "no-shared-cipher"):
        return (
            "the client negotiated something its profile says it does not offer: check its version and cipher settings"
        )
    if cls == "client-certificate-required":
        return "the server let the client in without a client certificate: the server's mTLS setting does not hold"
    return "the client succeeded where the cell must fail: check its TLS settings"


def _safe_logs(logs_for: LogSource | None, endpoint: Endpoint) -> list[str]:
    if logs_for is None:
        return []
    try:
        return list(logs_for(endpoint))
    except Exception as exc:  # a log that cannot be read must not stop a certification
        return [f"(server log unavailable: {exc})"]


def _settled_logs(logs_for: LogSource, endpoint: Endpoint) -> list[str]:
    """The endpoint's log once it stopped growing (or after ``LOG_SETTLE`` seconds)."""
    deadline = time.monotonic() + LOG_SETTLE
    lines = _safe_logs(logs_for, endpoint)
    quiet_since = time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.05)
        latest = _safe_logs(logs_for, endpoint)
        if latest != lines:
            lines, quiet_since = latest, time.monotonic()
        elif time.monotonic() - quiet_since >= LOG_QUIET:
            break
    return lines


def _new_lines(before: list[str], after: list[str]) -> list[str]:
    """The lines of ``after`` past ``before`` (logs only grow; if one was rotated, keep all of it)."""
    if after[: len(before)] == before:
        return after[len(before) :]
    return after


def exit_status(report: Report) -> int:
    """0 when no cell is ``incompatible`` or ``insecure``; 1 otherwise."""
    return 1 if any(r.verdict in (Verdict.INCOMPATIBLE, Verdict.INSECURE) for r in report.cells) else 0


class OutcomeError(AssertionError):
    """A client's outcome on a cell is not what the oracle expects; carries the record."""

    def __init__(self, record: CellRecord) -> None:
        self.record = record
        super().__init__(record.explain())


def assert_outcome(record: CellRecord, *, exact: bool = True) -> None:
    """Fail (``OutcomeError``, an ``AssertionError``) unless the verdict is ``pass`` or ``refused-correctly``.

    With ``exact`` (the default) a refusal must also carry the expected class:
    what must fail, fails with the right error. A ``pass`` is a pass: where a client may go on (a fault
    OpenSSL's defaults do not check, such as revocation), going on is not a wrong class.
    """
    if record.verdict not in (Verdict.PASS, Verdict.REFUSED_CORRECTLY):
        raise OutcomeError(record)
    if exact and record.verdict != Verdict.PASS and not record.class_matches:
        raise OutcomeError(record)
