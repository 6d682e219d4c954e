"""Diagnosis tables: client error texts and server log lines into failure classes, evidence and remedies.

The texts are the ones the clients and servers really print (collected from
real connections; tests/integration/test_certify.py makes each class happen
for real). Each table gets its positive rows and a text it must not claim.
"""

from __future__ import annotations

import pytest

from pytest_mailtls.diagnose import (
    CLIENT_TABLES,
    SERVER_TABLES,
    UNCLASSIFIED,
    Diagnosis,
    Finding,
    Rule,
    diagnose,
    remedy,
)
from pytest_mailtls.matrix import load_matrix
from pytest_mailtls.oracle import FAILURE_CLASSES, ClientProfile
from pytest_mailtls.policy import Cell

CELLS = {c.id: c for c in load_matrix().cells()}
JAVA = ClientProfile("jakarta-mail", family="java")
JAVA_TLS1 = ClientProfile(
    "jakarta-mail-tls1", family="java", versions=("TLSv1",), disabled_versions=("TLSv1", "TLSv1.1")
)
PYTHON = ClientProfile("python")

CLIENT_ROWS: list[tuple[str, str, str, str]] = [
    # (family, exception type, error text, class)
    ("python", "ssl.SSLCertVerificationError", "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: "
     "certificate has expired (_ssl.c:1006)", "certificate-expired"),
    ("python", "ssl.SSLCertVerificationError", "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: "
     "certificate is not yet valid (_ssl.c:1006)", "certificate-not-yet-valid"),
    ("python", "ssl.SSLCertVerificationError", "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: "
     "Hostname mismatch, certificate is not valid for 'localhost'. (_ssl.c:1006)", "hostname-mismatch"),
    ("python", "ssl.SSLCertVerificationError", "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: "
     "self-signed certificate (_ssl.c:1006)", "untrusted-certificate"),
    ("python", "ssl.SSLCertVerificationError", "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: "
     "EE certificate key too weak (_ssl.c:1006)", "weak-key-or-signature"),
    ("python", "ssl.SSLCertVerificationError", "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: "
     "CA signature digest algorithm too weak (_ssl.c:1006)", "weak-key-or-signature"),
    ("python", "ssl.SSLError", "[SSL: TLSV1_ALERT_PROTOCOL_VERSION] tlsv1 alert protocol version (_ssl.c:1006)",
     "protocol-version-mismatch"),
    ("python", "ssl.SSLError", "[SSL: NO_CIPHERS_AVAILABLE] no ciphers available (_ssl.c:1006)", "no-shared-cipher"),
    ("python", "smtplib.SMTPServerDisconnected", "Connection unexpectedly closed: [SSL: "
     "TLSV13_ALERT_CERTIFICATE_REQUIRED] tlsv13 alert certificate required (_ssl.c:2580)",
     "client-certificate-required"),
    ("python", "ssl.SSLError", "[SSL: WRONG_VERSION_NUMBER] wrong version number (_ssl.c:1006)", "wrong-tls-mode"),
    ("python", "pytest_mailtls.connect.ProtocolError", "the server answered with TLS where plaintext was expected: "
     "it speaks implicit TLS", "wrong-tls-mode"),
    ("python", "smtplib.SMTPNotSupportedError", "STARTTLS extension not supported by server.",
     "starttls-not-offered"),
    ("python", "imaplib.IMAP4.abort", "TLS not supported by server", "starttls-not-offered"),
    ("python", "poplib.error_proto", "-ERR STLS not supported by server", "starttls-not-offered"),
    ("python", "smtplib.SMTPAuthenticationError", "(535, b'5.7.8 Authentication credentials invalid')",
     "auth-failed"),
    ("python", "imaplib.IMAP4.error", "b'[AUTHENTICATIONFAILED] Authentication failed.'", "auth-failed"),
    ("python", "smtplib.SMTPSenderRefused", "(530, b'5.7.0 Must issue a STARTTLS command first', "
     "'tester@mailtls.test')", "starttls-required"),
    ("python", "imaplib.IMAP4.error", "b'[PRIVACYREQUIRED] Plaintext authentication disallowed on non-secure "
     "(SSL/TLS) connections.'", "starttls-required"),
    ("java", "jakarta.mail.MessagingException", "Could not convert socket to TLS\ncaused by "
     "javax.net.ssl.SSLHandshakeException: No appropriate protocol (protocol is disabled or cipher suites are "
     "inappropriate)", "protocol-version-mismatch"),
    ("java", "jakarta.mail.MessagingException", "Could not connect to SMTP host: localhost, port: 465\ncaused by "
     "javax.net.ssl.SSLHandshakeException: Received fatal alert: protocol_version", "protocol-version-mismatch"),
    ("java", "jakarta.mail.MessagingException", "Could not connect\ncaused by javax.net.ssl.SSLHandshakeException: "
     "PKIX path validation failed: java.security.cert.CertPathValidatorException: validity check failed\n"
     "caused by java.security.cert.CertificateExpiredException: NotAfter: Sat Nov 21 05:46:32 UTC 2026",
     "certificate-expired"),
    ("java", "jakarta.mail.MessagingException", "caused by java.security.cert.CertificateNotYetValidException: "
     "NotBefore: Tue Dec 22 05:46:35 UTC 2026", "certificate-not-yet-valid"),
    ("java", "jakarta.mail.MessagingException", "caused by javax.net.ssl.SSLHandshakeException: No subject "
     "alternative DNS name matching localhost found.", "hostname-mismatch"),
    ("java", "jakarta.mail.MessagingException", "caused by javax.net.ssl.SSLHandshakeException: PKIX path building "
     "failed: unable to find valid certification path to requested target", "untrusted-certificate"),
    ("java", "jakarta.mail.MessagingException", "Exception reading response\ncaused by "
     "javax.net.ssl.SSLHandshakeException: Received fatal alert: certificate_required",
     "client-certificate-required"),
    ("java", "jakarta.mail.MessagingException", "caused by javax.net.ssl.SSLException: Unsupported or "
     "unrecognized SSL message", "wrong-tls-mode"),
    ("java", "jakarta.mail.AuthenticationFailedException", "535 5.7.8 Error: authentication failed: "
     "authentication failure", "auth-failed"),
    ("java", "jakarta.mail.MessagingException", "STARTTLS is required but host does not support STARTTLS",
     "starttls-not-offered"),
    ("java", "jakarta.mail.MessagingException", "caused by javax.net.ssl.SSLHandshakeException: Received fatal "
     "alert: illegal_parameter", "protocol-version-mismatch"),
    ("curl", "", "curl: (60) SSL certificate problem: certificate has expired", "certificate-expired"),
    ("curl", "", "curl: (60) SSL: no alternative certificate subject name matches target host name 'localhost'",
     "hostname-mismatch"),
    ("curl", "", "curl: (35) OpenSSL/3.0.22: error:0A00042E:SSL routines::tlsv1 alert protocol version",
     "protocol-version-mismatch"),
    ("curl", "", "curl: (35) OpenSSL/3.0.22: error:0A00014D:SSL routines::legacy sigalg disallowed or unsupported",
     "protocol-version-mismatch"),
    ("curl", "", "curl: (56) OpenSSL SSL_read: OpenSSL/3.0.22: error:0A00045C:SSL routines::tlsv13 alert "
     "certificate required, errno 0", "client-certificate-required"),
    ("curl", "", "curl: (67) Login denied", "auth-failed"),
    ("curl", "", "curl: (64) STARTTLS not supported.", "starttls-not-offered"),
    ("curl", "", "curl: (35) OpenSSL/3.0.22: error:0A00010B:SSL routines::wrong version number", "wrong-tls-mode"),
    ("openssl", "", "Didn't find STARTTLS in server response, trying anyway...\n"
     "80CB:error:0A00010B:SSL routines:ssl3_get_record:wrong version number", "starttls-not-offered"),
    ("openssl", "", "depth=0 O = trustme\nverify error:num=10:certificate has expired\nnotAfter=Nov 21 05:43:51",
     "certificate-expired"),
    ("openssl", "", "verify error:num=62:hostname mismatch", "hostname-mismatch"),
    ("swaks", "", "*** Host did not advertise STARTTLS", "starttls-not-offered"),
    ("swaks", "", "<~* 535 5.7.8 Error: authentication failed: authentication failure", "auth-failed"),
    ("msmtp", "", "msmtp: TLS certificate verification failed: The certificate is NOT trusted. The certificate "
     "chain uses expired certificate.", "certificate-expired"),
    ("msmtp", "", "msmtp: TLS certificate verification failed: The certificate is NOT trusted. The name in the "
     "certificate does not match the expected.", "hostname-mismatch"),
    ("msmtp", "", "msmtp: TLS certificate verification failed: The certificate is NOT trusted. The certificate "
     "chain uses insecure algorithm.", "weak-key-or-signature"),
    ("msmtp", "", "msmtp: the server does not support TLS via the STARTTLS command", "starttls-not-offered"),
    ("msmtp", "", "msmtp: authentication failed (method PLAIN)", "auth-failed"),
]  # fmt: skip


@pytest.mark.parametrize(("family", "exc", "text", "cls"), CLIENT_ROWS, ids=lambda v: v if len(v) < 30 else None)
def test_client_texts(family: str, exc: str, text: str, cls: str) -> None:
    diagnosis = diagnose(text, family=family, exception_type=exc)
    assert diagnosis.failure_class == cls
    assert diagnosis.evidence and diagnosis.evidence[0].startswith("client: ")
    assert diagnosis.remedy


SERVER_ROWS: list[tuple[str, str, str]] = [
    ("postfix", "postfix/smtps/smtpd[88]: warning: TLS library problem: error:0A000102:SSL routines::unsupported "
     "protocol:../ssl/statem/statem_srvr.c:1657:", "protocol-version-mismatch"),
    ("postfix", "postfix/submission/smtpd[90]: warning: TLS library problem: error:0A0000C1:SSL routines::no shared "
     "cipher:../ssl/statem/statem_srvr.c:2220:", "no-shared-cipher"),
    ("postfix", "postfix/submission/smtpd[91]: warning: unknown[172.17.0.1]: SASL PLAIN authentication failed: "
     "authentication failure", "auth-failed"),
    ("postfix", "postfix/smtps/smtpd[92]: warning: TLS library problem: error:0A000415:SSL routines::sslv3 alert "
     "certificate expired:../ssl/record/rec_layer_s3.c:1586:SSL alert number 45", "certificate-expired"),
    ("postfix", "postfix/smtps/smtpd[93]: warning: TLS library problem: error:0A0000C7:SSL routines::peer did not "
     "return a certificate", "client-certificate-required"),
    ("dovecot", "imap-login: Disconnected: Connection closed (no auth attempts in 0 secs): user=<>, rip=172.17.0.1, "
     "TLS handshaking: SSL_accept() failed: error:0A000102:SSL routines::unsupported protocol",
     "protocol-version-mismatch"),
    ("dovecot", "imap-login: Disconnected: Connection closed (auth failed, 1 attempts in 2 secs): user=<tester>",
     "auth-failed"),
    ("dovecot", "pop3-login: Disconnected (tried to use disallowed plaintext auth): user=<>", "starttls-required"),
    ("dovecot", "imap-login: Disconnected: Client didn't present valid SSL certificate", "client-certificate-required"),
    ("james", "javax.net.ssl.SSLHandshakeException: Client requested protocol TLSv1 is not enabled or supported in "
     "server context", "protocol-version-mismatch"),
    ("james", "javax.net.ssl.SSLHandshakeException: no cipher suites in common", "no-shared-cipher"),
    ("james", "javax.net.ssl.SSLHandshakeException: Empty client certificate chain", "client-certificate-required"),
    ("embedded", "embedded/smtps[x]: SSL_accept error from 127.0.0.1:5: [SSL: PEER_DID_NOT_RETURN_A_CERTIFICATE] "
     "peer did not return a certificate", "client-certificate-required"),
    ("embedded", "embedded/submission[x]: AUTH PLAIN failed for 'tester@mailtls.test' from 127.0.0.1:5: "
     "authentication failed", "auth-failed"),
]  # fmt: skip


@pytest.mark.parametrize(("server", "line", "cls"), SERVER_ROWS)
def test_server_lines_decide_when_the_client_says_little(server: str, line: str, cls: str) -> None:
    # The client only saw the connection go away; the server's own words carry the class.
    diagnosis = diagnose(
        "java.net.SocketException: Connection reset by peer", family="java", server=server, server_lines=[line]
    )
    assert diagnosis.failure_class == cls
    assert any(e.startswith("server: ") for e in diagnosis.evidence)


def test_server_tables_are_read_only_for_their_server() -> None:
    line = "warning: unknown[172.17.0.1]: SASL PLAIN authentication failed: authentication failure"
    assert diagnose("closed", server="postfix", server_lines=[line]).failure_class == "auth-failed"
    assert diagnose("closed", server=None, server_lines=[line]).failure_class == UNCLASSIFIED


def test_handshake_failure_is_decided_by_the_server_log() -> None:
    text = "[SSL: SSLV3_ALERT_HANDSHAKE_FAILURE] sslv3 alert handshake failure (_ssl.c:1006)"
    cipher = diagnose(text, family="python", server="embedded", server_lines=["SSL_accept error: no shared cipher"])
    assert cipher.failure_class == "no-shared-cipher"
    cert = diagnose(
        text, family="python", server="embedded", server_lines=["SSL_accept error: peer did not return a certificate"]
    )
    assert cert.failure_class == "client-certificate-required"


def test_untrusted_versus_incomplete_chain_needs_a_tie_breaker() -> None:
    text = "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: unable to get local issuer certificate"
    plain = diagnose(text, family="python")
    assert plain.failure_class == "untrusted-certificate"
    assert set(plain.candidates[:2]) == {"untrusted-certificate", "incomplete-chain"}
    chain = diagnose(text, family="python", expected="incomplete-chain")
    assert chain.failure_class == "incomplete-chain"
    assert any("also fits untrusted-certificate" in e for e in chain.evidence)
    # The tie-breaker never overrides evidence: an expired certificate stays expired.
    expired = "certificate verify failed: certificate has expired"
    assert diagnose(expired, family="python", expected="incomplete-chain").failure_class == "certificate-expired"


def test_wrong_tls_mode_from_context() -> None:
    implicit = CELLS["postfix-smtps-implicit-intermediate-valid"]
    starttls = CELLS["postfix-submission-starttls-intermediate-valid"]
    text = "timed out: timed out"
    assert diagnose(text, family="python", cell=implicit, tls=False).failure_class == "wrong-tls-mode"
    assert diagnose(text, family="python", cell=starttls, tls=False).failure_class == UNCLASSIFIED
    assert diagnose(text, family="python", cell=implicit, tls=True).failure_class == UNCLASSIFIED


def test_unknown_text_is_unclassified_with_its_evidence() -> None:
    d = diagnose("something odd happened\nand more", family="python", server="postfix", server_lines=["a line"])
    assert d.failure_class == UNCLASSIFIED
    assert d.evidence == ["client: something odd happened", "server: a line"]
    assert Diagnosis.from_json(d.to_json()) == Diagnosis(d.failure_class, d.evidence, d.remedy)


def test_every_class_has_rules_and_a_remedy() -> None:
    for cls in FAILURE_CLASSES:
        assert any(cls in rule.classes for table in CLIENT_TABLES.values() for rule in table), cls
        assert remedy(cls) and "No known pattern" not in remedy(cls), cls
    for table in (*CLIENT_TABLES.values(), *SERVER_TABLES.values()):
        assert all(isinstance(rule, Rule) for rule in table)


def test_rules_refuse_unknown_classes() -> None:
    import re

    with pytest.raises(ValueError, match="unknown class"):
        Rule(re.compile("x"), ("no-such-class",), 3)


# --- remedies ---------------------------------------------------------------------------


def _cell(cell_id: str) -> Cell:
    return CELLS[cell_id]


def test_remedy_for_the_classic_java_tls1_failure() -> None:
    text = remedy(
        "protocol-version-mismatch", cell=_cell("postfix-smtps-implicit-intermediate-valid"), profile=JAVA_TLS1
    )
    assert 'mail.smtp.ssl.protocols="TLSv1.2 TLSv1.3"' in text
    assert "JDK 17" in text and "javax.mail 1.4.5" in text
    # The same class on a legacy-only server puts the fix on the server.
    old = remedy("protocol-version-mismatch", cell=_cell("postfix-smtps-implicit-tls10-only-valid"), profile=PYTHON)
    assert "smtpd_tls_mandatory_protocols" in old and "refusing it is right" in old


def test_remedies_speak_the_client_and_the_server() -> None:
    imap = _cell("dovecot-imap-starttls-intermediate-valid")
    assert "mail.imap.starttls.enable=true" in remedy("starttls-required", cell=imap, profile=JAVA)
    curl = ClientProfile("curl", family="curl")
    assert "--resolve" in remedy("hostname-mismatch", cell=imap, profile=curl)
    chain = remedy("incomplete-chain", cell=_cell("dovecot-imaps-implicit-intermediate-missing-intermediate"))
    assert "ssl_cert" in chain
    implicit = remedy("wrong-tls-mode", cell=_cell("postfix-smtps-implicit-intermediate-valid"), profile=JAVA)
    assert "mail.smtp.ssl.enable=true" in implicit
    starttls = remedy("wrong-tls-mode", cell=_cell("postfix-submission-starttls-intermediate-valid"), profile=JAVA)
    assert "mail.smtp.ssl.enable=false" in starttls
    cipher = remedy("no-shared-cipher", cell=_cell("postfix-smtps-implicit-tls12-single-cipher-valid"), profile=PYTHON)
    assert "refusing it is right" in cipher


def test_a_hang_up_is_ambiguous_until_a_probe_speaks() -> None:
    text = "[SSL: UNEXPECTED_EOF_WHILE_READING] EOF occurred in violation of protocol (_ssl.c:1006)"
    vague = diagnose(text, family="python")
    assert vague.ambiguous and set(vague.candidates) >= {"protocol-version-mismatch", "no-shared-cipher"}
    probe = Finding(
        "the server completes handshakes at TLSv1; the client offers TLSv1.2 TLSv1.3", ("no-shared-cipher",)
    )
    settled = diagnose(text, family="python", findings=[probe])
    assert settled.failure_class == "no-shared-cipher" and not settled.ambiguous
    assert f"probe: {probe.line}" in settled.evidence
    clear = diagnose("certificate verify failed: certificate has expired", family="python")
    assert not clear.ambiguous
