"""Rendering the Postfix configuration: pure functions, no Docker.

master.cf is parsed back into services and their ``-o`` overrides, so each
test states what one cell's service must say to Postfix.
"""

from __future__ import annotations

import re

import pytest

from pytest_mailtls.backends.postfix import (
    CAPTURE_DOMAIN,
    LOCAL_REALM,
    PostfixBackend,
    RenderedConfig,
    ServiceFiles,
    cell_log_lines,
    container_ports,
    render,
    unsupported_reason,
)
from pytest_mailtls.matrix import load_matrix
from pytest_mailtls.policy import SERVICES, AuthPolicy, Cell, CertProfile, Mode, TLSPolicy

CERTS = {p: ServiceFiles(f"/pki/{p}/key.pem", f"/pki/{p}/chain.pem") for p in CertProfile}
INTERMEDIATE = TLSPolicy("intermediate", ciphers="ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES128-GCM-SHA256")
MTLS = AuthPolicy("mtls", client_cert=True)
OPEN = AuthPolicy("open", mechanisms=(), required=False)
CLEARTEXT = AuthPolicy("cleartext-auth", tls_only=False)


def cell(
    service: str = "submission",
    mode: Mode = Mode.STARTTLS,
    policy: TLSPolicy | None = INTERMEDIATE,
    cert: CertProfile | None = CertProfile.VALID,
    auth: AuthPolicy | None = None,
) -> Cell:
    if mode is Mode.PLAIN:
        policy, cert = None, None
    return Cell("postfix", SERVICES[service], mode, policy, cert, auth or AuthPolicy("default"))


def rendered(*cells: Cell, **kwargs: object) -> RenderedConfig:
    options: dict[str, object] = {
        "ports": container_ports(cells),
        "cert_files": CERTS,
        "client_ca_file": "/pki/client-ca.pem",
        "username": "tester@mailtls.test",
        "password": "secret",
    }
    options.update(kwargs)
    return render(cells, **options)  # type: ignore[arg-type]


def services(config: RenderedConfig) -> dict[str, tuple[str, dict[str, str]]]:
    """master.cf as {service name: (command, {-o name: value})}, continuation lines folded in."""
    out: dict[str, tuple[str, dict[str, str]]] = {}
    current = ""
    for line in config.files["postfix/master.cf"].splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        if line[0].isspace():
            text = line.strip()
            braced = re.fullmatch(r"-o \{ (\S+) = (.*) \}", text)
            name, value = braced.groups() if braced else text[3:].split("=", 1)
            assert text.startswith("-o "), line
            out[current][1][name] = value
            continue
        fields = line.split()
        current = fields[0]
        assert current not in out, f"service {current} defined twice"
        out[current] = (fields[7], {})
    return out


def opts(config: RenderedConfig, port: int) -> dict[str, str]:
    command, options = services(config)[str(port)]
    assert command == "smtpd"
    return options


def main_cf(config: RenderedConfig) -> dict[str, str]:
    params: dict[str, str] = {}
    for line in config.files["postfix/main.cf"].splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.partition("=")
            name, value = name.strip(), value.strip()
            assert name not in params, f"{name} set twice in main.cf"
            params[name] = value
    return params


# --------------------------------------------------------------------------- one service per cell


def test_every_default_postfix_cell_renders_to_its_own_port_and_cleanup() -> None:
    cells = load_matrix().cells(servers=["postfix"])
    config = rendered(*cells)
    found = services(config)
    for index, (c, port) in enumerate(zip(cells, container_ports(cells), strict=True)):
        options = opts(config, port)
        assert options["syslog_name"] == f"postfix/{c.id}" == config.syslog_names[c.id]
        assert options["cleanup_service_name"] == f"cleanup-{index}"
        command, cleanup = found[f"cleanup-{index}"]
        assert command == "cleanup"
        assert cleanup["virtual_alias_maps"] == f"static:{c.id}@{CAPTURE_DOMAIN}"
        assert cleanup["syslog_name"] == f"postfix/{c.id}"
    assert len([s for s in found if s.isdigit()]) == len(cells)


def test_each_cell_has_its_own_maildir_in_the_mailbox_map() -> None:
    a, b = cell(), cell("smtp", Mode.PLAIN, auth=OPEN)
    config = rendered(a, b)
    lines = config.files["postfix/mailboxes"].splitlines()
    assert f"{a.id}@{CAPTURE_DOMAIN} {a.id}/" in lines
    assert f"{b.id}@{CAPTURE_DOMAIN} {b.id}/" in lines
    assert f"unattributed@{CAPTURE_DOMAIN} unattributed/" in lines
    assert config.maildirs == {a.id: a.id, b.id: b.id}


def test_nothing_is_relayed_and_nothing_asks_dns() -> None:
    params = main_cf(rendered(cell()))
    for transport in ("default_transport", "relay_transport", "local_transport"):
        assert params[transport].startswith("error:")
    assert params["virtual_mailbox_domains"] == CAPTURE_DOMAIN
    assert params["virtual_alias_domains"] == ""  # otherwise every recipient bounces as "unknown"
    assert params["mydestination"] == params["relay_domains"] == ""
    assert params["smtp_dns_support_level"] == "disabled"
    assert params["smtpd_peername_lookup"] == "no"
    assert params["maillog_file"] == "/dev/stdout"


def test_no_per_client_limits_or_tarpits() -> None:
    params = main_cf(rendered(cell()))
    for name in (
        "smtpd_client_connection_count_limit",
        "smtpd_client_connection_rate_limit",
        "smtpd_client_message_rate_limit",
        "smtpd_client_recipient_rate_limit",
        "smtpd_client_new_tls_session_rate_limit",
        "smtpd_client_auth_rate_limit",
        "smtpd_error_sleep_time",
        "in_flow_delay",
    ):
        assert params[name] == "0", name
    assert int(params["default_process_limit"]) >= 200
    assert int(params["smtpd_soft_error_limit"]) >= 100 and int(params["smtpd_hard_error_limit"]) >= 100
    assert "postscreen" not in rendered(cell()).files["postfix/master.cf"]


def test_delivery_uid_follows_the_host_user_and_virtual_accepts_it() -> None:
    params = main_cf(rendered(cell(), mail_uid=1000, mail_gid=1001))
    assert (params["virtual_uid_maps"], params["virtual_gid_maps"]) == ("static:1000", "static:1001")
    assert int(params["virtual_minimum_uid"]) <= 1000
    low = main_cf(rendered(cell(), mail_uid=42, mail_gid=42))
    assert int(low["virtual_minimum_uid"]) <= 42
    with pytest.raises(ValueError, match="virtual"):
        rendered(cell(), mail_uid=0)


# --------------------------------------------------------------------------- TLS


@pytest.mark.parametrize(
    ("mode", "level", "wrapper"),
    [(Mode.STARTTLS, "may", None), (Mode.STARTTLS_REQUIRED, "encrypt", None), (Mode.IMPLICIT, "encrypt", "yes")],
)
def test_tls_mode(mode: Mode, level: str, wrapper: str | None) -> None:
    service = "smtps" if mode is Mode.IMPLICIT else "submission"
    options = opts(rendered(cell(service, mode)), 10000)
    assert options["smtpd_tls_security_level"] == level
    assert options.get("smtpd_tls_wrappermode") == wrapper


def test_plain_cell_has_no_tls_at_all() -> None:
    options = opts(rendered(cell("smtp", Mode.PLAIN, auth=OPEN)), 10000)
    assert options["smtpd_tls_security_level"] == "none"
    assert not any(name.startswith(("smtpd_tls_chain", "smtpd_tls_protocols", "tls_")) for name in options)


@pytest.mark.parametrize(
    ("low", "high", "expected"),
    [
        ("TLSv1.3", "TLSv1.3", ">=TLSv1.3"),
        ("TLSv1.2", "TLSv1.3", ">=TLSv1.2"),
        ("TLSv1.2", "TLSv1.2", ">=TLSv1.2,<=TLSv1.2"),
        ("TLSv1", "TLSv1.1", ">=TLSv1,<=TLSv1.1"),
        ("TLSv1", "TLSv1", ">=TLSv1,<=TLSv1"),
    ],
)
def test_protocol_range_for_both_opportunistic_and_mandatory_tls(low: str, high: str, expected: str) -> None:
    options = opts(rendered(cell(policy=TLSPolicy("p", low, high))), 10000)
    assert options["smtpd_tls_protocols"] == options["smtpd_tls_mandatory_protocols"] == expected


def test_cipher_list_overrides_only_this_service() -> None:
    single = TLSPolicy("single", "TLSv1.2", "TLSv1.2", ciphers="AES256-GCM-SHA384")
    config = rendered(cell(policy=single), cell("smtps", Mode.IMPLICIT, policy=TLSPolicy("default")))
    first, second = opts(config, 10000), opts(config, 10001)
    assert first["smtpd_tls_ciphers"] == first["smtpd_tls_mandatory_ciphers"] == "high"
    assert first["tls_high_cipherlist"] == "AES256-GCM-SHA384"
    assert not any("cipher" in name for name in second)  # the server's default list stays untouched
    assert "tls_high_cipherlist" not in main_cf(config)


def test_legacy_policy_gets_security_level_zero() -> None:
    legacy = opts(rendered(cell(policy=TLSPolicy("tls10", "TLSv1", "TLSv1"))), 10000)
    assert legacy["tls_high_cipherlist"] == "DEFAULT:@SECLEVEL=0"
    own = opts(rendered(cell(policy=TLSPolicy("legacy", "TLSv1", "TLSv1.3", ciphers="ALL:@SECLEVEL=0"))), 10000)
    assert own["tls_high_cipherlist"] == "ALL:@SECLEVEL=0"


def test_cipher_list_with_spaces_uses_braces() -> None:
    config = rendered(cell(policy=TLSPolicy("spaced", ciphers="ECDHE-RSA-AES128-GCM-SHA256 AES256-GCM-SHA384")))
    assert "  -o { tls_high_cipherlist = ECDHE-RSA-AES128-GCM-SHA256 AES256-GCM-SHA384 }" in (
        config.files["postfix/master.cf"].splitlines()
    )
    assert opts(config, 10000)["tls_high_cipherlist"] == "ECDHE-RSA-AES128-GCM-SHA256 AES256-GCM-SHA384"
    with pytest.raises(ValueError, match=r"master\.cf"):
        rendered(cell(policy=TLSPolicy("braced", ciphers="A {B}")))


def test_tls13_suites_go_through_an_openssl_section_per_listener() -> None:
    chacha = TLSPolicy("chacha", "TLSv1.3", "TLSv1.3", ciphersuites="TLS_CHACHA20_POLY1305_SHA256")
    config = rendered(cell(), cell("smtps", Mode.IMPLICIT, policy=chacha))
    assert "tls_config_name" not in opts(config, 10000)
    options = opts(config, 10001)
    assert options["tls_config_file"] == "/etc/postfix/openssl.cnf"
    name = options["tls_config_name"]
    cnf = config.files["postfix/openssl.cnf"]
    # The application name maps to an init section whose ssl_conf system_default sets the suites.
    init = re.search(rf"^{name} = (\S+)$", cnf, re.M)
    assert init is not None
    ssl_section = re.search(rf"^\[{init.group(1)}\]\nssl_conf = (\S+)$", cnf, re.M)
    assert ssl_section is not None
    default = re.search(rf"^\[{ssl_section.group(1)}\]\nsystem_default = (\S+)$", cnf, re.M)
    assert default is not None
    assert f"[{default.group(1)}]\nCiphersuites = TLS_CHACHA20_POLY1305_SHA256" in cnf


def test_certificate_profile_files_key_first() -> None:
    options = opts(rendered(cell(cert=CertProfile.EXPIRED)), 10000)
    assert options["smtpd_tls_chain_files"] == "/pki/expired/key.pem,/pki/expired/chain.pem"
    with pytest.raises(ValueError, match="no certificate files"):
        rendered(cell(cert=CertProfile.EXPIRED), cert_files={})


def test_mutual_tls_demands_a_certificate_from_the_session_ca() -> None:
    config = rendered(cell("submission", Mode.STARTTLS_REQUIRED, auth=MTLS), cell())
    options = opts(config, 10000)
    assert options["smtpd_tls_ask_ccert"] == options["smtpd_tls_req_ccert"] == "yes"
    assert options["smtpd_tls_CAfile"] == "/pki/client-ca.pem"
    assert options["smtpd_tls_security_level"] == "encrypt"  # req_ccert is ignored below "encrypt"
    assert "smtpd_tls_req_ccert" not in opts(config, 10001)
    with pytest.raises(ValueError, match="client_ca_file"):
        rendered(cell("smtps", Mode.IMPLICIT, auth=MTLS), client_ca_file=None)


# --------------------------------------------------------------------------- auth


def test_default_auth_only_after_tls_and_required_to_send() -> None:
    options = opts(rendered(cell()), 10000)
    assert options["smtpd_sasl_auth_enable"] == "yes"
    assert options["smtpd_tls_auth_only"] == "yes"
    assert options["smtpd_sasl_mechanism_filter"] == "plain,login"
    # MAIL itself is refused (delay_reject=no) with 530 unless authenticated.
    assert options["smtpd_delay_reject"] == "no"
    restrictions = options["smtpd_sender_restrictions"].split(",")
    assert restrictions[0] == "permit_sasl_authenticated"
    assert restrictions[1:] == ["check_client_access", "regexp:/etc/postfix/auth-required.regexp"]
    assert rendered(cell()).files["postfix/auth-required.regexp"] == "/^/ 530 5.7.0 Authentication required\n"
    assert "mynetworks" not in options


def test_cleartext_auth_is_offered_before_tls() -> None:
    options = opts(rendered(cell("submission", Mode.PLAIN, auth=CLEARTEXT)), 10000)
    assert options["smtpd_sasl_auth_enable"] == "yes"
    assert options["smtpd_tls_auth_only"] == "no"


def test_tls_only_auth_on_a_plain_port_is_never_offered() -> None:
    options = opts(rendered(cell("submission", Mode.PLAIN)), 10000)
    assert options["smtpd_tls_auth_only"] == "yes"  # there is no TLS, so there is no AUTH


def test_open_cell_has_no_auth_and_takes_mail_from_anyone() -> None:
    options = opts(rendered(cell("smtp", Mode.STARTTLS, auth=OPEN)), 10000)
    assert options["smtpd_sasl_auth_enable"] == "no"
    assert options["mynetworks"] == "0.0.0.0/0"
    assert "smtpd_sender_restrictions" not in options
    assert main_cf(rendered(cell()))["mynetworks"] == "127.0.0.1/32"  # not the gateway, not the relay (127.0.0.2)


def test_mechanism_filter_follows_the_policy() -> None:
    cram = AuthPolicy("cram", ("CRAM-MD5",))
    assert opts(rendered(cell(auth=cram)), 10000)["smtpd_sasl_mechanism_filter"] == "cram-md5"


def test_sasl_user_files() -> None:
    files = rendered(cell(), password="p:a ss").files
    assert (files["sasl-user"], files["sasl-realm"], files["sasl-password"]) == ("tester", "mailtls.test", "p:a ss")
    bare = rendered(cell(), username="tester").files
    assert (bare["sasl-user"], bare["sasl-realm"]) == ("tester", LOCAL_REALM)
    assert main_cf(rendered(cell()))["smtpd_sasl_local_domain"] == LOCAL_REALM
    assert "mech_list: PLAIN LOGIN CRAM-MD5" in files["sasl/smtpd.conf"].splitlines()


@pytest.mark.parametrize("username", ["", "two words", "a:b", "a@b@c", "quote'd"])
def test_unusable_user_names_are_refused(username: str) -> None:
    with pytest.raises(ValueError, match="user name"):
        rendered(cell(), username=username)


def test_multiline_password_is_refused() -> None:
    with pytest.raises(ValueError, match="password"):
        rendered(cell(), password="a\nb")


# --------------------------------------------------------------------------- what Postfix cannot serve


def test_unsupported_cells_say_why() -> None:
    legacy = TLSPolicy("legacy", "TLSv1", "TLSv1.3", ciphers="ALL:@SECLEVEL=0")
    legacy_mtls = cell("smtps", Mode.IMPLICIT, policy=legacy, auth=MTLS)
    reason = unsupported_reason(legacy_mtls)
    assert reason is not None and "security level" in reason and "TLSv1" in reason
    assert unsupported_reason(cell("smtps", Mode.IMPLICIT, auth=MTLS)) is None  # the twin without legacy

    may_mtls = unsupported_reason(cell("submission", Mode.STARTTLS, auth=MTLS))
    assert may_mtls is not None and "starttls-required" in may_mtls
    oauth = unsupported_reason(cell(auth=AuthPolicy("oauth", ("XOAUTH2",))))
    assert oauth is not None and "XOAUTH2" in oauth
    imap = Cell("postfix", SERVICES["imap"], Mode.STARTTLS, INTERMEDIATE, CertProfile.VALID)
    assert "SMTP only" in (unsupported_reason(imap) or "")
    with pytest.raises(ValueError, match="security level"):
        rendered(legacy_mtls)


def test_backend_refuses_other_servers_cells() -> None:
    dovecot = Cell("dovecot", SERVICES["imap"], Mode.STARTTLS, INTERMEDIATE, CertProfile.VALID)
    assert "postfix cells" in (PostfixBackend().unsupported(dovecot) or "")
    assert all(PostfixBackend().unsupported(c) is None for c in load_matrix().cells(servers=["postfix"]))


def test_bad_arguments() -> None:
    a = cell()
    with pytest.raises(ValueError, match="ports"):
        render([a], ports=[], cert_files=CERTS, client_ca_file=None, username="u", password="p")
    with pytest.raises(ValueError, match="distinct"):
        render([a, cell("smtps", Mode.IMPLICIT)], ports=[1, 1], cert_files=CERTS, client_ca_file=None,
               username="u", password="p")  # fmt: skip
    with pytest.raises(ValueError, match="twice"):
        rendered(a, a)


# --------------------------------------------------------------------------- logs


LOG = """\
Nov 22 05:00:00 mail postfix/master[1]: daemon started -- version 3.7.11
Nov 22 05:00:01 mail postfix/postfix-a/smtpd[20]: connect from unknown[172.17.0.1]
Nov 22 05:00:01 mail postfix/postfix-a-mtls/smtpd[21]: connect from unknown[172.17.0.1]
Nov 22 05:00:01 mail postfix/postfix-a/smtpd[20]: 4F1A2B3C4D: client=unknown[172.17.0.1]
Nov 22 05:00:01 mail postfix/postfix-a-mtls/smtpd[21]: NOQUEUE: reject: MAIL from unknown: 530 5.7.0 x
Nov 22 05:00:01 mail postfix/postfix-a-mtls/smtpd[21]: warning: unknown[172.17.0.1]: SASL LOGIN failed
Nov 22 05:00:01 mail postfix/postfix-a/cleanup[30]: 4F1A2B3C4D: message-id=<x@y>
Nov 22 05:00:01 mail postfix/qmgr[9]: 4F1A2B3C4D: from=<a@b>, size=300, nrcpt=1 (queue active)
Nov 22 05:00:01 mail postfix/qmgr[9]: 5E0000000A: from=<c@d>, size=300, nrcpt=1 (queue active)
Nov 22 05:00:01 mail postfix/virtual[31]: 4F1A2B3C4D: to=<postfix-a@capture>, orig_to=<x@y>, status=sent
Nov 22 05:00:01 mail postfix/virtual[31]: 5E0000000A: to=<postfix-a-mtls@capture>, status=sent
"""


def test_cell_log_lines_hold_the_cell_and_its_messages_only() -> None:
    lines = cell_log_lines(LOG, "postfix/postfix-a")
    assert len(lines) == 5  # connect, client=, cleanup, qmgr and the delivery
    assert all("postfix-a-mtls" not in line and "5E0000000A" not in line for line in lines)
    assert any("status=sent" in line for line in lines)
    other = cell_log_lines(LOG, "postfix/postfix-a-mtls")
    assert len(other) == 3  # NOQUEUE and warning lines are its own, and name no queue id to follow
    assert cell_log_lines(LOG, "postfix/postfix-b") == []


def test_weak_policies_render_their_suites_null_at_level_zero() -> None:
    static = TLSPolicy("static-rsa-cbc", "TLSv1.2", "TLSv1.2", ciphers="AES128-SHA:AES256-SHA")
    null = TLSPolicy("null-cipher", "TLSv1.2", "TLSv1.2", ciphers="NULL-SHA256:NULL-SHA")
    config = rendered(cell(policy=static), cell("smtps", Mode.IMPLICIT, policy=null))
    first, second = opts(config, 10000), opts(config, 10001)
    assert first["tls_high_cipherlist"] == "AES128-SHA:AES256-SHA"
    assert second["tls_high_cipherlist"] == "NULL-SHA256:NULL-SHA:@SECLEVEL=0"
    assert second["smtpd_tls_mandatory_ciphers"] == "high"
    assert second["smtpd_tls_mandatory_protocols"] == ">=TLSv1.2,<=TLSv1.2"


def test_a_small_dh_group_is_this_listener_own_parameter_file() -> None:
    small = TLSPolicy(
        "dhe-1024", "TLSv1.2", "TLSv1.2", ciphers="DHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES256-GCM-SHA384", dh_bits=1024
    )
    config = rendered(cell(policy=small), cell("smtps", Mode.IMPLICIT))
    first, second = opts(config, 10000), opts(config, 10001)
    assert first["smtpd_tls_dh1024_param_file"] == "/mailtls/etc/dh/dh1024.pem"
    assert first["tls_high_cipherlist"] == "DHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES256-GCM-SHA384:@SECLEVEL=1"
    assert "smtpd_tls_dh1024_param_file" not in second  # the other listener keeps Postfix's own choice
    assert config.files["dh/dh1024.pem"].startswith("-----BEGIN DH PARAMETERS-----\n")
