"""The matrix loader: the shipped grid, selections, filters, and every kind of bad input.

Errors must name the file, the key and what is allowed, before anything starts.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_mailtls.backends import server_names, server_services
from pytest_mailtls.errors import MatrixError
from pytest_mailtls.matrix import (
    CELL_KEYS,
    Matrix,
    cell_attributes,
    default_matrix_path,
    filter_cells,
    load_matrix,
    parse_matrix,
)
from pytest_mailtls.policy import CertProfile, Mode

SERVERS = server_names()

MINIMAL = """\
version: 1
policies:
  p: {min_version: TLSv1.2}
grid:
  - services: [submission]
    modes: [starttls]
    policies: [p]
"""


@pytest.fixture(scope="module")
def shipped() -> Matrix:
    return load_matrix()


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "matrix.yaml"
    path.write_text(text, encoding="utf-8")
    return path


# --- the shipped matrix ------------------------------------------------------------------


def test_shipped_matrix_is_the_default(shipped: Matrix) -> None:
    assert default_matrix_path().is_file()
    assert shipped.source == str(default_matrix_path())
    assert shipped.default_selection == "full"
    assert {"quick", "full", "modern-only"} <= set(shipped.selections)


@pytest.mark.parametrize("server", SERVERS)
def test_every_server_has_a_substantial_grid_with_unique_ids(shipped: Matrix, server: str) -> None:
    cells = shipped.cells(servers=[server])
    assert len(cells) >= 20
    ids = [c.id for c in cells]
    assert len(ids) == len(set(ids))
    assert all(c.server == server for c in cells)
    assert {c.service.name for c in cells} <= set(server_services(server))
    assert all(i.startswith(f"{server}-") for i in ids)


def test_cell_counts_per_server(shipped: Matrix) -> None:
    # Pinned so a matrix edit is a visible decision, not an accident; update with the matrix.
    counts = {s: len(shipped.cells(servers=[s])) for s in SERVERS}
    assert counts == {"postfix": 65, "dovecot": 88, "james": 153, "courier": 88, "embedded": 65}


def test_ids_are_unique_across_servers_and_stable_between_loads(shipped: Matrix) -> None:
    ids = [c.id for c in shipped.all_cells()]
    assert len(ids) == len(set(ids))
    assert [c.id for c in load_matrix().all_cells()] == ids


def test_no_two_blocks_make_different_cells_with_one_id(shipped: Matrix) -> None:
    # all_cells() keeps the first cell per id: a clash must only ever be the same cell twice.
    seen: dict[str, object] = {}
    for server in SERVERS:
        for block in shipped.grid:
            if block.servers and server not in block.servers:
                continue
            for cell in shipped._block_cells(server, block):
                assert seen.setdefault(cell.id, cell) == cell


def test_shipped_grid_covers_every_mode_policy_and_cert(shipped: Matrix) -> None:
    cells = shipped.all_cells()
    assert {c.mode for c in cells} == set(Mode)
    assert {c.cert for c in cells if c.cert} == set(CertProfile)
    assert {c.policy.name for c in cells if c.policy} == set(shipped.policies)
    assert all((c.policy is None) == (c.mode is Mode.PLAIN) for c in cells)


def test_services_never_run_modes_they_cannot(shipped: Matrix) -> None:
    for cell in shipped.all_cells():
        assert cell.service.allows(cell.mode), cell.id


def test_server_order_and_duplicates(shipped: Matrix) -> None:
    one = shipped.all_cells(["postfix", "dovecot"])
    again = shipped.all_cells(["postfix", "dovecot", "postfix"])
    assert [c.id for c in one] == [c.id for c in again]
    assert one[0].server == "postfix"


# --- selections -------------------------------------------------------------------------


def test_full_is_every_cell_but_the_hostile_and_fault_ones_and_the_default(shipped: Matrix) -> None:
    full = shipped.cells(servers=["postfix"], selection="full")
    assert full == [c for c in shipped.all_cells(["postfix"]) if c.network is None]
    assert shipped.cells(servers=["postfix"]) == full
    hostile = shipped.cells(servers=["postfix"], selection="hostile")
    assert hostile and all(c.network is not None and not c.network.startswith("fault-") for c in hostile)
    faults = shipped.cells(servers=["postfix"], selection="faults")
    assert faults and all(str(c.network).startswith("fault-") and c.id.endswith(str(c.network)) for c in faults)
    assert sorted(c.id for c in full + hostile + faults) == sorted(c.id for c in shipped.all_cells(["postfix"]))


def test_quick_is_a_small_subset_with_one_cell_per_failure_family(shipped: Matrix) -> None:
    full_ids = {c.id for c in shipped.cells(servers=["postfix"])}
    quick = shipped.cells(servers=["postfix"], selection="quick")
    ids = {c.id for c in quick}
    assert ids < full_ids
    assert 5 <= len(quick) <= len(full_ids) // 2
    assert "postfix-submission-starttls-intermediate-valid" in ids
    assert {c.cert for c in quick if c.cert} >= {CertProfile.VALID, CertProfile.EXPIRED, CertProfile.WRONG_HOST}
    assert any(c.mode is Mode.PLAIN for c in quick)
    assert any(c.policy and c.policy.legacy for c in quick)
    assert "postfix-submission-starttls-legacy-valid" not in ids


def test_modern_only_keeps_a_tls12_floor_and_valid_certificates(shipped: Matrix) -> None:
    cells = shipped.cells(servers=["dovecot"], selection="modern-only")
    assert cells
    assert all(c.policy is not None and not c.policy.legacy for c in cells)
    assert {c.policy.name for c in cells if c.policy} == {"modern", "intermediate", "tls12-only"}
    assert {c.cert for c in cells} == {CertProfile.VALID, CertProfile.ECDSA_P256}
    # and what it leaves out is exactly what does not fit
    kept = {c.id for c in cells}
    for cell in shipped.cells(servers=["dovecot"]):
        fits = cell.policy is not None and cell.policy.name in ("modern", "intermediate", "tls12-only")
        fits = fits and cell.cert in (CertProfile.VALID, CertProfile.ECDSA_P256)
        assert (cell.id in kept) == fits, cell.id


def test_selection_exclude(tmp_path: Path) -> None:
    text = MINIMAL.replace("modes: [starttls]", "modes: [starttls, plain]\n    certs: [valid, expired]")
    text += "selections:\n  no-faults:\n    include: ['*']\n    exclude: [{cert: expired}, '*-plain']\n"
    cells = load_matrix(_write(tmp_path, text)).cells(servers=["postfix"], selection="no-faults")
    assert [c.id for c in cells] == ["postfix-submission-starttls-p-valid"]


def test_unknown_selection_at_cells_names_the_file_and_the_choices(shipped: Matrix) -> None:
    with pytest.raises(MatrixError) as err:
        shipped.cells(selection="quik")
    text = str(err.value)
    assert str(default_matrix_path()) in text
    assert "'quik'" in text
    for name in ("full", "quick", "modern-only"):
        assert name in text
    assert "--mailtls-select" in text


def test_unknown_server_at_cells(shipped: Matrix) -> None:
    with pytest.raises(
        MatrixError, match=r"unknown server 'exim'.*Allowed: postfix, dovecot, james, courier, embedded"
    ):
        shipped.cells(servers=["exim"])


# --- filters ----------------------------------------------------------------------------


def test_filter_with_a_value_a_list_and_globs(shipped: Matrix) -> None:
    cells = shipped.cells(servers=["james"])
    one = filter_cells(cells, {"policy": "modern"})
    assert one and all(c.policy and c.policy.name == "modern" for c in one)
    listed = filter_cells(cells, {"policy": ["modern", "tls12-only"], "protocol": "imap"})
    assert {c.policy.name for c in listed if c.policy} == {"modern", "tls12-only"}
    assert {str(c.protocol) for c in listed} == {"imap"}
    globbed = filter_cells(cells, {"policy": "tls1[01]-only"})
    assert {c.policy.name for c in globbed if c.policy} == {"tls10-only", "tls11-only"}
    assert {c.policy.name for c in filter_cells(cells, {"policy": "tls1?-*"}) if c.policy} == {
        "tls10-only",
        "tls11-only",
        "tls12-only",
        "tls12-single-cipher",
        "tls13-aes256",
    }
    by_id = filter_cells(cells, {"id": "james-pop3s-*-expired"})
    assert [c.id for c in by_id] == ["james-pop3s-implicit-intermediate-expired"]


def test_filter_criteria_are_anded(shipped: Matrix) -> None:
    cells = shipped.cells(servers=["postfix"])
    both = filter_cells(cells, {"service": "smtps", "cert": "expired"})
    assert [c.id for c in both] == ["postfix-smtps-implicit-intermediate-expired"]
    assert filter_cells(cells, {"service": "smtps", "cert": "no-such-cert"}) == []


def test_filter_on_plain_cells_uses_none(shipped: Matrix) -> None:
    plain = filter_cells(shipped.cells(servers=["postfix"]), {"policy": "none"})
    assert plain and all(c.mode is Mode.PLAIN for c in plain)
    assert cell_attributes(plain[0])["cert"] == "none"


def test_empty_filter_keeps_everything(shipped: Matrix) -> None:
    cells = shipped.cells(servers=["embedded"])
    assert filter_cells(cells, {}) == cells


def test_unknown_filter_key_names_the_key_and_allowed_keys(shipped: Matrix) -> None:
    with pytest.raises(MatrixError) as err:
        filter_cells(shipped.cells(servers=["postfix"]), {"colour": "red"})
    assert err.value.key == "colour"
    assert "unknown key" in str(err.value)
    for key in CELL_KEYS:
        assert key in str(err.value)


# --- custom matrices ---------------------------------------------------------------------


def test_minimal_matrix_gets_defaults(tmp_path: Path) -> None:
    matrix = load_matrix(_write(tmp_path, MINIMAL))
    assert matrix.default_selection == "full"
    assert list(matrix.auth) == ["default"]
    cells = matrix.cells(servers=["postfix"])
    assert [c.id for c in cells] == ["postfix-submission-starttls-p-valid"]
    policy = matrix.policies["p"]
    assert (policy.min_version, policy.max_version, policy.ciphers) == ("TLSv1.2", "TLSv1.3", None)
    assert matrix.cells(servers=["dovecot"]) == []


def test_block_servers_restrict_the_block(tmp_path: Path) -> None:
    matrix = load_matrix(_write(tmp_path, MINIMAL + "    servers: [james]\n"))
    assert matrix.cells(servers=["postfix"]) == []
    assert [c.id for c in matrix.cells(servers=["james"])] == ["james-submission-starttls-p-valid"]


def test_valid_ciphers_and_suites_are_kept(tmp_path: Path) -> None:
    text = MINIMAL.replace(
        "{min_version: TLSv1.2}",
        "{ciphers: 'ECDHE-RSA-AES128-GCM-SHA256:!aNULL', ciphersuites: 'TLS_AES_256_GCM_SHA384:TLS_AES_128_GCM_SHA256'}",
    )
    policy = load_matrix(_write(tmp_path, text)).policies["p"]
    assert policy.ciphers == "ECDHE-RSA-AES128-GCM-SHA256:!aNULL"
    assert policy.ciphersuites == "TLS_AES_256_GCM_SHA384:TLS_AES_128_GCM_SHA256"


def test_auth_without_mechanisms_is_fine_when_not_required(tmp_path: Path) -> None:
    text = MINIMAL + "    auth: [open]\nauth:\n  open: {mechanisms: [], required: false}\n"
    matrix = load_matrix(_write(tmp_path, text))
    assert matrix.auth["open"].mechanisms == ()
    assert [c.id for c in matrix.cells(servers=["postfix"])] == ["postfix-submission-starttls-p-valid-open"]


def test_parse_matrix_without_a_file() -> None:
    import yaml

    matrix = parse_matrix(yaml.safe_load(MINIMAL))
    assert matrix.source == "<matrix>"


# --- bad input: file, key, what is allowed ------------------------------------------------

_VERSIONS_ALLOWED = "Allowed: TLSv1, TLSv1.1, TLSv1.2, TLSv1.3"
BAD = {
    "unknown top-level key": (MINIMAL + "colour: red\n", "colour", ["unknown key", "Allowed:", "policies", "grid"]),
    "unknown policy key": (
        MINIMAL.replace("{min_version: TLSv1.2}", "{min_version: TLSv1.2, max: TLSv1.3}"),
        "policies.p.max",
        ["unknown key", "max_version", "min_version", "ciphers"],
    ),
    "unknown version": (
        MINIMAL.replace("TLSv1.2}", "TLSv1.4}"),
        "policies.p.min_version",
        ["'TLSv1.4'", _VERSIONS_ALLOWED],
    ),
    "SSLv3": (
        MINIMAL.replace("{min_version: TLSv1.2}", "{max_version: SSLv3}"),
        "policies.p.max_version",
        ["'SSLv3'", _VERSIONS_ALLOWED],
    ),
    "impossible range": (
        MINIMAL.replace("{min_version: TLSv1.2}", "{min_version: TLSv1.3, max_version: TLSv1.2}"),
        "policies.p",
        ["impossible version range", "TLSv1.3", "TLSv1.2"],
    ),
    "unknown cipher": (
        MINIMAL.replace("{min_version: TLSv1.2}", "{ciphers: 'ECDHE-RSA-AES128-GCM-SHA256:NOPE-CIPHER'}"),
        "policies.p.ciphers",
        ["'NOPE-CIPHER'", "openssl ciphers"],
    ),
    "no known cipher": (
        MINIMAL.replace("{min_version: TLSv1.2}", "{ciphers: 'NOPE-CIPHER'}"),
        "policies.p.ciphers",
        ["NOPE-CIPHER", "openssl ciphers"],
    ),
    "unknown TLS 1.3 suite": (
        MINIMAL.replace("{min_version: TLSv1.2}", "{ciphersuites: 'TLS_AES_128_GCM_SHA256:TLS_FOO'}"),
        "policies.p.ciphersuites",
        ["'TLS_FOO'", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256"],
    ),
    "unknown policy in a grid block": (
        MINIMAL.replace("policies: [p]", "policies: [q]"),
        "grid[0] (block-0).policies",
        ["'q'", "Allowed: p"],
    ),
    "unknown cert in a grid block": (
        MINIMAL + "    certs: [valid, rotten]\n",
        "grid[0] (block-0).certs",
        ["'rotten'", "valid", "expired", "wrong-host"],
    ),
    "unknown auth in a grid block": (
        MINIMAL + "    auth: [nobody]\n",
        "grid[0] (block-0).auth",
        ["'nobody'", "Allowed: default"],
    ),
    "unknown service in a grid block": (
        MINIMAL.replace("[submission]", "[submission, nntp]"),
        "grid[0] (block-0).services",
        ["'nntp'", "smtps", "pop3s"],
    ),
    "unknown mode in a grid block": (
        MINIMAL.replace("[starttls]", "[starttls, tls]"),
        "grid[0] (block-0).modes",
        ["'tls'", "plain", "starttls-required", "implicit"],
    ),
    "unknown server in a grid block": (
        MINIMAL + "    servers: [exim]\n",
        "grid[0] (block-0).servers",
        ["'exim'", "postfix", "dovecot", "james", "embedded"],
    ),
    "named block in the key": (
        MINIMAL.replace("  - services:", "  - name: mine\n    services:") + "    colour: red\n",
        "grid[0] (mine).colour",
        ["unknown key", "services"],
    ),
    "TLS block without policies": (
        MINIMAL.replace("    policies: [p]\n", ""),
        "grid[0] (block-0).policies",
        ["required"],
    ),
    "unknown selection key": (
        MINIMAL + "selections:\n  s:\n    includes: ['*']\n",
        "selections.s.includes",
        ["unknown key", "include", "exclude"],
    ),
    "unknown key in a selection entry": (
        MINIMAL + "selections:\n  s:\n    include: [{colour: red}]\n",
        "selections.s.include[0].colour",
        ["unknown key", *CELL_KEYS],
    ),
    "unknown default selection": (MINIMAL + "default_selection: quick\n", "default_selection", ["'quick'", "full"]),
    "required auth without mechanism": (
        MINIMAL + "auth:\n  default: {}\n  x: {mechanisms: [], required: true}\n",
        "auth.x",
        ["required", "no mechanism", "required: false"],
    ),
    "unknown mechanism": (
        MINIMAL + "auth:\n  default: {mechanisms: [PLAIN, GSSAPI]}\n",
        "auth.default.mechanisms",
        ["'GSSAPI'", "PLAIN", "CRAM-MD5"],
    ),
    "non-bool tls_only": (
        MINIMAL + "auth:\n  default: {tls_only: 'yes'}\n",
        "auth.default.tls_only",
        ["true or false", "'yes'"],
    ),
    "non-bool required": (
        MINIMAL + "auth:\n  default: {required: 1}\n",
        "auth.default.required",
        ["true or false", "1"],
    ),
    "non-bool client_cert": (
        MINIMAL + "auth:\n  default: {client_cert: 'on'}\n",
        "auth.default.client_cert",
        ["true or false"],
    ),
    "unsupported version": (
        MINIMAL.replace("version: 1", "version: 2"),
        "version",
        ["unsupported version 2", "Allowed: 1"],
    ),
    "empty grid": (MINIMAL.split("grid:")[0] + "grid: []\n", "grid", ["non-empty list"]),
    "grid not a list": (MINIMAL.split("grid:")[0] + "grid: {a: 1}\n", "grid", ["non-empty list"]),
    "policies not a mapping": ("version: 1\npolicies: [a, b]\ngrid: []\n", "policies", ["mapping", "list"]),
    "top level not a mapping": ("- a\n- b\n", "(top level)", ["mapping"]),
    "services not strings": (MINIMAL.replace("[submission]", "[1, 2]"), "grid[0] (block-0).services", ["string"]),
    "unknown DH group size": (
        MINIMAL.replace("{min_version: TLSv1.2}", "{min_version: TLSv1.2, dh_bits: 768}"),
        "policies.p.dh_bits",
        ["768 bits", "Allowed: 1024, 2048"],
    ),
    "small DH group at level 2": (
        MINIMAL.replace("{min_version: TLSv1.2}", "{ciphers: 'DHE-RSA-AES128-GCM-SHA256:@SECLEVEL=2', dh_bits: 1024}"),
        "policies.p.ciphers",
        ["security level 1 or lower"],
    ),
}


@pytest.mark.parametrize(("text", "key", "fragments"), list(BAD.values()), ids=list(BAD))
def test_bad_matrix_names_file_key_and_allowed(tmp_path: Path, text: str, key: str, fragments: list[str]) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(MatrixError) as err:
        load_matrix(path)
    message = str(err.value)
    assert err.value.source == str(path)
    assert err.value.key == key
    assert message.startswith(f"{path}: {key}: ")
    for fragment in fragments:
        assert fragment in message
    assert "\n" not in message  # one line: it ends up as a usage error or a CLI error line


@pytest.mark.parametrize(
    ("text", "line", "column"),
    [
        ("policies:\n  p: {min_version: TLSv1.2\ngrid: [\n", 3, 5),
        ("version: 1\npolicies:\n\tp: 1\n", 3, 1),
    ],
)
def test_malformed_yaml_says_where(tmp_path: Path, text: str, line: int, column: int) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(MatrixError) as err:
        load_matrix(path)
    message = str(err.value)
    assert message.startswith(f"{path}: malformed YAML at line {line}, column {column}: ")


def test_missing_file_names_the_file_and_the_option(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(MatrixError) as err:
        load_matrix(path)
    assert str(err.value).startswith(f"{path}: no such file")
    assert "--mailtls-matrix" in str(err.value)


def test_directory_instead_of_file(tmp_path: Path) -> None:
    with pytest.raises(MatrixError, match="cannot read"):
        load_matrix(tmp_path)


def test_grid_error_uses_the_singular_of_the_key(tmp_path: Path) -> None:
    with pytest.raises(MatrixError, match="unknown policy 'q'"):
        load_matrix(_write(tmp_path, MINIMAL.replace("policies: [p]", "policies: [q]")))


def test_selection_with_an_unknown_policy_value_is_refused(tmp_path: Path) -> None:
    # A typo in a selection would otherwise select nothing, silently.
    text = MINIMAL + "selections:\n  s:\n    include: [{policy: moden}]\n"
    with pytest.raises(MatrixError) as err:
        load_matrix(_write(tmp_path, text))
    assert err.value.key == "selections.s.include[0].policy"
    assert "'moden'" in str(err.value) and "Allowed: p" in str(err.value)


def test_empty_file_says_what_is_missing(tmp_path: Path) -> None:
    with pytest.raises(MatrixError, match="policies: is required"):
        load_matrix(_write(tmp_path, ""))


# --- names and values that cannot inject -----------------------------------------------------------

HOSTILE_NAMES = {
    "xml comment end": "a-->b",
    "closing brace": "a}",
    "opening brace": "a{",
    "space": "mod ern",
    "newline": "a\nb",
    "carriage return": "a\rb",
    "tab": "a\tb",
    "master.cf option": "-o smtpd_tls_security_level=none",
    "leading dash": "-modern",
    "leading dot": ".hidden",
    "slash": "a/b",
    "quote": 'a"b',
    "colon": "a:b",
    "non-ascii letter": "modérn",
    "empty": "",
    "too long": "a" * 65,
    "two dots": "a..b",
    "trailing dot": "a.",
}


def _quoted(name: str) -> str:
    import json

    return json.dumps(name)  # a YAML double-quoted scalar that carries control characters exactly


@pytest.mark.parametrize("name", list(HOSTILE_NAMES.values()), ids=list(HOSTILE_NAMES))
@pytest.mark.parametrize(
    ("where", "text"),
    [
        ("policy", "version: 1\npolicies:\n  {n}: {{}}\ngrid:\n  - services: [smtp]\n    modes: [plain]\n"),
        (
            "auth policy",
            "policies: {{p: {{}}}}\nauth:\n  {n}: {{}}\ngrid:\n  - services: [smtp]\n    modes: [plain]\n"
            "    auth: [{n}]\n",
        ),
        (
            "selection",
            "policies: {{p: {{}}}}\ngrid: [{{services: [smtp], modes: [plain]}}]\nselections:\n  {n}: {{}}\n",
        ),
        ("grid block", "policies: {{p: {{}}}}\ngrid:\n  - name: {n}\n    services: [smtp]\n    modes: [plain]\n"),
    ],
    ids=["policy", "auth", "selection", "block"],
)
def test_names_outside_the_slug_grammar_are_refused_in_one_line(
    tmp_path: Path, name: str, where: str, text: str
) -> None:
    path = _write(tmp_path, text.format(n=_quoted(name)))
    with pytest.raises(MatrixError) as err:
        load_matrix(path)
    message = str(err.value)
    assert "\n" not in message and "\r" not in message
    assert message.startswith(f"{path}: ")
    assert f"{where} name {name!r}"[:40].replace("\n", "\\n").replace("\r", "\\r").replace("\t", "\\t") in message
    assert r"[A-Za-z0-9][A-Za-z0-9-]*(\.[A-Za-z0-9-]+)*" in message  # the rule, as docs/matrix.md states it


@pytest.mark.parametrize("name", ["a", "modern", "tls1.2-only", "X.509", "9lives", "a" * 64])
def test_slug_names_are_accepted(tmp_path: Path, name: str) -> None:
    text = f"policies:\n  {name}: {{}}\ngrid:\n  - name: {name}\n    services: [smtp]\n    modes: [starttls]\n"
    text += f"    policies: [{name}]\nselections:\n  {name}: {{include: ['*-{name}-*']}}\n"
    matrix = load_matrix(_write(tmp_path, text))
    assert {c.policy.name for c in matrix.cells(selection=name) if c.policy} == {name}


HOSTILE_CIPHERS = {
    "brace after seclevel": "DEFAULT:@SECLEVEL=0}",
    "newline and option after seclevel": "DEFAULT:@SECLEVEL=0\n-o smtpd_tls_security_level=none",
    "space after seclevel": "DEFAULT:@SECLEVEL=0 foo",
    "word after seclevel": "ALL:@SECLEVEL=0x",
    "seclevel out of range": "ALL:@SECLEVEL=9",
    "comma separator": "HIGH,!aNULL",
    "space separator": "HIGH !aNULL",
    "empty element": "HIGH::!aNULL",
    "opening brace": "{HIGH}",
    "control character": "HIGH\x00",
    "tab": "HIGH\t",
    "unknown special": "@FOO",
}


@pytest.mark.parametrize("ciphers", list(HOSTILE_CIPHERS.values()), ids=list(HOSTILE_CIPHERS))
def test_cipher_lists_outside_the_grammar_are_refused(tmp_path: Path, ciphers: str) -> None:
    path = _write(tmp_path, MINIMAL.replace("{min_version: TLSv1.2}", "{ciphers: " + _quoted(ciphers) + "}"))
    with pytest.raises(MatrixError) as err:
        load_matrix(path)
    assert err.value.key == "policies.p.ciphers"
    assert "\n" not in str(err.value) and "\x00" not in str(err.value)
    assert "not a cipher spec" in str(err.value)


@pytest.mark.parametrize(
    "ciphers",
    ["ALL:@SECLEVEL=0", "HIGH:!aNULL:!MD5", "ECDHE+AESGCM:@STRENGTH", "kRSA+AESGCM:-SHA1", "AES256-GCM-SHA384"],
)
def test_cipher_lists_openssl_takes_are_kept(tmp_path: Path, ciphers: str) -> None:
    path = _write(tmp_path, MINIMAL.replace("{min_version: TLSv1.2}", f"{{ciphers: '{ciphers}'}}"))
    assert load_matrix(path).policies["p"].ciphers == ciphers


@pytest.mark.parametrize(
    ("suites", "fragment"),
    [
        ("TLS_AES_128_GCM_SHA256\n-o x", "unknown TLS 1.3 cipher suite"),
        ("TLS_AES_128_GCM_SHA256 TLS_AES_256_GCM_SHA384", "unknown TLS 1.3 cipher suite"),
        ("TLS_AES_128_GCM_SHA256}", "unknown TLS 1.3 cipher suite"),
        ("", "unknown TLS 1.3 cipher suite"),
    ],
)
def test_suite_lists_outside_the_catalogue_are_refused(tmp_path: Path, suites: str, fragment: str) -> None:
    path = _write(tmp_path, MINIMAL.replace("{min_version: TLSv1.2}", "{ciphersuites: " + _quoted(suites) + "}"))
    with pytest.raises(MatrixError) as err:
        load_matrix(path)
    assert err.value.key == "policies.p.ciphersuites" and fragment in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("policies: {p: {ciphers: 1}}\ngrid: [{services: [smtp], modes: [plain]}]\n", "policies.p.ciphers"),
        ("policies: {p: {ciphersuites: [a]}}\ngrid: [{services: [smtp], modes: [plain]}]\n", "policies.p.ciphersuites"),
        ("policies: {p: {min_version: [TLSv1]}}\ngrid: [{services: [smtp], modes: [plain]}]\n", "policies.p.min_version"),
        ("policies: {1: {}}\ngrid: [{services: [smtp], modes: [plain]}]\n", "policies[1]"),
        ("policies: {p: {}}\ngrid: [{services: [smtp], modes: [plain]}]\ndefault_selection: [a]\n", "default_selection"),
        ('policies: {p: {description: "a\\nb"}}\ngrid: [{services: [smtp], modes: [plain]}]\n', "policies.p.description"),
        ("policies: {p: {}}\ngrid: [{services: [smtp], modes: [plain]}]\n1: x\n", "1"),
        (
            "policies: {p: {}}\ngrid: [{services: [smtp], modes: [plain]}]\nselections: {s: {include: ['a b']}}\n",
            "selections.s.include[0]",
        ),
        (
            "policies: {p: {}}\ngrid: [{services: [smtp], modes: [plain]}]\n"
            'selections: {s: {include: [{id: "x\\ny"}]}}\n',
            "selections.s.include[0].id",
        ),
    ],
    ids=["int ciphers", "list suites", "list version", "int name", "list default", "multi-line description",
         "int top key", "pattern with space", "pattern with newline"],
)  # fmt: skip
def test_values_of_the_wrong_kind_are_one_line_errors(tmp_path: Path, text: str, key: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(MatrixError) as err:
        load_matrix(path)
    assert err.value.key == key
    assert "\n" not in str(err.value)


# --- pairs no server can serve: refused at validation, not at the readiness handshake ------------------

UNSERVABLE = {
    "legacy versions above level 0": (
        "{min_version: TLSv1.1, max_version: TLSv1.2, ciphers: 'ALL:@SECLEVEL=1'}", "[valid]",
        "policies.p.ciphers", "sets @SECLEVEL=1, but OpenSSL 3 negotiates TLSv1.1 only at security level 0",
    ),
    "sha1 certificate above level 0": (
        "{ciphers: 'ALL:@SECLEVEL=1'}", "[valid, sha1-signature]",
        "grid[0] (block-0)", "policy p cannot be served with certificate sha1-signature: its @SECLEVEL=1 refuses",
    ),
    "rsa-1024 certificate at level 2": (
        "{ciphers: 'HIGH:@SECLEVEL=2'}", "[weak-rsa-1024]",
        "grid[0] (block-0)", "(it needs @SECLEVEL=1 or lower)",
    ),
    "ecdsa certificate, static-rsa cipher": (
        "{max_version: TLSv1.2, ciphers: AES256-GCM-SHA384}", "[ecdsa-p256]",
        "grid[0] (block-0)", "none of its ciphers works at TLSv1.2 with the ECDSA key of the ecdsa-p256 certificate",
    ),
    "TLSv1 with TLS 1.2 ciphers only": (
        "{min_version: TLSv1, max_version: TLSv1.2, ciphers: 'ECDHE-RSA-AES128-GCM-SHA256:@SECLEVEL=0'}", "[valid]",
        "grid[0] (block-0)", "none of its ciphers works at TLSv1 with the RSA key",
    ),
}  # fmt: skip


@pytest.mark.parametrize(("policy", "certs", "key", "fragment"), list(UNSERVABLE.values()), ids=list(UNSERVABLE))
def test_pairs_no_server_can_serve_are_refused(
    tmp_path: Path, policy: str, certs: str, key: str, fragment: str
) -> None:
    text = MINIMAL.replace("{min_version: TLSv1.2}", policy) + f"    certs: {certs}\n"
    with pytest.raises(MatrixError) as err:
        load_matrix(_write(tmp_path, text))
    assert err.value.key == key and fragment in str(err.value), str(err.value)


@pytest.mark.parametrize(
    ("policy", "certs"),
    [
        ("{ciphers: 'ALL:@SECLEVEL=1'}", "[weak-rsa-1024, valid]"),
        ("{min_version: TLSv1, ciphers: 'ALL:@SECLEVEL=0'}", "[sha1-signature, ecdsa-p256]"),
        ("{max_version: TLSv1.2, ciphers: 'ECDHE-ECDSA-AES128-GCM-SHA256'}", "[ecdsa-p256]"),
        ("{min_version: TLSv1.3, ciphers: AES256-GCM-SHA384}", "[ecdsa-p256]"),  # TLS 1.3 ignores the list
    ],
    ids=["rsa-1024 at level 1", "legacy at level 0", "ecdsa cipher for ecdsa key", "TLS 1.3 only"],
)
def test_servable_pairs_are_kept(tmp_path: Path, policy: str, certs: str) -> None:
    text = MINIMAL.replace("{min_version: TLSv1.2}", policy) + f"    certs: {certs}\n"
    assert load_matrix(_write(tmp_path, text)).cells()


def test_dh_bits_reaches_the_policy(tmp_path: Path) -> None:
    text = MINIMAL.replace("{min_version: TLSv1.2}", "{ciphers: DHE-RSA-AES128-GCM-SHA256, dh_bits: 1024}")
    policy = load_matrix(_write(tmp_path, text)).policies["p"]
    assert policy.dh_bits == 1024 and policy.small_dh
    assert policy.openssl_ciphers() == "DHE-RSA-AES128-GCM-SHA256:@SECLEVEL=1"
