"""Certification reports: ``report.json`` (schema in docs/report-schema.md), JUnit XML, Markdown, HTML.

A report is the client's name and profile, when it ran, a summary, and one
record per cell: the cell's manifest fields plus ``expected``, ``actual``,
``verdict``, ``negotiated`` and ``diagnosis``. The HTML page is one file with
no external assets: a grid coloured by verdict, details on hover and click.
"""

from __future__ import annotations

import html
import json
import os
import xml.etree.ElementTree as ET
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .diagnose import Diagnosis
from .oracle import VERDICTS

if TYPE_CHECKING:
    from .clients.base import ClientResult
    from .manifest import Endpoint
    from .oracle import Expectation

__all__ = ["CellRecord", "Report", "read_report", "merge_reports", "shard_of", "REPORT_SCHEMA_VERSION", "REPORT_FILES"]

REPORT_SCHEMA_VERSION = 1
#: File names ``Report.write_all`` writes, by format.
REPORT_FILES = {"json": "report.json", "junit": "junit.xml", "markdown": "report.md", "html": "report.html"}
_TRANSCRIPT_LIMIT = 6000
_PROBLEMS = ("incompatible", "insecure")


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
        if self.negotiated_version:
            lines.append(f"  negotiated: {self.negotiated_version} {self.negotiated_cipher or ''}".rstrip())
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

    def to_json(self) -> dict[str, Any]:
        return {
            **self.manifest,
            "expected": self.expected,
            "secure_overlap": self.secure_overlap,
            "expected_reason": self.expected_reason,
            "actual": self.actual,
            "verdict": self.verdict,
            "verdict_reason": self.verdict_reason,
            "negotiated": {"version": self.negotiated_version, "cipher": self.negotiated_cipher},
            "diagnosis": self.diagnosis.to_json() if self.diagnosis else None,
            "client_error": self.error,
            "duration": round(self.duration, 3),
            "transcript": self.transcript,
            "server_log": self.server_log,
            "wire": self.wire,
            "client_offer": self.client_offer,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CellRecord:
        own = {
            "expected",
            "secure_overlap",
            "expected_reason",
            "actual",
            "verdict",
            "verdict_reason",
            "negotiated",
            "diagnosis",
            "client_error",
            "duration",
            "transcript",
            "server_log",
            "wire",
            "client_offer",
        }
        negotiated = data.get("negotiated") or {}
        return cls(
            manifest={k: v for k, v in data.items() if k not in own},
            expected=str(data["expected"]),
            secure_overlap=bool(data.get("secure_overlap")),
            expected_reason=str(data.get("expected_reason", "")),
            actual=str(data["actual"]),
            verdict=str(data["verdict"]),
            verdict_reason=str(data.get("verdict_reason", "")),
            negotiated_version=negotiated.get("version"),
            negotiated_cipher=negotiated.get("cipher"),
            diagnosis=Diagnosis.from_json(data["diagnosis"]) if data.get("diagnosis") else None,
            error=str(data.get("client_error", "")),
            duration=float(data.get("duration", 0.0)),
            transcript=str(data.get("transcript", "")),
            server_log=[str(x) for x in data.get("server_log") or []],
            wire=data.get("wire"),
            client_offer=data.get("client_offer"),
        )


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
        counts = {v: 0 for v in VERDICTS}
        for record in self.cells:
            counts[record.verdict] = counts.get(record.verdict, 0) + 1
        return {
            "total": len(self.cells),
            **counts,
            "unexpected_class": sum(1 for r in self.cells if r.verdict == "refused-correctly" and not r.class_matches),
            "unclassified": sum(1 for r in self.cells if r.actual == "unclassified"),
            "skipped": len(self.skipped),
            "seconds": round(sum(r.duration for r in self.cells), 1),
            "ok": not any(r.verdict in _PROBLEMS for r in self.cells),
        }

    def problems(self) -> list[CellRecord]:
        """Cells that make the certification fail: ``insecure`` first, then ``incompatible``."""
        order = {"insecure": 0, "incompatible": 1}
        return sorted((r for r in self.cells if r.verdict in order), key=lambda r: order[r.verdict])

    # --- JSON -------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        return {
            "schema": REPORT_SCHEMA_VERSION,
            "client": self.client,
            "profile": self.profile,
            "generated": self.generated,
            "summary": self.summary,
            "cells": [r.to_json() for r in self.cells],
            "skipped": list(self.skipped),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Report:
        return cls(
            client=str(data["client"]),
            profile=dict(data.get("profile") or {}),
            generated=str(data.get("generated", "")),
            cells=[CellRecord.from_json(c) for c in data.get("cells", [])],
            skipped=[str(s) for s in data.get("skipped") or []],
        )

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
        s = self.summary
        out = [
            f"# Certification of `{self.client}`",
            "",
            f"{self.profile.get('description', '')}  ",
            f"Generated {self.generated}; {s['total']} cells, {s['seconds']} s of client time"
            + (f", {s['skipped']} cells skipped (protocols the client does not speak)." if s["skipped"] else "."),
            "",
            "| verdict | cells |",
            "|---|---:|",
        ]
        out += [f"| {_GLYPH[v]} {v} | {s[v]} |" for v in VERDICTS]
        out += ["", f"**Result: {'PASS' if s['ok'] else 'FAIL'}**", ""]
        problems = self.problems()
        if problems:
            out += ["## Findings", ""]
            for r in problems:
                out += [f"### {_GLYPH[r.verdict]} `{r.id}`: {r.verdict}", "", f"{r.verdict_reason}", ""]
                out += [f"- expected: `{r.expected}`, actual: `{r.actual}`"]
                if r.diagnosis is not None:
                    out += [f"- diagnosis: **{r.diagnosis.failure_class}**: {r.diagnosis.remedy}"]
                    out += [f"  - `{_md_code(e)}`" for e in r.diagnosis.evidence]
                out.append("")
        out += [
            "## All cells",
            "",
            "| cell | expected | actual | verdict | negotiated | diagnosis |",
            "|---|---|---|---|---|---|",
        ]
        for r in self.cells:
            neg = f"{r.negotiated_version} {r.negotiated_cipher or ''}".strip() if r.negotiated_version else ""
            diag = r.diagnosis.failure_class if r.diagnosis else ""
            out.append(f"| `{r.id}` | {r.expected} | {r.actual} | {_GLYPH[r.verdict]} {r.verdict} | {neg} | {diag} |")
        return "\n".join(out) + "\n"

    def write_markdown(self, path: str | os.PathLike[str]) -> Path:
        return _write(path, self.markdown())

    # --- HTML -------------------------------------------------------------------------
    def html(self) -> str:
        return _render_html(self)

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


def _md_code(text: str) -> str:
    return text.replace("`", "'").replace("|", "\\|")[:300]


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
    return (policy or "no TLS", str(m.get("cert") or "—"))


def _ordered(keys: Iterable[Any]) -> list[Any]:
    return list(dict.fromkeys(keys))


def _render_html(report: Report) -> str:
    records = report.cells
    s = report.summary
    # Columns grouped by policy (first appearance), then certificate (first appearance within the policy).
    cols = _ordered(_col_key(r.manifest) for r in records)
    policies = _ordered(p for p, _ in cols)
    cols = [c for p in policies for c in cols if c[0] == p]
    rows = _ordered(_row_key(r.manifest) for r in records)
    by_pos = {(_row_key(r.manifest), _col_key(r.manifest)): i for i, r in enumerate(records)}

    head1 = ['<th class="corner" rowspan="2">server · service · mode</th>']
    for policy in policies:
        span = sum(1 for c in cols if c[0] == policy)
        head1.append(f'<th class="pol" colspan="{span}">{_e(policy)}</th>')
    head2 = [f'<th class="cert">{_e(cert).replace("-", "-<wbr>")}</th>' for _, cert in cols]

    body: list[str] = []
    current_server = None
    for row in rows:
        server, service, mode, auth = row
        if server != current_server:
            body.append(f'<tr class="srv"><th colspan="{len(cols) + 1}">{_e(server)}</th></tr>')
            current_server = server
        label = f"{_e(service)} · {_e(mode)}" + (f' <span class="auth">{_e(auth)}</span>' if auth else "")
        cells = [f'<th class="row">{label}</th>']
        for col in cols:
            index = by_pos.get((row, col))
            if index is None:
                cells.append('<td class="none"></td>')
                continue
            r = records[index]
            cells.append(
                f'<td class="v-{r.verdict}" data-i="{index}" title="{_e(_tooltip(r))}" tabindex="0">'
                f'<span class="g">{_GLYPH[r.verdict]}</span><span class="t">{_e(_cell_text(r))}</span></td>'
            )
        body.append("<tr>" + "".join(cells) + "</tr>")

    chips = "".join(
        f'<button class="chip v-{v}" data-filter="{v}" title="dim or show these cells">'
        f"<b>{s[v]}</b> {_GLYPH[v]} {v}</button>"
        for v in VERDICTS
    )
    problems = report.problems()
    findings = "".join(_finding_html(r, records.index(r)) for r in problems)
    if not problems:
        findings = '<p class="clean">No incompatible or insecure cell: the client did what it must everywhere.</p>'
    refusals = _refusals_html(records)
    data = json.dumps([r.to_json() for r in records]).replace("</", "<\\/")
    skipped = f" · {s['skipped']} skipped (protocols the client does not speak)" if s["skipped"] else ""
    return _PAGE.format(
        title=_e(f"mailtls certify {report.client}"),
        client=_e(report.client),
        description=_e(str(report.profile.get("description", ""))),
        facts=_profile_facts(report.profile),
        generated=_e(report.generated),
        total=s["total"],
        seconds=s["seconds"],
        skipped=skipped,
        result="PASS" if s["ok"] else "FAIL",
        result_class="ok" if s["ok"] else "bad",
        chips=chips,
        head1="".join(head1),
        head2="".join(head2),
        body="\n".join(body),
        findings=findings,
        nfindings=len(problems),
        refusals=refusals,
        data=data,
        css=_CSS,
        js=_JS,
    )


def _profile_facts(profile: dict[str, Any]) -> str:
    """The profile in a few readable tags; the switches that make a client unsafe stand out."""
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
    return "".join(f'<span class="tag{" warn" if warn else ""}">{_e(text)}</span>' for text, warn in tags)


def _refusals_html(records: list[CellRecord]) -> str:
    rows = []
    for i, r in enumerate(records):
        if r.verdict != "refused-correctly":
            continue
        mark = "" if r.class_matches else ' <span class="warnmark" title="differs from the expected class">≠</span>'
        remedy = _e(r.diagnosis.remedy) if r.diagnosis else ""
        rows.append(
            f'<tr data-i="{i}"><td><code>{_e(r.id)}</code></td><td>{_e(r.actual)}{mark}</td><td>{remedy}</td></tr>'
        )
    if not rows:
        return ""
    return (
        f"<details><summary>{len(rows)} correct refusals and their diagnoses</summary>"
        '<table class="list"><thead><tr><th>cell</th><th>diagnosis</th><th>remedy</th></tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table></details>"
    )


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


def _finding_html(r: CellRecord, index: int) -> str:
    diag = ""
    if r.diagnosis is not None:
        ev = "".join(f"<li><code>{_e(e)}</code></li>" for e in r.diagnosis.evidence)
        diag = f'<p><b>{_e(r.diagnosis.failure_class)}</b>: {_e(r.diagnosis.remedy)}</p><ul class="ev">{ev}</ul>'
    return (
        f'<div class="finding v-{r.verdict}" data-i="{index}"><h3><span class="g">{_GLYPH[r.verdict]}</span> '
        f"{_e(r.id)} <small>{_e(r.verdict)}</small></h3><p>{_e(r.verdict_reason)}</p>{diag}</div>"
    )


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


_CSS = """
:root { --pass:#17703a; --pass-bg:#d5efdc; --ref:#1b5aa0; --ref-bg:#dae7f7; --inc:#a85300; --inc-bg:#ffe1bf;
  --ins:#b0141a; --ins-bg:#ffd2d4; --ink:#1d2329; --muted:#5d6873; --line:#dfe3e8; --paper:#fff; }
* { box-sizing: border-box; }
body { margin:0; font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif; color:var(--ink); background:#f4f6f8; }
header { background:var(--paper); border-bottom:1px solid var(--line); padding:18px 28px 14px; }
h1 { margin:0 0 2px; font-size:22px; font-weight:650; }
h1 code { font-size:21px; background:#eef1f4; padding:1px 7px; border-radius:5px; }
.sub { color:var(--muted); margin:2px 0 6px; }
.tag { display:inline-block; font-size:12px; background:#eef1f4; color:#39434d; border-radius:4px; padding:1px 7px; margin:0 6px 4px 0; }
.tag.warn { background:var(--ins-bg); color:var(--ins); font-weight:600; }
.meta { color:var(--muted); font-size:12px; margin:2px 0 0; }
.result { float:right; font-weight:700; font-size:18px; padding:6px 16px; border-radius:8px; letter-spacing:.04em; }
.result.ok { background:var(--pass-bg); color:var(--pass); } .result.bad { background:var(--ins-bg); color:var(--ins); }
.chips { margin-top:12px; display:flex; gap:8px; flex-wrap:wrap; }
.chip { border:1px solid transparent; border-radius:999px; padding:4px 12px; font:inherit; cursor:pointer; }
.chip b { font-size:15px; margin-right:2px; } .chip.off { opacity:.35; }
main { padding:18px 28px 40px; max-width:1500px; }
.panel { background:var(--paper); border:1px solid var(--line); border-radius:10px; padding:14px 16px; margin-bottom:18px; }
.panel h2 { font-size:15px; margin:0 0 8px; }
.gridwrap { overflow-x:auto; }
table.grid { border-collapse:separate; border-spacing:3px; }
.grid th { font-weight:600; font-size:12px; color:var(--muted); }
.grid th.pol { background:#e9edf1; border-radius:6px; padding:4px 6px; color:var(--ink); }
.grid th.cert { font-weight:500; font-size:11px; line-height:1.15; vertical-align:bottom; padding:2px 1px 4px; width:56px; max-width:56px; }
.grid th.corner { text-align:left; vertical-align:bottom; padding:4px; }
.grid tr.srv th { text-align:left; font-size:12px; color:var(--ink); padding:10px 4px 2px; text-transform:uppercase; letter-spacing:.08em; }
.grid th.row { text-align:left; white-space:nowrap; padding-right:10px; color:var(--ink); font-weight:500; font-size:13px; }
.auth { font-size:11px; background:#eef1f4; border-radius:4px; padding:0 5px; color:var(--muted); }
.grid td { width:56px; min-width:56px; height:36px; border-radius:6px; text-align:center; cursor:pointer; font-size:11px; line-height:1.1; padding:2px; }
.grid td .g { display:block; font-size:14px; font-weight:700; }
.grid td.none { background:#f3f5f7; cursor:default; }
.grid td:focus, .grid td.sel { outline:2px solid var(--ink); outline-offset:1px; }
.v-pass { background:var(--pass-bg); color:var(--pass); }
.v-refused-correctly { background:var(--ref-bg); color:var(--ref); }
.v-incompatible { background:var(--inc-bg); color:var(--inc); box-shadow: inset 0 0 0 2px var(--inc); }
.v-insecure { background:var(--ins-bg); color:var(--ins); box-shadow: inset 0 0 0 2px var(--ins); }
td.dim { opacity:.15; }
.legend { font-size:12px; color:var(--muted); margin-top:10px; display:flex; flex-wrap:wrap; gap:4px 18px; }
.finding { border-radius:8px; padding:8px 12px; margin:8px 0; cursor:pointer; box-shadow:none; }
.finding h3 { margin:0; font-size:14px; } .finding small { font-weight:500; }
.finding p { margin:4px 0; color:var(--ink); }
.ev { margin:2px 0 0; padding-left:18px; font-size:12px; color:var(--ink); }
.clean { color:var(--pass); font-weight:600; }
details summary { cursor:pointer; color:var(--muted); margin-top:6px; }
table.list { border-collapse:collapse; margin-top:8px; font-size:12px; width:100%; }
table.list th, table.list td { text-align:left; border-bottom:1px solid var(--line); padding:4px 8px; vertical-align:top; }
table.list tr[data-i] { cursor:pointer; } table.list tr[data-i]:hover { background:#f4f6f8; }
.warnmark { color:var(--inc); font-weight:700; }
#drawer { position:fixed; top:0; right:0; bottom:0; width:440px; max-width:92vw; background:var(--paper); border-left:1px solid var(--line);
  box-shadow:-8px 0 24px rgba(20,30,40,.12); padding:18px 20px; overflow-y:auto; transform:translateX(105%); transition:transform .15s; }
#drawer.open { transform:none; }
#drawer .close { position:absolute; top:10px; right:12px; border:0; background:none; font-size:22px; cursor:pointer; color:var(--muted); }
#drawer h2 { font-size:15px; margin:10px 0 6px; word-break:break-all; }
#drawer h3 { font-size:13px; margin:14px 0 4px; }
#drawer dl { display:grid; grid-template-columns:88px 1fr; gap:3px 10px; margin:8px 0; font-size:13px; }
#drawer dt { color:var(--muted); } #drawer dd { margin:0; word-break:break-word; }
.badge { display:inline-block; padding:2px 10px; border-radius:999px; font-weight:600; }
pre { background:#f3f5f7; border:1px solid var(--line); border-radius:6px; padding:8px; font-size:11px; max-height:260px; overflow:auto; white-space:pre-wrap; word-break:break-all; margin:4px 0; }
"""

_JS = """
const cells = JSON.parse(document.getElementById('data').textContent);
const drawer = document.getElementById('drawer'), body = document.getElementById('drawer-body');
const esc = s => String(s ?? '').replace(/[&<>"]/g, c => ({'&':'&amp;','<':'&lt;','>':'&gt;','"':'&quot;'}[c]));
function show(i) {
  const r = cells[i]; if (!r) return;
  document.querySelectorAll('td.sel').forEach(t => t.classList.remove('sel'));
  const td = document.querySelector('td[data-i="' + i + '"]'); if (td) td.classList.add('sel');
  const d = r.diagnosis, n = r.negotiated || {};
  let h = '<span class="badge v-' + r.verdict + '">' + esc(r.verdict) + '</span><h2>' + esc(r.id) + '</h2>';
  h += '<p>' + esc(r.verdict_reason) + '</p><dl>';
  h += '<dt>expected</dt><dd>' + esc(r.expected) + (r.secure_overlap ? ' <small>(a secure session exists)</small>' : '') + '</dd>';
  h += '<dt>because</dt><dd>' + esc(r.expected_reason) + '</dd>';
  h += '<dt>actual</dt><dd>' + esc(r.actual) + '</dd>';
  h += '<dt>negotiated</dt><dd>' + esc(n.version ? n.version + ' ' + (n.cipher || '') : '—') + '</dd>';
  h += '<dt>endpoint</dt><dd>' + esc(r.host + ':' + r.port + ' as ' + r.server_hostname) + '</dd>';
  h += '<dt>policy</dt><dd>' + esc(r.policy ? r.policy.name + ' (' + r.policy.min_version + '..' + r.policy.max_version + ')' : 'no TLS') + '</dd>';
  h += '<dt>certificate</dt><dd>' + esc(r.cert || '—') + '</dd><dt>time</dt><dd>' + esc(r.duration) + ' s</dd></dl>';
  if (d) {
    h += '<h3>Diagnosis: ' + esc(d.class) + '</h3><p>' + esc(d.remedy) + '</p>';
    if (d.evidence.length) h += '<pre>' + d.evidence.map(esc).join('\\n') + '</pre>';
  }
  if (r.client_error) h += '<h3>Client error</h3><pre>' + esc(r.client_error) + '</pre>';
  if (r.server_log && r.server_log.length) h += '<h3>Server log</h3><pre>' + r.server_log.map(esc).join('\\n') + '</pre>';
  if (r.transcript) h += '<h3>Transcript</h3><pre>' + esc(r.transcript) + '</pre>';
  body.innerHTML = h;
  drawer.classList.add('open');
  history.replaceState(null, '', '#cell=' + i);
}
function hide() { drawer.classList.remove('open'); document.querySelectorAll('td.sel').forEach(t => t.classList.remove('sel')); history.replaceState(null, '', '#'); }
document.querySelectorAll('[data-i]').forEach(el => {
  el.addEventListener('click', () => show(+el.dataset.i));
  el.addEventListener('keydown', e => { if (e.key === 'Enter' || e.key === ' ') { e.preventDefault(); show(+el.dataset.i); } });
});
document.getElementById('close').addEventListener('click', hide);
document.addEventListener('keydown', e => { if (e.key === 'Escape') hide(); });
const off = new Set();
document.querySelectorAll('.chip').forEach(chip => chip.addEventListener('click', () => {
  const v = chip.dataset.filter;
  off.has(v) ? off.delete(v) : off.add(v);
  chip.classList.toggle('off', off.has(v));
  document.querySelectorAll('td[data-i]').forEach(td => td.classList.toggle('dim', off.has(cells[+td.dataset.i].verdict)));
}));
const m = location.hash.match(/cell=(\\d+)/); if (m) show(+m[1]);
"""

_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title><style>{css}</style></head>
<body>
<header>
  <div class="result {result_class}">{result}</div>
  <h1>Certification of <code>{client}</code></h1>
  <p class="sub">{description}</p>
  <div>{facts}</div>
  <p class="meta">generated {generated} · {total} cells · {seconds} s of client time{skipped}</p>
  <div class="chips">{chips}</div>
</header>
<main>
  <div class="panel gridwrap">
    <table class="grid"><thead><tr>{head1}</tr><tr>{head2}</tr></thead><tbody>
{body}
    </tbody></table>
    <div class="legend"><span>✓ pass: worked where it should</span><span>⊘ refused-correctly: failed where no secure
    session exists</span><span>✗ incompatible: failed although it should work</span><span>⚠ insecure: succeeded
    where it must fail</span><span>columns: TLS policy and certificate · click a cell for its diagnosis</span></div>
  </div>
  <div class="panel"><h2>Findings ({nfindings})</h2>{findings}{refusals}</div>
</main>
<aside id="drawer" aria-live="polite"><button class="close" id="close" title="close (Esc)">&times;</button>
<div id="drawer-body"></div></aside>
<script type="application/json" id="data">{data}</script>
<script>{js}</script>
</body></html>
"""
