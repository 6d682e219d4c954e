"""Certification split over shards and merged back: the same cells, verdicts and classes as one run.

Real runs of the ``mailtls`` command on the embedded backend (no engine needed): one unsharded
certification, three shards of the same selection, and ``mailtls report merge`` of the shards.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pytest_mailtls.report import Report, merge_reports, read_report, shard_of

pytestmark = pytest.mark.integration

SELECTION = ["--servers", "embedded", "--select", "quick"]


def _mailtls(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest_mailtls.cli", *args], capture_output=True, text=True, cwd=cwd, timeout=300
    )


def _content(report: Report) -> list[tuple[str, str, str, str, str | None, str | None]]:
    return sorted(
        (
            r.id,
            r.expected,
            r.actual,
            r.verdict,
            r.diagnosis.failure_class if r.diagnosis else None,
            r.negotiated_version,
        )
        for r in report.cells
    )


def test_shards_merge_into_the_unsharded_report(tmp_path: Path) -> None:
    whole = _mailtls("certify", "--client", "python", *SELECTION, "--report", "whole", cwd=tmp_path)
    assert whole.returncode == 0, whole.stderr
    for k in (1, 2, 3):
        shard = _mailtls(
            "certify", "--client", "python", *SELECTION, "--shard", f"{k}/3", "--report", f"shard{k}", cwd=tmp_path
        )
        assert shard.returncode == 0, shard.stderr
        assert f"shard {k}/3" in shard.stderr + shard.stdout
    merged = _mailtls("report", "merge", "shard1", "shard2", "shard3", "--out", "merged", cwd=tmp_path)
    assert merged.returncode == 0, merged.stderr
    for name in ("report.json", "junit.xml", "report.md", "report.html"):
        assert (tmp_path / "merged" / name).is_file()
    one, parts = read_report(tmp_path / "whole" / "report.json"), read_report(tmp_path / "merged" / "report.json")
    assert _content(parts) == _content(one)
    assert {k: v for k, v in parts.summary.items() if k != "seconds"} == {
        k: v for k, v in one.summary.items() if k != "seconds"
    }
    shards = [read_report(tmp_path / f"shard{k}" / "report.json") for k in (1, 2, 3)]
    assert all(shard_of(r.id, 3) == k for k, s in enumerate(shards, start=1) for r in s.cells)


def test_merge_refuses_reports_of_different_runs(tmp_path: Path) -> None:
    run = _mailtls("certify", "--client", "python", *SELECTION, "--shard", "1/2", "--report", "a", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    report = read_report(tmp_path / "a" / "report.json")
    with pytest.raises(ValueError, match="in two of the reports"):
        merge_reports([report, report])
    other = Report(client="curl", profile={}, generated=report.generated, cells=[])
    with pytest.raises(ValueError, match="different clients"):
        merge_reports([report, other])
    twice = _mailtls("report", "merge", "a", "a", "--out", "m", cwd=tmp_path)
    assert twice.returncode != 0 and "in two of the reports" in twice.stderr
    assert "Traceback" not in twice.stderr
    bad = _mailtls("certify", "--client", "python", *SELECTION, "--shard", "3/2", cwd=tmp_path)
    assert bad.returncode == 2 and "--shard '3/2'" in bad.stderr and "Traceback" not in bad.stderr
    missing = _mailtls("report", "merge", "nowhere", "--out", "m", cwd=tmp_path)
    assert missing.returncode != 0 and "no report.json there" in missing.stderr
