"""Certification reports: ``report.json``, JUnit XML, Markdown, HTML.

A report is the client's name and profile, when it ran, a summary, and one
record per cell: the cell's manifest fields plus ``expected``, ``actual``,
``verdict``, ``negotiated`` and ``diagnosis``. The JSON is defined by the models
:class:`ReportDocument` and :class:`CellReport` (schema: docs/schemas/report.json,
described in docs/report-schema.md). The Markdown and HTML pages are Jinja2
templates (templates/report.md.j2, templates/report.html.j2); the HTML page is one
file with no external assets: a grid coloured by verdict, details on hover and click.
"""

from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ET
import zlib
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from markupsafe import Markup
from pydantic import ConfigDict, Field, ValidationError, field_validator

from .diagnose import Diagnosis, DiagnosisRecord
from .manifest import EndpointRecord
from .oracle import VERDICTS
from .policy import GROUPS
from .records import Record, one_of, problem
from .templates import render

if TYPE_CHECKING:
    from .clients.base import ClientResult
    from .manifest import Endpoint
    from .oracle import Expectation

__all__ = [
    "CellRecord",
    "Report",
    "read_report",
    "merge_reports",
    "shard_of",
    "ReportDocument",
    "CellReport",
    "REPORT_SCHEMA_VERSION",
    "REPORT_FILES",
]

REPORT_SCHEMA_VERSION = 1
#: File names ``Report.write_all`` writes, by format.
REPORT_FILES = {"json": "report.json", "junit": "junit.xml", "markdown": "report.md", "html": "report.html"}
_TRANSCRIPT_LIMIT = 6000
_PROBLEMS = ("incompatible", "insecure")
#: The order findings are listed in.
_PROBLEM_ORDER = {"insecure": 0, "incompatible": 1}


@dataclass
class CellRecord:
    """One cell's line in the report."""

    manifest: dict[str, Any]
    expected: str
    secure_overlap: bool
    expected_reason: str
    actual: str
    verdict: str
    verdict_reason: str
    negotiated_version: str | None = None
    negotiated_cipher: str | None = None
    diagnosis: Diagnosis | None = None
    error: str = ""
    duration: float = 0.0
    transcript: str = ""
    server_log: list[str] = field(default_factory=list)
    #: What the session recorder saw (``WireView.to_json()``), ``None`` without a recorder.
    wire: dict[str, Any] | None = None
    #: What the client offered in its ClientHello: ``versions``, ``ciphers``, ``sni``.
    client_offer: dict[str, Any] | None = None
    #: The report's group of the cell (``Cell.group``: ``certificate validation`` ... ``secure``).
    group: str = ""

    @classmethod
    def build(
        cls,
        endpoint: Endpoint,
        *,
        expectation: Expectation,
        result: ClientResult,
        verdict: str,
        verdict_reason: str,
        actual: str,
        diagnosis: Diagnosis | None,
        server_log: list[str],
        wire: dict[str, Any] | None = None,
        client_offer: dict[str, Any] | None = None,
    ) -> CellRecord:
        return cls(
            manifest=endpoint.to_json(),
            expected=expectation.outcome,
            secure_overlap=expectation.secure_overlap,
            expected_reason=expectation.reason,
            actual=actual,
            verdict=verdict,
            verdict_reason=verdict_reason,
            negotiated_version=result.negotiated_version,
            negotiated_cipher=result.cipher,
            diagnosis=diagnosis,
            error=result.error_text,
            duration=result.duration,
            transcript=_clip(result.transcript),
            server_log=list(server_log),
            wire=wire,
            client_offer=client_offer,
            group=endpoint.cell.group,
        )

    @property
    def id(self) -> str:
        return str(self.manifest["id"])

    @property
    def class_matches(self) -> bool:
        """Whether the actual outcome (success or diagnosed class) is the expected one."""
        return self.actual == self.expected

    def explain(self) -> str:
        """Several lines for a failed test or a console: verdict, why, diagnosis, evidence."""
        lines = [
            f"{self.id}: {self.verdict} ({self.verdict_reason})",
            f"  expected: {self.expected}; actual: {self.actual}",
        ]
        if self.negotiated:
            lines.append(f"  negotiated: {self.negotiated}")
        if self.diagnosis is not None:
            lines.append(f"  diagnosis: {self.diagnosis.failure_class}")
            lines += [f"    evidence: {e}" for e in self.diagnosis.evidence]
            lines.append(f"  remedy: {self.diagnosis.remedy}")
        client_said = self.diagnosis is not None and any(e.startswith("client") for e in self.diagnosis.evidence)
        if self.error and (not client_said or self.actual != self.expected):
            # The client's own last words: verbose tools (curl -v) put the error at the end.
            tail = [line.strip()[:300] for line in self.error.splitlines() if line.strip()][-6:]
            lines += [f"  client said: {line}" for line in tail]
        return "\n".join(lines)

    @property
    def negotiated(self) -> str:
        """``TLSv1.3 TLS_AES_256_GCM_SHA384``: what was negotiated, ``""`` without TLS."""
        if not self.negotiated_version:
            return ""
        return f"{self.negotiated_version} {self.negotiated_cipher or ''}".rstrip()

    def record(self) -> CellReport:
        """The cell's record in ``report.json``."""
        return CellReport.model_validate(
            {
                **self.manifest,
                "expected": self.expected,
                "secure_overlap": self.secure_overlap,
                "expected_reason": self.expected_reason,
                "actual": self.actual,
                "verdict": self.verdict,
                "verdict_reason": self.verdict_reason,
                "negotiated": Negotiated(version=self.negotiated_version, cipher=self.negotiated_cipher),
                "diagnosis": self.diagnosis.record() if self.diagnosis else None,
                "client_error": self.error,
                "duration": round(self.duration, 3),
                "transcript": self.transcript,
                "server_log": self.server_log,
                "wire": self.wire,
                "client_offer": self.client_offer,
                "group": self.group or _group_of(self.manifest),
            }
        )

    def to_json(self) -> dict[str, Any]:
        return self.record().model_dump(by_alias=True)

    @classmethod
    def of(cls, record: CellReport) -> CellRecord:
        """The cell from its record in ``report.json``."""
        return cls(
            manifest=record.model_dump(exclude=_OWN_KEYS),
            expected=record.expected,
            secure_overlap=record.secure_overlap,
            expected_reason=record.expected_reason,
            actual=record.actual,
            verdict=record.verdict,
            verdict_reason=record.verdict_reason,
            negotiated_version=record.negotiated.version,
            negotiated_cipher=record.negotiated.cipher,
            diagnosis=record.diagnosis.diagnosis() if record.diagnosis else None,
            error=record.client_error,
            duration=record.duration,
            transcript=record.transcript,
            server_log=list(record.server_log),
            wire=record.wire,
            client_offer=record.client_offer,
            group=record.group or _group_of(record.model_dump(exclude=_OWN_KEYS)),
        )

    @classmethod
    def from_json(cls, data: Any) -> CellRecord:
        return cls.of(CellReport.model_validate(data))


@dataclass
class Report:
    """A client's certification across cells."""

    client: str
    profile: dict[str, Any]
    generated: str
    cells: list[CellRecord]
    skipped: list[str] = field(default_factory=list)

    @property
    def summary(self) -> dict[str, Any]:
        """The counts of :class:`Summary`, keyed as in ``report.json``."""
        return self._summary().model_dump(by_alias=True)

    def _summary(self) -> Summary:
        counts = Counter(r.verdict for r in self.cells)
        return Summary.model_validate(
            {
                "total": len(self.cells),
                **{v: counts[v] for v in VERDICTS},
                "unexpected_class": sum(
                    1 for r in self.cells if r.verdict == "refused-correctly" and not r.class_matches
                ),
                "unclassified": sum(1 for r in self.cells if r.actual == "unclassified"),
                "skipped": len(self.skipped),
                "seconds": round(sum(r.duration for r in self.cells), 1),
                "ok": not any(r.verdict in _PROBLEMS for r in self.cells),
            }
        )

    def vulnerabilities(self) -> dict[str, list[str]]:
        """Each vulnerability class the client showed (the class of its ``insecure`` cells), with those cells."""
        found: dict[str, list[str]] = {}
        for r in self.cells:
            if r.verdict == "insecure":
                found.setdefault(r.diagnosis.failure_class if r.diagnosis else r.actual, []).append(r.id)
        return dict(sorted(found.items()))

    def vulnerability_details(self) -> list[tuple[str, str, list[str]]]:
        """:meth:`vulnerabilities` with what each class means: ``(class, meaning, cell ids)``."""
        from .wire.attacks import VULNERABILITY_CLASSES

        return [
            (cls, VULNERABILITY_CLASSES.get(cls, f"succeeded where a correct client fails with {cls}"), ids)
            for cls, ids in self.vulnerabilities().items()
        ]

    def groups(self) -> list[tuple[str, list[tuple[int, CellRecord]]]]:
        """The cells by group (:data:`~pytest_mailtls.policy.GROUPS` order), each with its index in :attr:`cells`."""
        by_group: dict[str, list[tuple[int, CellRecord]]] = {}
        for i, r in enumerate(self.cells):
            by_group.setdefault(r.group or _group_of(r.manifest), []).append((i, r))
        order = {g: n for n, g in enumerate(GROUPS)}
        return sorted(by_group.items(), key=lambda item: order.get(item[0], len(order)))

    def problems(self) -> list[CellRecord]:
        """Cells that make the certification fail: ``insecure`` first, then ``incompatible``."""
        return [r for _, r in self._problems()]

    def _problems(self) -> list[tuple[int, CellRecord]]:
        """:meth:`problems` with each cell's position in :attr:`cells`."""
        found = [(i, r) for i, r in enumerate(self.cells) if r.verdict in _PROBLEM_ORDER]
        return sorted(found, key=lambda item: _PROBLEM_ORDER[item[1].verdict])

    # --- JSON -------------------------------------------------------------------------
    def document(self) -> ReportDocument:
        """The report as ``report.json`` holds it."""
        return ReportDocument(
            client=self.client,
            profile=self.profile,
            generated=self.generated,
            summary=self._summary(),
            vulnerabilities=self.vulnerabilities(),
            cells=[r.record() for r in self.cells],
            skipped=list(self.skipped),
        )

    def to_json(self) -> dict[str, Any]:
        return self.document().model_dump(by_alias=True)

    @classmethod
    def of(cls, document: ReportDocument) -> Report:
        return cls(
            client=document.client,
            profile=dict(document.profile),
            generated=document.generated,
            cells=[CellRecord.of(c) for c in document.cells],
            skipped=list(document.skipped),
        )

    @classmethod
    def from_json(cls, data: Any) -> Report:
        """A report from its JSON; a one-line ``ValueError`` (where, what) if it is not a report."""
        try:
            return cls.of(ReportDocument.model_validate(data))
        except ValidationError as exc:
            raise ValueError(problem(exc)) from None

    def write_json(self, path: str | os.PathLike[str]) -> Path:
        return _write(path, json.dumps(self.to_json(), indent=2) + "\n")

    # --- JUnit ------------------------------------------------------------------------
    def junit_xml(self) -> str:
        """A JUnit XML document: one testcase per cell, a failure for each incompatible or insecure one."""
        summary = self.summary
        suites = ET.Element("testsuites")
        suite = ET.SubElement(
            suites,
            "testsuite",
            name=f"mailtls certify {self.client}",
            tests=str(summary["total"]),
            failures=str(summary["incompatible"] + summary["insecure"]),
            errors="0",
            skipped="0",
            time=f"{summary['seconds']:.3f}",
            timestamp=self.generated,
        )
        props = ET.SubElement(suite, "properties")
        ET.SubElement(props, "property", name="client", value=self.client)
        ET.SubElement(props, "property", name="profile", value=json.dumps(self.profile, sort_keys=True))
        for record in self.cells:
            m = record.manifest
            case = ET.SubElement(
                suite,
                "testcase",
                classname=f"mailtls.{m.get('server')}.{m.get('service')}",
                name=record.id,
                time=f"{record.duration:.3f}",
            )
            if record.verdict in _PROBLEMS:
                failure = ET.SubElement(
                    case, "failure", type=record.verdict, message=f"{record.verdict}: {record.verdict_reason}"
                )
                failure.text = record.explain()
            out = ET.SubElement(case, "system-out")
            out.text = _xml_safe(record.explain() + "\n\n" + record.transcript)
        ET.indent(suites)
        return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(suites, encoding="unicode") + "\n"

    def write_junit(self, path: str | os.PathLike[str]) -> Path:
        return _write(path, self.junit_xml())

    # --- Markdown ---------------------------------------------------------------------
    def markdown(self) -> str:
        return render("report.md.j2", **self._page())

    def write_markdown(self, path: str | os.PathLike[str]) -> Path:
        return _write(path, self.markdown())

    # --- HTML -------------------------------------------------------------------------
    def html(self) -> str:
        records = self.cells
        return render(
            "report.html.j2",
            **self._page(),
            facts=_profile_facts(self.profile),
            grids=[(g, _grid(members)) for g, members in self.groups()],
            refusals=[(i, r) for i, r in enumerate(records) if r.verdict == "refused-correctly"],
            data=Markup(json.dumps([r.to_json() for r in records]).replace("</", "<\\/")),
        )

    def _page(self) -> dict[str, Any]:
        """What both pages show: the client, its profile, the summary, the problems and every cell."""
        return {
            "client": self.client,
            "description": str(self.profile.get("description", "")),
            "generated": self.generated,
            "summary": self.summary,
            "verdicts": VERDICTS,
            "glyphs": _GLYPH,
            "problems": self._problems(),
            "vulnerabilities": self.vulnerabilities(),
            "vulnerability_details": self.vulnerability_details(),
            "groups": [(g, Counter(r.verdict for _, r in members)) for g, members in self.groups()],
            "cells": self.cells,
        }

    def write_html(self, path: str | os.PathLike[str]) -> Path:
        return _write(path, self.html())

    def write_all(self, directory: str | os.PathLike[str]) -> dict[str, Path]:
        """Write every format into ``directory``; returns the paths by format."""
        folder = Path(directory)
        folder.mkdir(parents=True, exist_ok=True)
        return {
            "json": self.write_json(folder / REPORT_FILES["json"]),
            "junit": self.write_junit(folder / REPORT_FILES["junit"]),
            "markdown": self.write_markdown(folder / REPORT_FILES["markdown"]),
            "html": self.write_html(folder / REPORT_FILES["html"]),
        }


def merge_reports(reports: Sequence[Report]) -> Report:
    """One report from the reports of shards of one certification (``mailtls certify --shard K/N``).

    The shards must certify the same client with the same profile; a cell may appear in only one of them
    (``ValueError`` otherwise). Cells come out ordered by id, as do those of every merged report, and the
    report's time is the earliest shard's.
    """
    if not reports:
        raise ValueError("no report to merge")
    first = reports[0]
    cells: dict[str, CellRecord] = {}
    skipped: set[str] = set()
    for report in reports:
        if report.client != first.client or report.profile != first.profile:
            raise ValueError(
                f"the reports certify different clients ({first.client!r} and {report.client!r}) or profiles: "
                "merge the shards of one certification only"
            )
        for record in report.cells:
            if record.id in cells:
                raise ValueError(f"cell {record.id} is in two of the reports: were the shards of different runs?")
            cells[record.id] = record
        skipped.update(report.skipped)
    return Report(
        client=first.client,
        profile=first.profile,
        generated=min(r.generated for r in reports),
        cells=[cells[cell_id] for cell_id in sorted(cells)],
        skipped=sorted(skipped - set(cells)),
    )


def shard_of(cell_id: str, count: int) -> int:
    """The shard (1..``count``) a cell belongs to: a hash of its id, so the split does not depend on the selection,
    the order or the machine."""
    return zlib.crc32(cell_id.encode()) % count + 1


def read_report(path: str | os.PathLike[str]) -> Report:
    """A report written by :meth:`Report.write_json`."""
    return Report.from_json(json.loads(Path(path).read_text(encoding="utf-8")))


def _write(path: str | os.PathLike[str], text: str) -> Path:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text, encoding="utf-8")
    return target


def _clip(text: str) -> str:
    return text if len(text) <= _TRANSCRIPT_LIMIT else "[...]\n" + text[-_TRANSCRIPT_LIMIT:]


def _xml_safe(text: str) -> str:
    return "".join(c for c in text if c in "\t\n\r" or ord(c) >= 0x20)


_GLYPH = {"pass": "✓", "refused-correctly": "⊘", "incompatible": "✗", "insecure": "⚠"}

#: Short labels for the grid.
_SHORT = {
    "success": "ok",
    "protocol-version-mismatch": "version",
    "no-shared-cipher": "cipher",
    "untrusted-certificate": "untrusted",
    "hostname-mismatch": "host name",
    "certificate-expired": "expired",
    "certificate-not-yet-valid": "not yet valid",
    "incomplete-chain": "chain",
    "weak-key-or-signature": "weak key",
    "wrong-tls-mode": "TLS mode",
    "starttls-not-offered": "no STARTTLS",
    "starttls-required": "needs STARTTLS",
    "auth-failed": "auth",
    "client-certificate-required": "client cert",
    "unclassified": "?",
}


# --- the HTML page -------------------------------------------------------------------


def _row_key(m: dict[str, Any]) -> tuple[str, str, str, str]:
    auth = (m.get("auth") or {}).get("name", "default")
    return (str(m.get("server")), str(m.get("service")), str(m.get("mode")), "" if auth == "default" else str(auth))


def _col_key(m: dict[str, Any]) -> tuple[str, str]:
    policy = (m.get("policy") or {}).get("name") if m.get("policy") else None
    if m.get("network"):  # hostile-network and fault cells: a column per network, under their policy · certificate
        return (f"{policy or 'no TLS'} · {m.get('cert') or '—'}", str(m["network"]))
    return (policy or "no TLS", str(m.get("cert") or "—"))


def _ordered(keys: Iterable[Any]) -> list[Any]:
    return list(dict.fromkeys(keys))


@dataclass(frozen=True)
class _GridCell:
    index: int
    record: CellRecord
    text: str
    tooltip: str


@dataclass
class _GridRow:
    server: str | None  # set on the first row of a server: its heading row comes first
    service: str
    mode: str
    auth: str
    cells: list[_GridCell | None]


@dataclass
class _Grid:
    policies: list[tuple[str, int]]  # each policy and how many certificate columns it spans
    certs: list[str]
    rows: list[_GridRow]


def _grid(members: Sequence[tuple[int, CellRecord]]) -> _Grid:
    """One group's grid: a row per server · service · mode (· auth), a column per policy and certificate (per network
    for hostile-network and fault cells); ``members`` are the group's cells with their index in the report."""
    # Columns grouped by policy (first appearance), then certificate (first appearance within the policy).
    cols = _ordered(_col_key(r.manifest) for _, r in members)
    policies = _ordered(p for p, _ in cols)
    cols = [c for p in policies for c in cols if c[0] == p]
    by_pos = {(_row_key(r.manifest), _col_key(r.manifest)): (i, r) for i, r in members}
    rows: list[_GridRow] = []
    current_server = None
    for row in _ordered(_row_key(r.manifest) for _, r in members):
        server, service, mode, auth = row
        cells: list[_GridCell | None] = []
        for col in cols:
            found = by_pos.get((row, col))
            if found is not None:
                index, r = found
                cells.append(_GridCell(index, r, _cell_text(r), _tooltip(r)))
            else:
                cells.append(None)
        rows.append(_GridRow(server if server != current_server else None, service, mode, auth, cells))
        current_server = server
    spans = Counter(p for p, _ in cols)
    return _Grid([(p, spans[p]) for p in policies], [cert for _, cert in cols], rows)


def _group_of(manifest: dict[str, Any]) -> str:
    """The group of a cell read back from a report that did not record it (the cell rebuilt from its manifest)."""
    try:
        return EndpointRecord.model_validate(manifest).endpoint().cell.group
    except (ValueError, ValidationError):
        return "secure"


def _profile_facts(profile: dict[str, Any]) -> list[tuple[str, bool]]:
    """The profile in a few readable tags, each with whether it makes the client unsafe (it stands out)."""
    tags: list[tuple[str, bool]] = []
    if profile.get("protocols"):
        tags.append(("speaks " + " ".join(profile["protocols"]), False))
    offered = [v for v in profile.get("versions", []) if v not in profile.get("disabled_versions", [])]
    tags.append(("offers " + (" ".join(offered) or "no usable TLS version"), not offered))
    if profile.get("ciphers"):
        tags.append((f"ciphers {profile['ciphers']}", False))
    tags.append(
        (
            "verifies certificates" if profile.get("verify", True) else "verification OFF",
            not profile.get("verify", True),
        )
    )
    if profile.get("verify", True):
        tags.append(("trusts the session CA" if profile.get("trusts_ca", True) else "system CAs only", False))
        hostname = profile.get("check_hostname", True)
        tags.append(("checks host names" if hostname else "host name check OFF", not hostname))
    starttls = profile.get("starttls", "required")
    tags.append((f"STARTTLS {starttls}", starttls != "required"))
    if profile.get("scope") == "handshake":
        tags.append(("handshake only", False))
    return tags


def _cell_text(r: CellRecord) -> str:
    if r.verdict == "pass":
        version = (r.negotiated_version or "").replace("TLSv", "")
        return version or "plain"
    return _SHORT.get(r.actual if r.actual != "success" else r.expected, r.actual)


def _tooltip(r: CellRecord) -> str:
    lines = [r.id, f"{r.verdict}: {r.verdict_reason}", f"expected {r.expected}, actual {r.actual}"]
    if r.negotiated_version:
        lines.append(f"negotiated {r.negotiated_version} {r.negotiated_cipher or ''}")
    if r.diagnosis:
        lines.append(f"remedy: {r.diagnosis.remedy}")
    return "\n".join(lines)


# --- report.json: the models are the schema (docs/schemas/report.json) ----------------------------------


class Negotiated(Record):
    """What the handshake settled on; both ``null`` without TLS."""

    version: str | None = Field(None, description="`TLSv1.3` ...")
    cipher: str | None = Field(None, description="`TLS_AES_256_GCM_SHA384` ...")


class CellReport(EndpointRecord):
    """One cell's record: its manifest record (docs/manifest.md), unchanged, plus the run and its verdict."""

    model_config = ConfigDict(extra="allow")  # manifest keys a newer writer added travel along

    expected: str = Field(
        description="`success` or a failure class: what a correct client with this profile gets (classes below)"
    )
    secure_overlap: bool = Field(
        False, description="the cell offers a secure session, so a failure is the client's (`incompatible`)"
    )
    expected_reason: str = Field(
        "", description="why, in one line (the client offers TLSv1.2..TLSv1.3; the server accepts TLSv1)"
    )
    actual: str = Field(description="`success`, the diagnosed failure class, or `unclassified`")
    verdict: str = Field(description="the verdict (docs/certify.md)", json_schema_extra={"enum": list(VERDICTS)})
    verdict_reason: str = Field("", description="why this verdict")
    negotiated: Negotiated = Field(default_factory=Negotiated, description="what the handshake settled on (below)")
    diagnosis: DiagnosisRecord | None = Field(
        None, description="why it failed (below), for every failure and every `insecure` success; `null` otherwise"
    )
    client_error: str = Field(
        "", description="the client's error (exception, cause chain, or the tool's last lines), empty on success"
    )
    duration: float = Field(0.0, description="seconds the client ran")
    transcript: str = Field(
        "",
        description="what the client did (steps, or the tool's verbose output), passwords masked, "
        "at most ~6000 characters",
    )
    server_log: list[str] = Field(
        default_factory=list, description="the server's log lines that appeared during this cell's run"
    )
    wire: dict[str, Any] | None = Field(
        None,
        description="what the session recorder saw during the run (`null` without a recorder): `connections`, "
        "`summary` (a line per connection), `negotiated`, `starttls_offered`, `starttls`, `credentials_in_clear`, "
        "`mail_in_clear`, `message_accepted`, `alerts`, `handshake_completed`, `client_app_data`, `client_hello` "
        "and `sessions` (each connection's record, docs/wire.md, its dialogue as lines)",
    )
    client_offer: dict[str, Any] | None = Field(
        None,
        description="what the client's ClientHello offered: `versions`, `ciphers` (OpenSSL names, in its order), "
        "`sni`, `versions_from`; `null` without a recorder",
    )
    group: str = Field(
        "",
        description="the cell's group in the report's grid, declared by what makes the cell what it is (its attack "
        "or fault, its certificate profile, its TLS policy): "
        + ", ".join(f"`{g}`" for g in GROUPS)
        + " (docs/report-schema.md); older reports without it are grouped when read",
    )

    @field_validator("verdict")
    @classmethod
    def _verdict(cls, value: str) -> str:
        return one_of(VERDICTS, value)


#: The keys a cell's report record adds to its manifest record.
_OWN_KEYS = set(CellReport.model_fields) - set(EndpointRecord.model_fields)


class Summary(Record):
    """The counts of a report."""

    model_config = ConfigDict(populate_by_name=True)

    total: int = Field(description="cells run")
    pass_: int = Field(alias="pass", description="cells that worked where they should")
    refused_correctly: int = Field(alias="refused-correctly", description="cells that failed where they must")
    incompatible: int = Field(description="cells that failed although a secure session was there")
    insecure: int = Field(description="cells that worked where they must fail")
    unexpected_class: int = Field(description="correct refusals whose diagnosed class differs from the expected one")
    unclassified: int = Field(description="failures no table explained")
    skipped: int = Field(description="cells of protocols the client does not speak (their ids: `skipped`)")
    seconds: float = Field(description="client time, summed")
    ok: bool = Field(description="no `incompatible` and no `insecure` cell: the exit status is 0")


class ReportDocument(Record):
    """``report.json``: a client's certification across cells."""

    model_config = ConfigDict(populate_by_name=True)

    schema_version: int = Field(REPORT_SCHEMA_VERSION, alias="schema", description="this document's version")
    client: str = Field(description="the client's name (`python-smtplib`, `jakarta-mail`, `command` ...)")
    profile: dict[str, Any] = Field(
        description="the client profile the oracle predicted from (docs/certify.md); `declared: false` for a "
        "`--command` client, whose versions and suites are read per cell from its ClientHello"
    )
    generated: str = Field(description="ISO 8601 UTC time the run started")
    summary: Summary = Field(description="the counts (below)")
    vulnerabilities: dict[str, list[str]] = Field(
        default_factory=dict,
        description="each class the client's `insecure` cells carry (`starttls-stripping`, `tls-interception`, ...; "
        "docs/hostile.md) and those cell ids; `{}` when none. Derived from `cells`",
    )
    cells: list[CellReport] = Field(description="one record per cell run (below)")
    skipped: list[str] = Field(
        default_factory=list, description="ids of the cells of protocols the client does not speak"
    )
