"""Dovecot rendering, tokens, Maildir state and log filtering: pure functions, no Docker."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import subprocess
import sys
from email.message import EmailMessage
from pathlib import Path

import pytest

from pytest_mailtls.backends import dovecot
from pytest_mailtls.backends.dovecot import (
    OAUTH_ISSUER,
    CertPaths,
    DovecotBackend,
    cell_log_lines,
    container_ports,
    decode_mailbox_name,
    deliver_to_maildir,
    encode_mailbox_name,
    mint_jwt,
    read_mailbox_state,
    render,
    unsupported_reason,
)
from pytest_mailtls.matrix import load_matrix
from pytest_mailtls.policy import SERVICES, AuthPolicy, Cell, CertProfile, Mode, TLSPolicy

CERTS = {p: CertPaths(f"/mailtls/etc/pki/{p}/key.pem", f"/mailtls/etc/pki/{p}/chain.pem") for p in CertProfile}
CLIENT_CA = "/mailtls/etc/pki/client-ca.pem"
INTERMEDIATE = TLSPolicy(
    "intermediate", "TLSv1.2", "TLSv1.3", ciphers="ECDHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-AES256-GCM-SHA384"
)
ALL_MECHS = AuthPolicy("sasl-all", ("PLAIN", "LOGIN", "CRAM-MD5", "XOAUTH2", "OAUTHBEARER"))


def cell(
    service: str = "imaps",
    mode: Mode = Mode.IMPLICIT,
    policy: TLSPolicy | None = INTERMEDIATE,
    cert: CertProfile | None = CertProfile.VALID,
    auth: AuthPolicy | None = None,
) -> Cell:
    if not mode.tls:
        policy = cert = None
    return Cell("dovecot", SERVICES[service], mode, policy, cert, auth or AuthPolicy("default"))


def rendered(cells: list[Cell], **kwargs: object) -> dovecot.RenderedConfig:
    args: dict[str, object] = {
        "ports": container_ports(cells),
        "cert_files": CERTS,
        "client_ca_file": CLIENT_CA,
        "username": "tester@mailtls.test",
        "password": "secret: with spaces",
        "oauth_key": b"k" * 32,
        "mail_uid": 1000,
        "mail_gid": 1000,
    }
    args.update(kwargs)
    return render(cells, **args)  # type: ignore[arg-type]


def settings(config: dovecot.RenderedConfig, c: Cell) -> dict[str, str]:
    """A cell's settings file as the login wrapper reads it: KEY=value and KEY<file."""
    out: dict[str, str] = {}
    for line in config.files[f"cells/{config.services[c.id]}.env"].splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.match(r"^([A-Z_]+)([=<])(.*)$", line)
        assert m, f"malformed settings line {line!r}"
        out[m.group(1)] = m.group(2) + m.group(3)
    return out


def service_block(config: dovecot.RenderedConfig, c: Cell) -> str:
    conf = config.files["dovecot.conf"]
    start = conf.index(f"service {config.services[c.id]} {{")
    return conf[start : conf.index("\n}\n", start)]


# --- the default grid ----------------------------------------------------------------------------


def test_default_grid_renders_one_login_service_per_cell() -> None:
    cells = load_matrix().cells(servers=["dovecot"])
    assert len(cells) == 88  # 76 + 12 weak-crypto cells (static-rsa-cbc, null-cipher, dhe-1024)
    config = rendered(cells)
    conf = config.files["dovecot.conf"]
    assert len(set(config.services.values())) == len(cells)
    for c, port in zip(cells, container_ports(cells), strict=True):
        block = service_block(config, c)
        assert f"port = {port}\n" in block
        assert f"protocol = {c.protocol}" in block
        assert f"{config.services[c.id]}.env {c.protocol}-login" in block
        assert f"ssl = {'yes' if c.mode is Mode.IMPLICIT else 'no'}" in block
    # The stock listeners are closed; every port belongs to a cell.
    assert conf.count("port = 0") == 4
    # Only what the grid declares is offered: PLAIN and LOGIN, so no mechanism needs denying.
    assert "auth_mechanisms = plain login\n" in conf
    assert "deny-mechanism" not in conf
    assert "driver = oauth2" not in conf
    assert config.files["deny-mechanism"] == ""


def test_protocol_ranges_and_caps() -> None:
    modern = TLSPolicy("modern", "TLSv1.3", "TLSv1.3")
    tls10 = TLSPolicy("tls10-only", "TLSv1", "TLSv1")
    tls12 = TLSPolicy("tls12-only", "TLSv1.2", "TLSv1.2")
    cells = [cell(policy=modern), cell(policy=tls10), cell(policy=tls12), cell(policy=INTERMEDIATE)]
    config = rendered(cells)
    s_modern, s_tls10, s_tls12, s_inter = (settings(config, c) for c in cells)
    assert s_modern["SSL_MIN_PROTOCOL"] == "=TLSv1.3" and "OPENSSL_CONF" not in s_modern
    assert s_tls10["SSL_MIN_PROTOCOL"] == "=TLSv1"
    assert s_tls10["OPENSSL_CONF"] == "=/mailtls/etc/openssl/max-TLSv1.cnf"
    assert s_tls10["SSL_CIPHER_LIST"] == "=DEFAULT:@SECLEVEL=0"  # OpenSSL 3 needs level 0 for TLSv1
    assert s_tls12["OPENSSL_CONF"] == "=/mailtls/etc/openssl/max-TLSv1.2.cnf"
    assert s_tls12["SSL_CIPHER_LIST"] == "=DEFAULT:@SECLEVEL=2"
    assert s_inter["SSL_CIPHER_LIST"] == f"={INTERMEDIATE.ciphers}:@SECLEVEL=2"
    assert "OPENSSL_CONF" not in s_inter
    assert "MaxProtocol = TLSv1\n" in config.files["openssl/max-TLSv1.cnf"]
    assert "MaxProtocol = TLSv1.2\n" in config.files["openssl/max-TLSv1.2.cnf"]
    assert sorted(k for k in config.files if k.startswith("openssl/")) == [
        "openssl/max-TLSv1.2.cnf",
        "openssl/max-TLSv1.cnf",
    ]


def test_openssl_cap_caps_a_new_context(tmp_path: Path) -> None:
    """The rendered file, handed to OpenSSL as OPENSSL_CONF, really lowers a fresh context's maximum."""
    config = rendered([cell(policy=TLSPolicy("tls11-only", "TLSv1.1", "TLSv1.1"))])
    path = tmp_path / "cap.cnf"
    path.write_text(config.files["openssl/max-TLSv1.1.cnf"])
    probe = "import ssl; print(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).maximum_version.name)"

    def maximum(env: dict[str, str]) -> str:
        result = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True)
        return result.stdout.strip()

    assert maximum({"OPENSSL_CONF": str(path)}) == "TLSv1_1"
    assert maximum({}) == "MAXIMUM_SUPPORTED"


def test_tls13_suites_and_weak_certificates() -> None:
    suites = TLSPolicy("chacha", "TLSv1.3", "TLSv1.3", ciphersuites="TLS_CHACHA20_POLY1305_SHA256")
    cells = [cell(policy=suites), cell(cert=CertProfile.WEAK_RSA_1024), cell(cert=CertProfile.SHA1_SIGNATURE)]
    config = rendered(cells)
    assert settings(config, cells[0])["SSL_CIPHER_SUITES"] == "=TLS_CHACHA20_POLY1305_SHA256"
    assert "SSL_CIPHER_SUITES" not in settings(config, cells[1])
    # The server must be able to load the faulty certificate it is there to present.
    for c in cells[1:]:
        assert settings(config, c)["SSL_CIPHER_LIST"].endswith(":@SECLEVEL=0")
        assert settings(config, c)["SSL_CERT"] == f"</mailtls/etc/pki/{c.cert}/chain.pem"
        assert settings(config, c)["SSL_KEY"] == f"</mailtls/etc/pki/{c.cert}/key.pem"


@pytest.mark.parametrize(
    ("service", "mode", "auth", "ssl", "plaintext"),
    [
        ("imap", Mode.PLAIN, AuthPolicy("cleartext-auth", tls_only=False), "no", "no"),
        ("imap", Mode.PLAIN, AuthPolicy("default"), "no", "yes"),
        ("imap", Mode.STARTTLS, AuthPolicy("default"), "required", "yes"),
        ("pop3", Mode.STARTTLS, AuthPolicy("cleartext-auth", tls_only=False), "yes", "no"),
        ("pop3", Mode.STARTTLS_REQUIRED, AuthPolicy("cleartext-auth", tls_only=False), "required", "no"),
        ("imaps", Mode.IMPLICIT, AuthPolicy("default"), "yes", "yes"),
    ],
)
def test_modes(service: str, mode: Mode, auth: AuthPolicy, ssl: str, plaintext: str) -> None:
    c = cell(service, mode, auth=auth)
    s = settings(rendered([c]), c)
    assert s["SSL"] == f"={ssl}"
    assert s["DISABLE_PLAINTEXT_AUTH"] == f"={plaintext}"
    assert ("SSL_CERT" in s) == mode.tls


def test_plain_grid_needs_no_certificate() -> None:
    c = cell("pop3", Mode.PLAIN, auth=AuthPolicy("cleartext-auth", tls_only=False))
    config = rendered([c], cert_files={}, client_ca_file=None)
    assert "\nssl = no\n" in config.files["dovecot.conf"]
    assert "ssl_cert" not in config.files["dovecot.conf"]


def test_mutual_tls_is_denied_per_port_without_a_valid_certificate() -> None:
    mtls = AuthPolicy("mtls", client_cert=True)
    cells = [cell(), cell("imap", Mode.STARTTLS_REQUIRED, auth=mtls), cell(auth=mtls)]
    config = rendered(cells)
    ports = container_ports(cells)
    assert config.files["deny-without-cert"] == f"imap/{ports[1]}/:{{PLAIN}}deny\nimap/{ports[2]}/:{{PLAIN}}deny\n"
    conf = config.files["dovecot.conf"]
    assert "args = username_format=%{service}/%{lport}/%{cert} /mailtls/etc/deny-without-cert" in conf
    s = settings(config, cells[1])
    assert s["SSL_VERIFY_CLIENT_CERT"] == "=yes" and s["SSL_CA"] == f"<{CLIENT_CA}"
    assert "SSL_VERIFY_CLIENT_CERT" not in settings(config, cells[0])
    with pytest.raises(ValueError, match="client_ca_file"):
        rendered(cells, client_ca_file=None)


def test_mechanisms_are_offered_globally_and_denied_per_cell() -> None:
    cells = [cell(), cell(auth=ALL_MECHS), cell("pop3s", auth=AuthPolicy("oauth-only", ("XOAUTH2",)))]
    config = rendered(cells)
    conf = config.files["dovecot.conf"]
    assert "auth_mechanisms = plain login cram-md5 xoauth2 oauthbearer\n" in conf
    p0, p1, p2 = container_ports(cells)
    denied = set(config.files["deny-mechanism"].splitlines())
    assert {f"imap/{p0}/{m}:{{PLAIN}}deny" for m in ("CRAM-MD5", "XOAUTH2", "OAUTHBEARER")} <= denied
    assert not any(f"/{p1}/" in line for line in denied)
    assert {f"pop3/{p2}/{m}:{{PLAIN}}deny" for m in ("PLAIN", "LOGIN", "CRAM-MD5", "OAUTHBEARER")} <= denied
    assert f"pop3/{p2}/XOAUTH2:{{PLAIN}}deny" not in denied
    assert "mechanisms = plain login cram-md5\n" in conf
    assert "driver = oauth2" in conf and "mechanisms = xoauth2 oauthbearer\n" in conf
    # Deny tables come before the password table, or a good password would win first.
    assert conf.index("deny-mechanism") < conf.index("/mailtls/etc/passwd")


def test_password_any_characters_and_user_validation() -> None:
    config = rendered([cell()], password="p:ss wörd")
    user, _, stored = config.files["passwd"].strip().partition(":")
    assert user == "tester@mailtls.test"
    assert stored.startswith("{PLAIN.b64}")
    assert base64.b64decode(stored.removeprefix("{PLAIN.b64}")).decode() == "p:ss wörd"
    for bad in ("", "a:b", "a b", "a/b"):
        with pytest.raises(ValueError, match="user name"):
            rendered([cell()], username=bad)
    with pytest.raises(ValueError, match="password"):
        rendered([cell()], password="two\nlines")


def test_render_refuses_what_it_cannot_serve() -> None:
    smtp = Cell("dovecot", SERVICES["submission"], Mode.STARTTLS, INTERMEDIATE, CertProfile.VALID)
    assert "IMAP and POP3" in (unsupported_reason(smtp) or "")
    assert unsupported_reason(cell()) is None
    assert DovecotBackend().unsupported(
        Cell("postfix", SERVICES["smtps"], Mode.IMPLICIT, INTERMEDIATE, CertProfile.VALID)
    )
    with pytest.raises(ValueError, match="IMAP and POP3"):
        rendered([smtp])
    with pytest.raises(ValueError, match="ports"):
        rendered([cell()], ports=[1, 2])
    with pytest.raises(ValueError, match="distinct"):
        rendered([cell(), cell()], ports=[1, 2])
    with pytest.raises(ValueError, match="certificate files"):
        rendered([cell(cert=CertProfile.EXPIRED)], cert_files={CertProfile.VALID: CERTS[CertProfile.VALID]})
    with pytest.raises(ValueError, match="root"):
        rendered([cell()], mail_uid=0)


def test_settings_files_parse_as_the_wrapper_reads_them() -> None:
    cells = load_matrix().cells(servers=["dovecot"])
    config = rendered(cells)
    for c in cells:
        s = settings(config, c)  # asserts every line is KEY=value or KEY<file
        assert s["LOGIN_GREETING"] == f"=mailtls {c.id} ready."
    wrapper = Path(__file__).parents[2] / "containers" / "dovecot" / "login-env.sh"
    assert "-k" in wrapper.read_text()


# --- tokens --------------------------------------------------------------------------------------


def _b64url_decode(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def test_mint_jwt_is_a_valid_hs256_token() -> None:
    key = b"a secret key of thirty-two bytes!"
    token = mint_jwt(key, "tester@mailtls.test", lifetime=600, now=1_700_000_000)
    head, body, sig = token.split(".")
    assert json.loads(_b64url_decode(head)) == {"alg": "HS256", "typ": "JWT"}
    claims = json.loads(_b64url_decode(body))
    assert claims["sub"] == "tester@mailtls.test" and claims["iss"] == OAUTH_ISSUER
    assert claims["iat"] <= 1_700_000_000 < claims["exp"] == claims["iat"] + 601
    good = hmac.new(key, f"{head}.{body}".encode(), hashlib.sha256).digest()
    assert _b64url_decode(sig) == good
    other = hmac.new(b"other-key", f"{head}.{body}".encode(), hashlib.sha256).digest()
    assert _b64url_decode(sig) != other
    expired = json.loads(_b64url_decode(mint_jwt(key, "x", lifetime=-10, now=1_700_000_000).split(".")[1]))
    assert expired["exp"] < 1_700_000_000 and expired["iat"] < expired["exp"]


def test_oauth_key_lands_where_dovecot_looks() -> None:
    config = rendered([cell(auth=ALL_MECHS)], oauth_key=b"\x00\x01key")
    assert base64.b64decode(config.files["oauth/default/HS256/default"]) == b"\x00\x01key"
    assert "introspection_mode = local" in config.files["oauth2.conf.ext"]
    assert f"issuers = {OAUTH_ISSUER}" in config.files["oauth2.conf.ext"]


# --- mailboxes -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "encoded"),
    [("INBOX", "INBOX"), ("Entwürfe", "Entw&APw-rfe"), ("A&B", "A&-B"), ("日本語", "&ZeVnLIqe-")],
)
def test_mailbox_names_in_modified_utf7(name: str, encoded: str) -> None:
    assert encode_mailbox_name(name) == encoded
    assert decode_mailbox_name(encoded) == name


def _message(subject: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = "a@mailtls.test"
    msg["To"] = "tester@mailtls.test"
    msg["Subject"] = subject
    msg["Message-ID"] = f"<{subject}@mailtls.test>"
    msg.set_content("body\n")
    return msg


def test_deliver_and_read_state(tmp_path: Path) -> None:
    maildir = tmp_path / "Maildir"
    first = deliver_to_maildir(maildir, _message("one"))
    second = deliver_to_maildir(maildir, _message("two").as_bytes())
    archived = deliver_to_maildir(maildir, _message("old"), folder="Archive.2024")
    draft = deliver_to_maildir(maildir, _message("draft"), folder="Entwürfe")
    assert first.parent == maildir / "new" and first != second
    assert archived.parent == maildir / ".Archive.2024" / "new"
    assert (maildir / ".Archive.2024" / "maildirfolder").exists()
    assert draft.parent == maildir / ".Entw&APw-rfe" / "new"
    assert not list((maildir / "tmp").iterdir())

    # What Dovecot writes once a client has seen and flagged them.
    (maildir / "dovecot-uidlist").write_text(
        f"3 V1700000001 N3 G0123\n1 :{first.name}\n2 W123 :{second.name}\n3 :gone-long-ago\n"
    )  # N lags: Dovecot appended record 3 without rewriting the header
    (maildir / "dovecot-keywords").write_text("0 $Forwarded\n1 Junk\n")
    first.rename(maildir / "cur" / f"{first.name}:2,FSb")
    state = read_mailbox_state(maildir)
    assert state.folders == ("INBOX", "Archive.2024", "Entwürfe")
    assert state.uid_validity == 1700000001 and state.uid_next == 4
    assert [m.uid for m in state.messages] == [1, 2]
    one, two = state.messages
    assert one.flags == frozenset({"\\Flagged", "\\Seen", "Junk"}) and not one.recent
    assert two.flags == frozenset() and two.recent
    assert one.subject == "one" and two.message_id == "<two@mailtls.test>"
    assert state.by_subject("two") == [two]
    assert two.message().get_content() == "body\n"

    two.path.unlink()  # expunged by a client
    later = read_mailbox_state(maildir)
    assert later.expunged_since(state) == {2}
    assert state.expunged_since(later) == set()
    archive = read_mailbox_state(maildir, "Archive.2024")
    assert [m.subject for m in archive.messages] == ["old"] and archive.messages[0].uid is None
    with pytest.raises(ValueError, match="compare"):
        archive.expunged_since(state)
    with pytest.raises(ValueError, match=r"no folder 'Archive'.*INBOX, Archive.2024, Entwürfe"):
        read_mailbox_state(maildir, "Archive")
    for bad in ("", ".hidden", "a..b", "a/b"):
        with pytest.raises(ValueError, match="folder"):
            deliver_to_maildir(maildir, b"x", folder=bad)


# --- logs ----------------------------------------------------------------------------------------


LOG = """\
Nov 22 05:49:10 master: Info: Dovecot v2.3.19.1 starting up for imap, pop3, lmtp
Nov 22 05:49:10 auth: Info: passwd-file(tester@mailtls.test,172.17.0.1,<AAA>): unknown user
Nov 22 05:49:10 dovecot-imaps-implicit-modern-valid: Info: Login: user=<tester@mailtls.test>, session=<AAA>
Nov 22 05:49:10 imap(tester@mailtls.test)<198><AAA>: Info: Disconnected: Logged out in=12 out=477
Nov 22 05:49:11 dovecot-imaps-implicit-modern-valid-mtls: Info: Disconnected: (client didn't send a cert), session=<BBB>
Nov 22 05:49:11 imap(tester@mailtls.test)<199><BBB>: Info: Disconnected: Logged out
Nov 22 05:49:12 dovecot-imaps-implicit-modern-valid: Info: Disconnected: SSL_accept() failed: unsupported protocol
"""


def test_cell_log_lines_follow_sessions_and_nothing_else() -> None:
    lines = cell_log_lines(LOG, "dovecot-imaps-implicit-modern-valid")
    assert len(lines) == 4
    assert "unknown user" in lines[0] and "imap(tester" in lines[2] and "unsupported protocol" in lines[3]
    assert not any("BBB" in line for line in lines)
    mtls = cell_log_lines(LOG, "dovecot-imaps-implicit-modern-valid-mtls")
    assert [line.split(": ")[0].split()[-1] for line in mtls] == [
        "dovecot-imaps-implicit-modern-valid-mtls",
        "imap(tester@mailtls.test)<199><BBB>",
    ]
    assert cell_log_lines(LOG, "dovecot-pop3s-implicit-modern-valid") == []


def test_weak_policies_render_their_suites_null_at_level_zero() -> None:
    static = TLSPolicy("static-rsa-cbc", "TLSv1.2", "TLSv1.2", ciphers="AES128-SHA:AES256-SHA")
    null = TLSPolicy("null-cipher", "TLSv1.2", "TLSv1.2", ciphers="NULL-SHA256:NULL-SHA")
    cells = [cell(policy=static), cell(policy=null)]
    s_static, s_null = (settings(rendered(cells), c) for c in cells)
    assert s_static["SSL_CIPHER_LIST"] == "=AES128-SHA:AES256-SHA:@SECLEVEL=2"
    assert s_null["SSL_CIPHER_LIST"] == "=NULL-SHA256:NULL-SHA:@SECLEVEL=0"
    assert s_null["OPENSSL_CONF"] == "=/mailtls/etc/openssl/max-TLSv1.2.cnf"


def test_a_small_dh_group_is_the_cell_login_setting() -> None:
    small = TLSPolicy(
        "dhe-1024", "TLSv1.2", "TLSv1.2", ciphers="DHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES256-GCM-SHA384", dh_bits=1024
    )
    cells = [cell(policy=small), cell()]
    config = rendered(cells)
    s_small, s_other = (settings(config, c) for c in cells)
    assert s_small["SSL_DH"] == "</mailtls/etc/dh/dh1024.pem"
    assert s_small["SSL_CIPHER_LIST"] == "=DHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES256-GCM-SHA384:@SECLEVEL=1"
    assert "SSL_DH" not in s_other  # dovecot.conf's global ssl_dh
    assert config.files["dh/dh1024.pem"].startswith("-----BEGIN DH PARAMETERS-----\n")
