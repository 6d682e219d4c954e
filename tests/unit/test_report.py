"""Reports: the JSON schema, JUnit XML, Markdown and the self-contained HTML page."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from dataclasses import replace
from pathlib import Path

import pytest

from pytest_mailtls.certify import OutcomeError, assert_outcome, exit_status
from pytest_mailtls.clients.base import ClientResult
from pytest_mailtls.diagnose import Diagnosis
from pytest_mailtls.manifest import Endpoint
from pytest_mailtls.matrix import load_matrix
from pytest_mailtls.oracle import ClientProfile, expect, verdict
from pytest_mailtls.pki import CERT_FAULTS
from pytest_mailtls.policy import GROUPS, Cell, CertProfile
from pytest_mailtls.report import REPORT_FILES, CellRecord, Report, read_report
from pytest_mailtls.wire.attacks import NETWORKS

CELLS = {c.id: c for c in load_matrix().cells(servers=["embedded"])}
PROFILE = ClientProfile("python-smtplib", protocols=("smtp",), description="smtplib, verifying")


def _endpoint(cell_id: str | Cell) -> Endpoint:
    cell = CELLS[cell_id] if isinstance(cell_id, str) else cell_id
    return Endpoint(
        cell=cell,
        host="127.0.0.1",
        port=40000 + len(cell.id),
        server_hostname="localhost",
        ca_file="/tmp/ca.pem",
        username="tester@mailtls.test",
        password="secret",
    )


def _record(cell_id: str, result: ClientResult, diagnosis: Diagnosis | None = None) -> CellRecord:
    expectation = expect(PROFILE, CELLS[cell_id])
    outcome, why = verdict(expectation, ok=result.ok, tls=result.tls)
    actual = "success" if result.ok else diagnosis.failure_class if diagnosis else "unclassified"
    return CellRecord.build(
        _endpoint(cell_id),
        expectation=expectation,
        result=result,
        verdict=outcome,
        verdict_reason=why,
        actual=actual,
        diagnosis=diagnosis,
        server_log=["connect from 127.0.0.1", "disconnect from 127.0.0.1"],
    )


OK = ClientResult(ok=True, negotiated_version="TLSv1.3", cipher="TLS_AES_256_GCM_SHA384", tls=True, duration=0.01)
EXPIRED = Diagnosis("certificate-expired", ["client: certificate has expired"], "renew it on the server")


def _report(*extra: CellRecord) -> Report:
    records = [
        _record("embedded-submission-starttls-intermediate-valid", OK),
        _record(
            "embedded-smtps-implicit-intermediate-expired",
            ClientResult(ok=False, error_text="certificate verify failed: certificate has expired </script>"),
            EXPIRED,
        ),
        *extra,
    ]
    return Report("python-smtplib", PROFILE.to_json(), "2026-01-01T00:00:00+00:00", records, skipped=["x-imap"])


INSECURE = _record("embedded-smtps-implicit-intermediate-wrong-host", OK)
INCOMPATIBLE = _record(
    "embedded-smtps-implicit-modern-valid",
    ClientResult(ok=False, error_text="tlsv1 alert protocol version"),
    Diagnosis("protocol-version-mismatch", ["client: tlsv1 alert protocol version"], "offer TLSv1.3"),
)


def test_json_schema_and_round_trip(tmp_path: Path) -> None:
    report = _report(INSECURE)
    path = report.write_json(tmp_path / "report.json")
    data = json.loads(path.read_text())
    assert {"client", "generated", "summary", "cells"} <= data.keys()
    assert data["client"] == "python-smtplib"
    assert (data["summary"]["pass"], data["summary"]["refused-correctly"], data["summary"]["insecure"]) == (1, 1, 1)
    record = data["cells"][1]
    manifest = _endpoint("embedded-smtps-implicit-intermediate-expired").to_json()
    assert manifest.items() <= record.items()  # every manifest field, unchanged
    assert record["expected"] == "certificate-expired" and record["actual"] == "certificate-expired"
    assert record["verdict"] == "refused-correctly"
    assert record["negotiated"] == {"version": None, "cipher": None}
    assert record["diagnosis"] == {
        "class": "certificate-expired",
        "evidence": EXPIRED.evidence,
        "remedy": EXPIRED.remedy,
    }
    assert data["cells"][0]["diagnosis"] is None
    back = read_report(path)
    assert back.to_json() == report.to_json()


def test_summary_and_exit_status() -> None:
    clean = _report()
    assert clean.summary["ok"] is True and exit_status(clean) == 0
    assert exit_status(_report(INSECURE)) == 1
    assert exit_status(_report(INCOMPATIBLE)) == 1
    assert [r.verdict for r in _report(INCOMPATIBLE, INSECURE).problems()] == ["insecure", "incompatible"]


def test_assert_outcome_carries_the_diagnosis() -> None:
    assert_outcome(_report().cells[1])  # a correct refusal is fine
    with pytest.raises(OutcomeError) as info:
        assert_outcome(INCOMPATIBLE)
    assert "protocol-version-mismatch" in str(info.value) and "offer TLSv1.3" in str(info.value)
    wrong_class = _record(
        "embedded-smtps-implicit-intermediate-expired",
        ClientResult(ok=False, error_text="tlsv1 alert protocol version"),
        Diagnosis("protocol-version-mismatch", [], "x"),
    )
    assert wrong_class.verdict == "refused-correctly" and not wrong_class.class_matches
    with pytest.raises(OutcomeError):
        assert_outcome(wrong_class)
    assert_outcome(wrong_class, exact=False)


def test_junit_has_a_testcase_per_cell_and_failures_for_problems() -> None:
    root = ET.fromstring(_report(INSECURE, INCOMPATIBLE).junit_xml())
    suite = root.find("testsuite")
    assert suite is not None
    cases = suite.findall("testcase")
    assert [c.get("name") for c in cases][-2:] == [INSECURE.id, INCOMPATIBLE.id]
    assert suite.get("tests") == "4" and suite.get("failures") == "2"
    failures = {c.get("name"): c.find("failure") for c in cases}
    assert failures[INSECURE.id] is not None and failures[INSECURE.id].get("type") == "insecure"  # type: ignore[union-attr]
    assert failures["embedded-smtps-implicit-intermediate-expired"] is None
    assert cases[0].get("classname") == "mailtls.embedded.submission"


def test_markdown_lists_findings_only_when_there_are_some() -> None:
    clean = _report().markdown()
    assert "**Result: PASS**" in clean and "## Findings" not in clean
    text = _report(INSECURE).markdown()
    assert "**Result: FAIL**" in text and "## Findings" in text and f"`{INSECURE.id}`: insecure" in text
    assert text.count("| `embedded-") == 3


def test_html_is_self_contained_and_colours_each_cell(tmp_path: Path) -> None:
    report = _report(INSECURE, INCOMPATIBLE)
    page = report.html()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page)  # no external assets
    assert "@import" not in page and "url(" not in page
    for record in report.cells:
        assert f'title="{record.id}' in page
    assert page.count('class="v-insecure"') == 1 and page.count('class="v-incompatible"') == 1
    assert page.count('class="v-pass"') == 1 and page.count('class="v-refused-correctly"') == 1
    # The embedded data survives a transcript that says </script>.
    assert page.count("</script>") == 2
    data = re.search(r'<script type="application/json" id="data">(.*?)</script>', page, re.S)
    assert data is not None
    assert [c["id"] for c in json.loads(data.group(1))] == [r.id for r in report.cells]
    assert ">FAIL<" in page and "verification OFF" not in page
    unsafe = Report("u", ClientProfile("u", verify=False).to_json(), "now", report.cells)
    assert "verification OFF" in unsafe.html()


def test_write_all(tmp_path: Path) -> None:
    paths = _report().write_all(tmp_path / "out")
    assert {p.name for p in paths.values()} == set(REPORT_FILES.values())
    assert all(p.stat().st_size > 200 for p in paths.values())


def test_secrets_do_not_leak_into_transcripts() -> None:
    from pytest_mailtls.clients.base import mask_secrets

    endpoint = _endpoint("embedded-submission-starttls-intermediate-valid")
    text = "AUTH PLAIN AHRlc3RlckBtYWlsdGxzLnRlc3QAc2VjcmV0\n334 c2VjcmV0\npassword secret"
    masked = mask_secrets(text, endpoint)
    assert "secret" not in masked and "c2VjcmV0" not in masked and "AHRlc3Rlck" not in masked


# --- the grid grouped like badssl's dashboard ---------------------------------------------------------


def _cell_record(cell: Cell, verdict_: str = "pass", cls: str | None = None) -> CellRecord:
    return CellRecord.build(
        _endpoint(cell),
        expectation=expect(PROFILE, cell),
        result=OK,
        verdict=verdict_,
        verdict_reason="",
        actual="success",
        diagnosis=Diagnosis(cls) if cls else None,
        server_log=[],
    )


GROUPED = {
    "embedded-submission-starttls-intermediate-valid": "secure",
    "embedded-smtps-implicit-intermediate-expired": "certificate validation",
    "embedded-smtps-implicit-intermediate-weak-rsa-1024": "broken crypto",
    "embedded-smtps-implicit-tls12-single-cipher-valid": "broken crypto",
    "embedded-smtps-implicit-tls10-only-valid": "legacy crypto",
    "embedded-submission-plain-cleartext-auth": "cleartext",
}
BASE = "embedded-submission-starttls-intermediate-valid"
NETWORK_GROUPS = {"strip-capa": "STARTTLS attacks", "intercept": "interception", "fault-rcpt-451": "faults"}


def test_each_cell_declares_its_group() -> None:
    for cell_id, group in GROUPED.items():
        assert CELLS[cell_id].group == group, cell_id
    for network, group in NETWORK_GROUPS.items():
        assert replace(CELLS[BASE], network=network).group == group
    # A new certificate profile lands in its group without a table to edit.
    base = replace(CERT_FAULTS[CertProfile.VALID], verifies=False)  # its maker and check; only the facts change
    assert replace(base, verifies=True).report_group == "secure"
    assert replace(base, failure="untrusted-certificate").report_group == "certificate validation"
    assert replace(base, failure="weak-key-or-signature", max_seclevel=1).report_group == "broken crypto"
    assert replace(base, failure="untrusted-certificate", group="interception").report_group == "interception"
    assert all(fault.report_group in GROUPS for fault in CERT_FAULTS.values())
    assert CERT_FAULTS[CertProfile("revoked")].report_group == "certificate validation"
    assert CERT_FAULTS[CertProfile("rsa-4096")].report_group == "secure"
    assert all(a.group in GROUPS for a in NETWORKS.values())


def test_the_grid_is_grouped_in_badssl_order_with_findings_by_class(tmp_path: Path) -> None:
    cells = [CELLS[c] for c in GROUPED] + [replace(CELLS[BASE], network=n) for n in NETWORK_GROUPS]
    records = [_cell_record(c) for c in cells]
    records[-1] = _cell_record(cells[-1], "insecure", "lost-mail")
    report = Report("c", PROFILE.to_json(), "now", records)
    order = [g for g, _ in report.groups()]
    assert order == [g for g in GROUPS if g in order] and set(order) == set(GROUPED.values()) | set(
        NETWORK_GROUPS.values()
    )
    page = report.html()
    headings = re.findall(r'<h2 class="group">([^<]+) <small>', page)
    assert headings == order
    assert "Vulnerabilities by class (1)" in page and "lost-mail" in page
    assert "reported success for mail the server never accepted" in page
    text = report.markdown()
    assert "## Cells by group" in text and "| faults | 0 | 0 | 0 | 1 |" in text
    assert "- **lost-mail** (1): reported success for mail" in text
    # The group travels in report.json, and a report written before it existed is grouped when read.
    written = report.write_json(tmp_path / "r.json")
    data = json.loads(written.read_text())
    assert [c["group"] for c in data["cells"]] == [r.group for r in records]
    for c in data["cells"]:
        del c["group"]
    assert [r.group for r in Report.from_json(data).cells] == [r.group for r in records]
