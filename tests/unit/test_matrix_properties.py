"""Generated matrices (hypothesis): what is accepted renders exactly its intent, what is refused is one line.

Each accepted matrix is rendered with the pure render functions of the Postfix and Dovecot backends and
the embedded backend's server context; the rendered files are parsed back (strictly: a line that is not
a comment, a service or an option fails) and compared with the policy each cell declares. Each refused
matrix must fail with a :class:`MatrixError` whose text is one line naming the file and the key.
James is left out on purpose: its XML renderer is being rebuilt on an XML library.
"""

from __future__ import annotations

import re
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from pytest_mailtls.backends import dovecot, postfix
from pytest_mailtls.backends.container import CertPaths, container_ports
from pytest_mailtls.backends.embedded import _cipher_string, server_context
from pytest_mailtls.errors import MatrixError
from pytest_mailtls.matrix import NAME_MAX, NAME_PATTERN, Matrix, is_name, parse_matrix
from pytest_mailtls.policy import SERVICES, VERSIONS, Cell, CertProfile, Mode, TLSPolicy

SOURCE = "generated.yaml"
SUITES = (
    "TLS_AES_128_GCM_SHA256",
    "TLS_AES_256_GCM_SHA384",
    "TLS_CHACHA20_POLY1305_SHA256",
    "TLS_AES_128_CCM_SHA256",
    "TLS_AES_128_CCM_8_SHA256",
)
MECHANISMS = ("PLAIN", "LOGIN", "CRAM-MD5", "XOAUTH2", "OAUTHBEARER")


def _tls12_cipher_names() -> list[str]:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.set_ciphers("ALL:@SECLEVEL=0")
    return sorted({c["name"] for c in ctx.get_ciphers() if c["protocol"] != "TLSv1.3"})


CIPHER_NAMES = _tls12_cipher_names()
KEYWORDS = ("ALL", "DEFAULT", "HIGH", "MEDIUM", "ECDHE", "AESGCM", "kRSA", "aRSA", "CHACHA20", "SHA256", "aNULL")

# --- strategies ---------------------------------------------------------------------------------------

names = st.from_regex(NAME_PATTERN, fullmatch=True).filter(lambda n: len(n) <= NAME_MAX)


@st.composite
def cipher_lists(draw: st.DrawFn) -> str:
    """Cipher lists in the documented grammar; the first element names ciphers, so most lists select some."""
    first = draw(st.sampled_from(CIPHER_NAMES) | st.sampled_from(KEYWORDS[:5]))
    rest = draw(
        st.lists(
            st.sampled_from(CIPHER_NAMES)
            | st.builds(lambda op, k: op + k, st.sampled_from(["!", "-", "+", ""]), st.sampled_from(KEYWORDS))
            | st.builds(lambda a, b: f"{a}+{b}", st.sampled_from(KEYWORDS[4:]), st.sampled_from(KEYWORDS[4:]))
            | st.just("@STRENGTH")
            | st.builds("@SECLEVEL={}".format, st.sampled_from([0, 0, 0, 1, 2])),  # mostly servable
            max_size=4,
        )
    )
    return ":".join([first, *rest])


@st.composite
def policies(draw: st.DrawFn) -> dict[str, Any]:
    lo, hi = sorted(draw(st.lists(st.sampled_from(VERSIONS), min_size=2, max_size=2)), key=VERSIONS.index)
    body: dict[str, Any] = {"min_version": lo, "max_version": hi}
    if draw(st.booleans()):
        body["ciphers"] = draw(cipher_lists())
    if draw(st.booleans()):
        body["ciphersuites"] = ":".join(draw(st.lists(st.sampled_from(SUITES), min_size=1, max_size=3, unique=True)))
    if draw(st.booleans()):
        body["description"] = draw(
            # Printable text only: DEL and the C1 controls (0x7f-0x9f) are control characters too.
            st.text(st.characters(min_codepoint=32, max_codepoint=0x2FF, exclude_categories=["Cc"]), max_size=20)
        )
    return body


@st.composite
def auths(draw: st.DrawFn) -> dict[str, Any]:
    mechanisms = draw(st.lists(st.sampled_from(MECHANISMS), max_size=3, unique=True))
    client_cert = draw(st.booleans())
    required = draw(st.booleans()) if mechanisms or client_cert else False
    return {"mechanisms": mechanisms, "tls_only": draw(st.booleans()), "required": required, "client_cert": client_cert}


@st.composite
def matrices(draw: st.DrawFn) -> dict[str, Any]:
    """A matrix document that follows every documented rule."""
    policy_names = draw(st.lists(names, min_size=1, max_size=3, unique=True))
    auth_names = draw(st.lists(names, min_size=1, max_size=2, unique=True))
    doc: dict[str, Any] = {
        "version": 1,
        "policies": {n: draw(policies()) for n in policy_names},
        "auth": {n: draw(auths()) for n in auth_names},
        "grid": [],
    }
    for _ in range(draw(st.integers(1, 2))):
        doc["grid"].append(
            {
                "name": draw(names),
                "services": draw(st.lists(st.sampled_from(list(SERVICES)), min_size=1, max_size=3, unique=True)),
                "modes": draw(st.lists(st.sampled_from([str(m) for m in Mode]), min_size=1, max_size=2, unique=True)),
                "policies": draw(st.lists(st.sampled_from(policy_names), min_size=1, max_size=2, unique=True)),
                "certs": draw(st.lists(st.sampled_from([str(c) for c in CertProfile]), min_size=1, max_size=2, unique=True)),
                "auth": draw(st.lists(st.sampled_from(auth_names), min_size=1, max_size=2, unique=True)),
            }
        )  # fmt: skip
    if draw(st.booleans()):
        doc["selections"] = {draw(names): {"include": [{"policy": draw(st.sampled_from(policy_names))}]}}
    return doc


# Values that must never be accepted where a name or a cipher list goes.
HOSTILE = st.sampled_from(
    ["a-->b", "a}", "{a", "mod ern", "a\nb", "x\r", "a\tb", "-o smtpd_tls_security_level=none", "-x", ".a", "", "é"]
) | st.text(min_size=1, max_size=12).filter(lambda s: not is_name(s))
HOSTILE_CIPHERS = st.sampled_from(
    [
        "DEFAULT:@SECLEVEL=0}",
        "DEFAULT:@SECLEVEL=0\n-o x=y",
        "ALL:@SECLEVEL=0 foo",
        "HIGH,LOW",
        "HIGH::LOW",
        "@SECLEVEL=0x",
    ]
) | st.builds(
    lambda ok, bad: f"{ok}:{bad}",
    st.sampled_from(CIPHER_NAMES),
    # Outside the cipher grammar: a hostile *name* such as "A." is still a well-formed cipher element
    # (OpenSSL ignores unknown keywords), so only characters the grammar refuses, or an empty element.
    HOSTILE.filter(lambda bad: bad == "" or re.search(r"[^A-Za-z0-9._+!@=-]", bad) is not None),
)


@st.composite
def hostile_matrices(draw: st.DrawFn) -> tuple[dict[str, Any], str]:
    """A valid matrix with one name or value replaced by something outside the grammar; and where."""
    doc = draw(matrices())
    for body in doc["policies"].values():
        body.pop("ciphers", None)  # a generated list may select nothing: that is another refusal
    bad = draw(HOSTILE)
    where = draw(st.sampled_from(["policy", "auth", "block", "selection", "ciphers", "ciphersuites", "grid-ref"]))
    first_policy = next(iter(doc["policies"]))
    if where == "policy":
        doc["policies"][bad] = doc["policies"].pop(first_policy)
    elif where == "auth":
        first_auth = next(iter(doc["auth"]))
        doc["auth"][bad] = doc["auth"].pop(first_auth)
    elif where == "block":
        doc["grid"][0]["name"] = bad
    elif where == "selection":
        doc["selections"] = {bad: {}}
    elif where == "ciphers":
        doc["policies"][first_policy]["ciphers"] = draw(HOSTILE_CIPHERS)
    elif where == "ciphersuites":
        doc["policies"][first_policy]["ciphersuites"] = f"TLS_AES_128_GCM_SHA256:{bad}"
    else:
        doc["grid"][0]["policies"] = [bad]
    return doc, where


# Anything YAML could hold: the validator must answer every document with a MatrixError or a Matrix.
junk = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8) | st.integers(), inner, max_size=3),
    max_leaves=12,
)


# --- parsing the rendered files back --------------------------------------------------------------------

_SERVICE_LINE = re.compile(
    r"(\S+)\s+(inet|unix|unix-dgram|fifo|pass)\s+([-yn])\s+([-yn])\s+([-yn])\s+(\S+)\s+(\S+)\s+(\S+)"
)
_OPT_PLAIN = re.compile(r"  -o ([A-Za-z_]+)=(\S*)")
_OPT_BRACED = re.compile(r"  -o \{ ([A-Za-z_]+) = ([^{}\n]*) \}")


def parse_master_cf(text: str) -> dict[str, tuple[str, dict[str, str], str]]:
    """master.cf as {service: (command, {option: value}, the comment above it)}; any other line fails."""
    out: dict[str, tuple[str, dict[str, str], str]] = {}
    current, comment = "", ""
    for line in text.split("\n"):
        if not line.strip():
            continue
        if line.startswith("#"):
            comment = line[1:].strip()
            continue
        if line[0].isspace():
            m = _OPT_PLAIN.fullmatch(line) or _OPT_BRACED.fullmatch(line)
            assert m, f"master.cf continuation line is not one -o option: {line!r}"
            assert current, "an option before any service"
            out[current][1][m.group(1)] = m.group(2)
            continue
        m = _SERVICE_LINE.fullmatch(line)
        assert m, f"master.cf line is not a service: {line!r}"
        current = m.group(1)
        assert current not in out, f"service {current} defined twice"
        out[current] = (m.group(8), {}, comment)
    return out


def parse_openssl_cnf(text: str) -> dict[str, dict[str, str]]:
    """An OpenSSL config file as {section: {key: value}} ("" for the default section); strict."""
    sections: dict[str, dict[str, str]] = {"": {}}
    current = ""
    for line in text.split("\n"):
        if not line.strip() or line.startswith("#"):
            continue
        if m := re.fullmatch(r"\[([A-Za-z0-9_]+)\]", line):
            current = m.group(1)
            assert current not in sections
            sections[current] = {}
            continue
        m = re.fullmatch(r"([A-Za-z0-9_]+) = ([^\s#]+)", line)
        assert m, f"openssl.cnf line is not key = value: {line!r}"
        sections[current][m.group(1)] = m.group(2)
    return sections


def parse_dovecot_env(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in text.split("\n"):
        if not line or line.startswith("#"):
            continue
        m = re.fullmatch(r"([A-Z_]+)([=<])([^\r\n]*)", line)
        assert m, f"malformed settings line {line!r}"
        assert m.group(1) not in out, f"{m.group(1)} set twice"
        out[m.group(1)] = m.group(2) + m.group(3)
    return out


def parse_dovecot_services(conf: str) -> dict[str, dict[str, str]]:
    """Each ``service NAME { ... inet_listener cell { port = P  ssl = S } }`` block's settings; braces balance."""
    assert conf.count("{") - conf.count("${") == conf.count("}") - conf.count("${"), "unbalanced braces"
    out: dict[str, dict[str, str]] = {}
    for m in re.finditer(r"\nservice (\S+) \{\n(.*?)\n\}\n", conf, re.S):
        settings_: dict[str, str] = {}
        for line in m.group(2).split("\n"):
            kv = re.fullmatch(r"\s*([a-z_]+) = (.*)", line)
            if kv:
                settings_[kv.group(1)] = kv.group(2)
        assert m.group(1) not in out
        out[m.group(1)] = settings_
    return out


def _expanded(ciphers: str) -> list[str]:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.set_ciphers(ciphers)
    return [c["name"] for c in ctx.get_ciphers() if c["protocol"] != "TLSv1.3"]


# --- fixtures -------------------------------------------------------------------------------------------

CERTS = {p: CertPaths(f"/mailtls/etc/pki/{p}/key.pem", f"/mailtls/etc/pki/{p}/chain.pem") for p in CertProfile}


@pytest.fixture(scope="module")
def leaf(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    folder = tmp_path_factory.mktemp("leaf")
    ca = trustme.CA()
    cert = ca.issue_cert("localhost")
    cert.cert_chain_pems[0].write_to_path(folder / "cert.pem")
    cert.private_key_pem.write_to_path(folder / "key.pem")
    yield folder / "cert.pem", folder / "key.pem"


def _served(matrix: Matrix, server: str, unsupported: Any) -> list[Cell]:
    return [c for c in matrix.cells(servers=[server]) if unsupported(c) is None]


# --- the properties --------------------------------------------------------------------------------------

# matrices() draws hostile names and values too, so a share of the documents is rejected by design (that side
# has its own properties below); the accepted ones still number in the dozens per run.
PROPERTY = settings(
    max_examples=60,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


@PROPERTY
@given(matrices())
def test_accepted_matrices_render_their_intent_on_postfix(doc: dict[str, Any]) -> None:
    try:
        matrix = parse_matrix(doc, source=SOURCE)
    except MatrixError as exc:  # a cipher list that selects nothing: refused in one line, that is all
        assert "\n" not in str(exc) and str(exc).startswith(f"{SOURCE}: ")
        assume(False)
        return
    cells = _served(matrix, "postfix", postfix.unsupported_reason)
    assume(cells)
    ports = container_ports(cells)
    config = postfix.render(
        cells,
        ports=ports,
        cert_files=CERTS,
        client_ca_file="/pki/client-ca.pem",
        username="u@mailtls.test",
        password="p",
    )
    services = parse_master_cf(config.files["postfix/master.cf"])
    cnf = parse_openssl_cnf(config.files["postfix/openssl.cnf"])
    for cell, port in zip(cells, ports, strict=True):
        command, opts, comment = services[str(port)]
        assert command == "smtpd" and comment == cell.id
        assert opts["syslog_name"] == f"postfix/{cell.id}"
        level = {"plain": "none", "starttls": "may"}.get(str(cell.mode), "encrypt")
        assert opts["smtpd_tls_security_level"] == level
        assert (opts.get("smtpd_tls_wrappermode") == "yes") == (cell.mode is Mode.IMPLICIT)
        if cell.policy is None:
            assert not any(k.startswith(("smtpd_tls_protocols", "tls_")) for k in opts)
        else:
            policy = cell.policy
            floor = f">={policy.min_version}"
            want = floor if policy.max_version == VERSIONS[-1] else f"{floor},<={policy.max_version}"
            assert opts["smtpd_tls_protocols"] == opts["smtpd_tls_mandatory_protocols"] == want
            if policy.ciphers is not None or policy.legacy:
                assert opts["tls_high_cipherlist"] == policy.openssl_ciphers()
                assert opts["smtpd_tls_ciphers"] == opts["smtpd_tls_mandatory_ciphers"] == "high"
            else:
                assert "tls_high_cipherlist" not in opts
            if policy.ciphersuites:
                app = cnf[""][opts["tls_config_name"]]
                tls_section = cnf[cnf[cnf[app]["ssl_conf"]]["system_default"]]
                assert tls_section == {"Ciphersuites": policy.ciphersuites}
            else:
                assert "tls_config_name" not in opts
            assert (opts.get("smtpd_tls_req_ccert") == "yes") == cell.auth.client_cert
        if cell.auth.mechanisms:
            assert opts["smtpd_sasl_mechanism_filter"].split(",") == [m.lower() for m in cell.auth.mechanisms]
            assert opts["smtpd_tls_auth_only"] == ("yes" if cell.auth.tls_only else "no")
        else:
            assert opts["smtpd_sasl_auth_enable"] == "no"
        assert ("mynetworks" in opts) == (not cell.auth.required)


@PROPERTY
@given(matrices())
def test_accepted_matrices_render_their_intent_on_dovecot(doc: dict[str, Any]) -> None:
    try:
        matrix = parse_matrix(doc, source=SOURCE)
    except MatrixError as exc:
        assert "\n" not in str(exc) and str(exc).startswith(f"{SOURCE}: ")
        assume(False)
        return
    cells = _served(matrix, "dovecot", dovecot.unsupported_reason)
    assume(cells)
    ports = container_ports(cells)
    config = dovecot.render(
        cells,
        ports=ports,
        cert_files=CERTS,
        client_ca_file="/mailtls/etc/pki/client-ca.pem",
        username="u@mailtls.test",
        password="p",
        oauth_key=b"k" * 32,
        mail_uid=1000,
        mail_gid=1000,
    )
    services = parse_dovecot_services(config.files["dovecot.conf"])
    for cell, port in zip(cells, ports, strict=True):
        name = config.services[cell.id]
        block = services[name]
        assert block["port"] == str(port)
        assert block["protocol"] == str(cell.protocol)
        assert block["ssl"] == ("yes" if cell.mode is Mode.IMPLICIT else "no")
        env = parse_dovecot_env(config.files[f"cells/{name}.env"])
        assert env["LOGIN_GREETING"] == f"=mailtls {cell.id} ready."
        assert env["DISABLE_PLAINTEXT_AUTH"] == ("=yes" if cell.auth.tls_only else "=no")
        if cell.policy is None:
            assert env["SSL"] == "=no" and "SSL_MIN_PROTOCOL" not in env
            continue
        policy = cell.policy
        assert env["SSL_MIN_PROTOCOL"] == f"={policy.min_version}"
        cipher_list = env["SSL_CIPHER_LIST"][1:]
        assert cipher_list.startswith(policy.openssl_ciphers())
        assert _expanded(cipher_list) == _expanded(
            policy.openssl_ciphers() + cipher_list[len(policy.openssl_ciphers()) :]
        )
        assert env.get("SSL_CIPHER_SUITES") == (f"={policy.ciphersuites}" if policy.ciphersuites else None)
        if policy.max_version == VERSIONS[-1]:
            assert "OPENSSL_CONF" not in env
        else:
            cap = env["OPENSSL_CONF"].rsplit("/", 1)[-1]
            cap_cnf = parse_openssl_cnf(config.files[f"openssl/{cap}"])
            assert cap_cnf["mailtls_tls"] == {"MaxProtocol": policy.max_version}
        assert ("SSL_VERIFY_CLIENT_CERT" in env) == cell.auth.client_cert


@PROPERTY
@given(doc=matrices())
def test_accepted_matrices_make_the_embedded_contexts_they_declare(
    doc: dict[str, Any], leaf: tuple[Path, Path]
) -> None:
    try:
        matrix = parse_matrix(doc, source=SOURCE)
    except MatrixError:
        assume(False)
        return
    policies_ = {c.policy for c in matrix.cells(servers=["embedded"]) if c.policy and not c.policy.ciphersuites}
    assume(policies_)
    for policy in policies_:
        assert isinstance(policy, TLSPolicy)
        ciphers = _cipher_string(policy.openssl_ciphers(), CertProfile.VALID)
        ctx = server_context(
            min_version=policy.min_version,
            max_version=policy.max_version,
            ciphers=ciphers,
            cert_file=leaf[0],
            key_file=leaf[1],
        )
        assert ctx.minimum_version is ssl.TLSVersion[policy.min_version.replace(".", "_")]
        assert ctx.maximum_version is ssl.TLSVersion[policy.max_version.replace(".", "_")]
        offered = [c["name"] for c in ctx.get_ciphers() if c["protocol"] != "TLSv1.3"]
        assert offered == _expanded(policy.openssl_ciphers())


@settings(max_examples=150, deadline=None, database=None)
@given(hostile_matrices())
def test_matrices_with_hostile_names_or_values_are_refused_in_one_line(case: tuple[dict[str, Any], str]) -> None:
    doc, where = case
    with pytest.raises(MatrixError) as err:
        parse_matrix(doc, source=SOURCE)
    message = str(err.value)
    assert "\n" not in message and "\r" not in message
    assert message.startswith(f"{SOURCE}: ") and err.value.key
    assert message.startswith(f"{SOURCE}: {err.value.key}: ")
    prefix = {
        "policy": "policies[",
        "auth": "auth[",
        "block": "grid[0].name",
        "selection": "selections[",
        "ciphers": "policies.",
        "ciphersuites": "policies.",
        "grid-ref": "grid[0] (",
    }[where]
    assert err.value.key.startswith(prefix), (where, message)


@settings(max_examples=300, deadline=None, database=None)
@given(junk)
def test_any_document_is_a_matrix_or_one_line(doc: Any) -> None:
    try:
        parse_matrix(doc, source=SOURCE)
    except MatrixError as exc:
        assert "\n" not in str(exc) and str(exc).startswith(f"{SOURCE}: ")


@settings(max_examples=200, deadline=None, database=None)
@given(st.text(max_size=30))
def test_any_cipher_string_is_refused_in_one_line_or_follows_the_grammar(ciphers: str) -> None:
    doc = {"policies": {"p": {"ciphers": ciphers}}, "grid": [{"services": ["smtp"], "modes": ["plain"]}]}
    try:
        parse_matrix(doc, source=SOURCE)
    except MatrixError as exc:
        assert "\n" not in str(exc) and exc.key == "policies.p.ciphers"
        return
    assert not re.search(r"[\s{}\x00-\x1f\x7f,]", ciphers)
