"""Client families: each declared by one module, found through one registry, named nowhere else."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import pytest_mailtls
from pytest_mailtls.clients.command import COMMAND_PROFILES
from pytest_mailtls.clients.families import (
    DEFAULT_FAMILY,
    GENERIC,
    KNOBS,
    REGISTRY,
    REQUIRED_KNOBS,
    ClientFamily,
    client_families,
    client_family,
    family_names,
)
from pytest_mailtls.clients.java import JAVA_PROFILES
from pytest_mailtls.clients.python import PYTHON_PROFILES
from pytest_mailtls.diagnose import Rule, client_table, diagnose
from pytest_mailtls.oracle import FAILURE_CLASSES, ClientProfile

PACKAGE = Path(pytest_mailtls.__file__).parent
FAMILY_DIR = PACKAGE / "clients" / "families"
#: Modules that must read families from the registry and never name one.
FAMILY_BLIND = ("diagnose.py", "oracle.py", "certify.py", "verify.py", "report.py", "plugin.py")


def test_the_registry_lists_every_family_module_once() -> None:
    modules = {p.stem for p in FAMILY_DIR.glob("*.py") if p.stem != "__init__"}
    assert modules == set(REGISTRY)
    assert family_names() == tuple(REGISTRY)
    assert {"python", "java", "curl", "openssl", "swaks", "msmtp", "node", "go", "rust", "dotnet", "gnutls"} < modules
    for name in family_names():
        spec = client_family(name)
        assert isinstance(spec, ClientFamily) and spec.name == name
    assert [spec.name for spec in client_families()] == list(REGISTRY)
    assert DEFAULT_FAMILY in REGISTRY and GENERIC in REGISTRY
    assert [spec.name for spec in client_families() if spec.generic] == [GENERIC]


def test_every_built_in_client_belongs_to_a_registered_family() -> None:
    for profile in (*PYTHON_PROFILES.values(), *JAVA_PROFILES.values(), *COMMAND_PROFILES.values()):
        assert profile.family in REGISTRY, profile.name
    assert ClientProfile("anything").family == DEFAULT_FAMILY


@pytest.mark.parametrize("name", list(REGISTRY))
def test_each_family_has_rules_and_every_required_knob(name: str) -> None:
    spec = client_family(name)
    own = spec.rules()
    assert own and all(isinstance(rule, Rule) for rule in own)
    table = client_table(name)
    assert table[: len(own)] == own  # its own words first
    assert len(set(table)) == len(table)  # each rule once
    assert set(REQUIRED_KNOBS) <= set(spec.knobs) <= set(KNOBS)
    # Every template fills with the values a remedy gives it, for every range of versions to allow.
    for versions in (["TLSv1"], ["TLSv1", "TLSv1.1", "TLSv1.2"], ["TLSv1.2", "TLSv1.3"], ["TLSv1.3"]):
        words = {"want": " ".join(versions), "lo_name": versions[0], "hi_name": versions[-1]}
        text = spec.knob("versions", proto="smtp", ca="ca.pem", **words, **spec.version_words(versions))
        assert text and not re.search(r"\{\w+\}", text), text  # every placeholder filled
    for knob in (k for k in KNOBS if k != "versions"):
        text = spec.knob(knob, proto="imap", ca="ca.pem", openssl="AES128-SHA", jsse="TLS_RSA_WITH_AES_128_CBC_SHA")
        assert knob not in REQUIRED_KNOBS or text, (name, knob)


def test_the_generic_family_reads_every_family_and_unknown_names_get_it() -> None:
    generic = client_family(GENERIC).rules()
    for spec in client_families():
        assert set(spec.rules()) <= set(generic), spec.name
    assert client_family("no-such-family") is client_family(GENERIC) is client_family(None)
    assert client_table("no-such-family") == client_table(GENERIC)


def test_a_family_declares_only_known_knobs() -> None:
    with pytest.raises(ValueError, match="unknown knobs"):
        ClientFamily("x", "x", rules=tuple, openssl_reasons=False, knobs={"versoins": "typo"})


def test_the_rules_name_only_known_classes() -> None:
    for spec in client_families():
        for rule in spec.rules():
            assert set(rule.classes) <= set(FAILURE_CLASSES), (spec.name, rule.pattern.pattern)
    # A family's table reads its own words: Go's detail tells the dates apart, the generic reader's too.
    text = "x509: certificate has expired or is not yet valid: current time 2020-01-01T00:00:00Z is before"
    assert diagnose(text, family="go").failure_class == "certificate-not-yet-valid"
    assert diagnose(text).failure_class == "certificate-not-yet-valid"


def _literals(path: Path) -> list[tuple[int, str]]:
    """String constants of a module, docstrings left out."""
    tree = ast.parse(path.read_text())
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    return [
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
    ]


@pytest.mark.parametrize("module", FAMILY_BLIND)
def test_no_family_is_named_outside_its_module(module: str) -> None:
    path = PACKAGE / module
    named = [(line, text) for line, text in _literals(path) if text in REGISTRY]
    assert not named, f"{module} names client families {named}: look them up in pytest_mailtls.clients.families"
    source = path.read_text()
    spellings = re.findall(r"\b_?(?:GO|DOTNET|RUST|NODE|GNUTLS|JAVA|PYTHON|CURL|SWAKS|MSMTP|JDK17)_\w+", source)
    assert not spellings, f"{module} keeps family facts {spellings}"
    assert not re.search(r"\.family\s*[!=]=", source), f"{module} compares a family by name"


def test_the_java_family_offers_what_the_local_jvm_leaves_of_its_default_suites() -> None:
    from pytest_mailtls.clients.families.java import JDK17_DEFAULT_SUITES, runtime_default_suites

    updated = (  # JDK 17.0.21's java.security (Debian 12, November 2026): static RSA is off
        "jdk.tls.disabledAlgorithms=SSLv3, TLSv1, TLSv1.1, DTLSv1.0, RC4, DES, \\\n"
        "    MD5withRSA, DH keySize < 1024, EC keySize < 224, 3DES_EDE_CBC, anon, NULL, \\\n"
        "    ECDH, TLS_RSA_*, rsa_pkcs1_sha1 usage HandshakeSignature\n"
    )
    older = "jdk.tls.disabledAlgorithms=SSLv3, TLSv1, TLSv1.1, RC4, DES, 3DES_EDE_CBC, anon, NULL\n"
    left = runtime_default_suites(text=updated)
    assert left and not any(s.startswith("TLS_RSA_") for s in left)
    assert set(left) == {s for s in JDK17_DEFAULT_SUITES if not s.startswith("TLS_RSA_")}
    assert runtime_default_suites(text=older) == JDK17_DEFAULT_SUITES
    assert runtime_default_suites(text="# no such property\n") == JDK17_DEFAULT_SUITES
