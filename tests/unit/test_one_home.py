"""One home per fact (issue 13): outside its own module, no module names a server or a certificate fault.

(Client families have their own check in test_families.py.) String constants are read from the AST, docstrings
left out, so prose may still name things.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_mailtls.backends import REGISTRY
from pytest_mailtls.oracle import FAILURE_CLASSES
from pytest_mailtls.policy import CertProfile

from .test_families import _literals

PACKAGE = Path(__file__).resolve().parents[2] / "pytest_mailtls"
MODULES = sorted(str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py"))

#: The PKI: the fault specs (pki.py), the profile names (policy.CertProfile) and the revocation responder.
PKI = {"pki.py", "policy.py", "revocation.py"}
#: testcontainers-python style classes are named after their server by design (PostfixContainer, ...).
SERVER_NAMED = {"testcontainers.py"}


@pytest.mark.parametrize("module", [m for m in MODULES if m not in PKI])
def test_no_certificate_fault_is_named_outside_the_pki(module: str) -> None:
    # A failure class may share its name with the profile that causes it (name-constraint-violation).
    profiles = {str(p) for p in CertProfile} - set(FAILURE_CLASSES)
    named = [(line, text) for line, text in _literals(PACKAGE / module) if text in profiles]
    assert not named, f"{module} names certificate profiles {named}: declare the fact in pki.CERT_FAULTS"


@pytest.mark.parametrize("module", [m for m in MODULES if not m.startswith("backends/") and m not in SERVER_NAMED])
def test_no_server_is_named_outside_its_backend(module: str) -> None:
    named = [(line, text) for line, text in _literals(PACKAGE / module) if text in REGISTRY]
    assert not named, f"{module} names servers {named}: ask the registry (pytest_mailtls.backends)"


@pytest.mark.parametrize("module", [m for m in MODULES if m.startswith("backends/") and m != "backends/__init__.py"])
def test_no_backend_looks_another_up_by_name(module: str) -> None:
    """Links between servers are objects a provider offers (``Backend.link`` / ``accept_delivery``): a backend
    names no other server and imports no other backend (the combined stack, which composes two, excepted)."""
    import ast

    own = Path(module).stem
    others = set(REGISTRY) - {own}
    tree = ast.parse((PACKAGE / module).read_text())
    imported = {
        node.module.split(".")[-1]
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 1
    }
    if own != "stack":
        assert not imported & others, f"{module} imports other backends {sorted(imported & others)}"
        # Postfix's smtpd_sasl_type value for the link's auth socket is spelled like the server that speaks it.
        words = [(line, text) for line, text in _literals(PACKAGE / module) if text in others]
        named = [(line, text) for line, text in words if not (own == "postfix" and _is_sasl_type(module, line))]
        assert not named, f"{module} names other servers {named}: offer or accept a link instead"


def _is_sasl_type(module: str, line: int) -> bool:
    return (PACKAGE / module).read_text().splitlines()[line - 1].startswith("SASL_TYPE = ")
