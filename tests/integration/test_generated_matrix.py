"""A generated matrix, accepted by validation, really starts on Postfix and every cell tells the truth.

The property tests (tests/unit/test_matrix_properties.py) check what the renderers write; this one checks
that Postfix takes it: one matrix drawn (deterministically) from the same strategy, kept small, served in a
real container and verified by real handshakes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, Phase, given, settings

from pytest_mailtls import runtime
from pytest_mailtls.backends.postfix import unsupported_reason
from pytest_mailtls.errors import MatrixError
from pytest_mailtls.grid import Grid
from pytest_mailtls.matrix import load_matrix, parse_matrix
from pytest_mailtls.verify import verify_endpoints
from tests.unit.test_matrix_properties import matrices

pytestmark = pytest.mark.integration


def _small_on_postfix(doc: dict[str, Any]) -> bool:
    try:
        matrix = parse_matrix(doc)
    except MatrixError:
        return False
    cells = [c for c in matrix.cells(servers=["postfix"]) if unsupported_reason(c) is None]
    # Small, and at least one TLS cell with a policy of its own (the part a name or value could break).
    return 2 <= len(cells) <= 6 and any(c.policy is not None for c in cells)


@pytest.fixture(scope="module", autouse=True)
def engine() -> None:
    problem = runtime.engine_problem()
    if problem:
        pytest.skip(problem)


@settings(
    max_examples=1,
    derandomize=True,  # the same matrix on every run: a failure here is reproducible, not a dice roll
    database=None,
    phases=[Phase.generate],
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
@given(doc=matrices().filter(_small_on_postfix))
def test_a_generated_matrix_starts_on_postfix_and_verifies(doc: dict[str, Any], tmp_path_factory: Any) -> None:
    folder: Path = tmp_path_factory.mktemp("generated")
    path = folder / "matrix.yaml"
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    cells = [c for c in load_matrix(path).cells(servers=["postfix"]) if unsupported_reason(c) is None]
    with Grid(cells, workdir=folder / "grid", ready_timeout=90) as grid:
        assert {e.id for e in grid.endpoints} == {c.id for c in cells}, grid.skipped
        report = verify_endpoints(grid.endpoints, timeout=5, workers=2)
        assert report.ok, report.render_table()
