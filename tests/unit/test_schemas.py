"""The JSON Schemas in docs/schemas are the models' own, and what a real run writes validates against them.

A real grid of embedded cells (session recorder in front) is started, the Python client certified on it,
and its manifest, report and session records checked with ``jsonschema``; each schema must also refuse a
broken record, so a schema that accepts anything fails here.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from pytest_mailtls.certify import certify
from pytest_mailtls.clients import get_client
from pytest_mailtls.grid import Grid
from pytest_mailtls.manifest import Manifest, read_manifest, write_manifest
from pytest_mailtls.matrix import load_matrix
from pytest_mailtls.oracle import VERDICTS
from pytest_mailtls.report import Report, ReportDocument, Summary, read_report
from pytest_mailtls.schemas import SCHEMAS, main, schema_text
from pytest_mailtls.verify import verify_endpoints

DOCS = Path(__file__).resolve().parents[2] / "docs" / "schemas"
CELLS = [
    "embedded-smtp-plain-open",
    "embedded-submission-starttls-intermediate-valid",
    "embedded-smtps-implicit-intermediate-expired",
    "embedded-smtps-implicit-intermediate-valid-mtls",
    "embedded-submission-starttls-tls10-only-valid",
]


def _validator(name: str) -> jsonschema.protocols.Validator:
    schema = json.loads((DOCS / f"{name}.json").read_text(encoding="utf-8"))
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


@pytest.mark.parametrize("name", SCHEMAS)
def test_committed_schemas_are_what_the_models_generate(name: str) -> None:
    assert (DOCS / f"{name}.json").read_text(encoding="utf-8") == schema_text(name), (
        "run `python -m pytest_mailtls.schemas` and commit docs/schemas"
    )


def test_the_generator_checks_and_writes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(DOCS), "--check"]) == 0
    assert main([str(tmp_path), "--check"]) == 1
    assert "differ from the models" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())
    assert main([str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{n}.json" for n in sorted(SCHEMAS)]
    assert main([str(tmp_path), "--check"]) == 0


def test_summary_counts_every_verdict() -> None:
    aliases = {f.alias or name for name, f in Summary.model_fields.items()}
    assert set(VERDICTS) <= aliases


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A real certification on embedded cells: its manifest, report and the sessions the recorder wrote."""
    by_id = {c.id: c for c in load_matrix().cells(servers=["embedded"])}
    folder = tmp_path_factory.mktemp("schemas")
    with Grid([by_id[i] for i in CELLS], workdir=folder / "grid") as grid:
        manifest = write_manifest(folder / "manifest.json", grid.endpoints)
        report = certify(get_client("python"), grid.endpoints, logs_for=lambda e: grid.cell_logs(e.id))
        path = report.write_json(folder / "report.json")
        verified = verify_endpoints(grid.endpoints)
        sessions = [
            json.loads(line)
            for e in grid.endpoints
            for line in Path(e.extra["sessions_file"]).read_text(encoding="utf-8").splitlines()
            if line.strip()
        ]
        yield {
            "manifest": json.loads(manifest.read_text()),
            "manifest_path": manifest,
            "report": json.loads(path.read_text()),
            "report_path": path,
            "sessions": sessions,
            "verify": json.loads(json.dumps(verified.to_json())),
        }


def test_a_real_manifest_validates(run: dict[str, Any]) -> None:
    doc = run["manifest"]
    assert [c["id"] for c in doc["cells"]] == CELLS
    _validator("manifest").validate(doc)
    assert Manifest.model_validate(doc).model_dump() == doc
    assert [e.id for e in read_manifest(run["manifest_path"])] == CELLS


def test_a_real_report_validates(run: dict[str, Any]) -> None:
    doc = run["report"]
    assert {c["verdict"] for c in doc["cells"]} == {"pass", "refused-correctly"}
    assert any(c["wire"] and c["wire"]["sessions"] for c in doc["cells"])
    _validator("report").validate(doc)
    assert ReportDocument.model_validate(doc).model_dump(by_alias=True) == doc
    assert read_report(run["report_path"]).to_json() == doc


def test_real_session_records_validate(run: dict[str, Any]) -> None:
    closed = [s for s in run["sessions"] if s.get("event") == "close"]
    assert len(closed) >= len(CELLS)
    assert any(s["client_hello"] for s in closed) and any(s["dialogue"] for s in closed)
    validator = _validator("session")
    for record in closed:
        validator.validate({k: v for k, v in record.items() if k != "event"})


def test_a_real_verify_document_validates(run: dict[str, Any]) -> None:
    doc = run["verify"]
    assert doc["ok"] is True and doc["cells"] == len(CELLS) and all(v["probe"] for v in doc["verdicts"])
    _validator("verify").validate(doc)


@pytest.mark.parametrize(
    ("name", "break_it"),
    [
        ("manifest", lambda d: d["cells"][0].update(port="many")),
        ("manifest", lambda d: d["cells"][1].update(service="nntp")),
        ("manifest", lambda d: d["cells"][1]["policy"].update(min_version="SSLv3")),
        ("manifest", lambda d: d["cells"][2]["auth"].pop("password")),
        ("manifest", lambda d: d["owner"].update(pid=0)),
        ("report", lambda d: d["cells"][0].update(verdict="fine")),
        ("report", lambda d: d["summary"].pop("refused-correctly")),
        ("report", lambda d: d["cells"][1].update(negotiated=None)),
        ("report", lambda d: d["cells"][2].update(mode="tls")),
        ("verify", lambda d: d["verdicts"][0].update(ok="yes")),
        ("verify", lambda d: d["verdicts"][1]["mismatches"].append({"cell": "x", "aspect": "versions"})),
    ],
    ids=["port", "service", "version", "password", "pid", "verdict", "summary", "negotiated", "mode", "ok", "mismatch"],
)
def test_schemas_refuse_broken_records(run: dict[str, Any], name: str, break_it: Any) -> None:
    doc = json.loads(json.dumps(run[name]))
    break_it(doc)
    with pytest.raises(jsonschema.ValidationError):
        _validator(name).validate(doc)


def test_an_unreadable_report_is_one_line(run: dict[str, Any]) -> None:
    doc = json.loads(json.dumps(run["report"]))
    doc["cells"][3]["verdict"] = "fine"
    with pytest.raises(ValueError) as err:
        Report.from_json(doc)
    assert str(err.value) == "cells[3].verdict 'fine' is not one of pass, refused-correctly, incompatible, insecure"
