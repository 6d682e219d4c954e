"""Diagnosis tables: client error texts and server log lines into failure classes, evidence and remedies.

The texts are the ones the clients and servers really print (collected from
real connections; tests/integration/test_certify.py makes each class happen
for real). Each table gets its positive rows and a text it must not claim.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from pytest_mailtls.clients.families import KNOBS, REQUIRED_KNOBS, client_family, family_names
from pytest_mailtls.diagnose import (
    UNCLASSIFIED,
    WIRE,
    Diagnosis,
    Finding,
    Rule,
    client_tables,
    diagnose,
    remedy,
    server_tables,
)
from pytest_mailtls.matrix import load_matrix
from pytest_mailtls.oracle import FAILURE_CLASSES, ClientProfile
from pytest_mailtls.policy import Cell
from pytest_mailtls.wire.judge import WireView
from pytest_mailtls.wire.judge import findings as wire_facts
from pytest_mailtls.wire.session import Session

CELLS = {c.id: c for c in load_matrix().cells()}
STARTTLS_CELL = CELLS["postfix-submission-starttls-intermediate-valid"]
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
    ("python", "ssl.SSLError", "[SSL: DH_KEY_TOO_SMALL] dh key too small (_ssl.c:1006)", "weak-dh"),
    ("curl", "", "curl: (35) OpenSSL/3.0.22: error:0A00018A:SSL routines::dh key too small", "weak-dh"),
    ("openssl", "", "40B752534D7F0000:error:0A00018A:SSL routines:tls_process_ske_dhe:dh key too small:"
     "../ssl/statem/statem_clnt.c:2092:", "weak-dh"),
    ("java", "javax.net.ssl.SSLHandshakeException", "javax.net.ssl.SSLHandshakeException: (insufficient_security) "
     "DH ServerKeyExchange does not comply to algorithm constraints", "weak-dh"),
    ("gnutls", "", "*** Fatal error: The Diffie-Hellman prime sent by the server is not acceptable (not long "
     "enough).", "weak-dh"),
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
        assert any(cls in rule.classes for table in client_tables().values() for rule in table), cls
        assert remedy(cls) and "No known pattern" not in remedy(cls), cls
    for table in (*client_tables().values(), *server_tables().values()):
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


# --- the libraries people use ----------------------------------------------------------------
# Texts as the libraries print them: Go's crypto/x509 verify.go and crypto/tls alert.go, Node's tls module
# (OpenSSL's X509 verify strings with Node's codes), rustls' Error/CertificateError Display, .NET's
# System.Net.Security resources, lettre, nodemailer, GnuTLS.

GO_BEFORE = (
    "tls: failed to verify certificate: x509: certificate has expired or is not yet valid: current time "
    "2026-12-04T17:40:00Z is before 2027-01-03T17:40:00Z"
)
GO_AFTER = (
    "tls: failed to verify certificate: x509: certificate has expired or is not yet valid: current time "
    "2026-12-04T17:40:00Z is after 2026-12-03T17:40:00Z"
)
GO_UNKNOWN = "tls: failed to verify certificate: x509: certificate signed by unknown authority"
NODE_ALTNAMES = (
    "Error [ERR_TLS_CERT_ALTNAME_INVALID]: Hostname/IP does not match certificate's altnames: Host: localhost. "
    "is not in the cert's altnames: DNS:wrong-host.mailtls.invalid"
)

LIBRARY_ROWS: list[tuple[str, str, str, str]] = [
    # Go
    ("go", "", GO_AFTER, "certificate-expired"),
    ("go", "", GO_BEFORE, "certificate-not-yet-valid"),
    ("go", "", "tls: failed to verify certificate: x509: certificate is valid for wrong-host.mailtls.invalid, not "
     "localhost", "hostname-mismatch"),
    ("go", "", "tls: failed to verify certificate: x509: certificate relies on legacy Common Name field, use SANs "
     "instead", "hostname-mismatch"),
    ("go", "", "tls: failed to verify certificate: x509: cannot verify signature: insecure algorithm SHA1-RSA "
     "(temporarily override with GODEBUG=x509sha1=1)", "weak-key-or-signature"),
    ("go", "", "tls: unsupported certificate", "weak-key-or-signature"),
    ("go", "", "tls: server selected unsupported protocol version 301", "protocol-version-mismatch"),
    ("go", "", "remote error: tls: protocol version not supported", "protocol-version-mismatch"),
    ("go", "", "tls: first record does not look like a TLS handshake", "wrong-tls-mode"),
    ("go", "", "remote error: tls: certificate required", "client-certificate-required"),
    ("go", "", "535 5.7.8 Error: authentication failed: authentication failure", "auth-failed"),
    ("go", "", "502 5.5.1 Error: command not implemented", "starttls-not-offered"),
    # Node and nodemailer
    ("node", "", NODE_ALTNAMES, "hostname-mismatch"),
    ("node", "", "Error: certificate has expired\n  code: 'CERT_HAS_EXPIRED'", "certificate-expired"),
    ("node", "", "Error: certificate is not yet valid\n  code: 'CERT_NOT_YET_VALID'", "certificate-not-yet-valid"),
    ("node", "", "Error: self-signed certificate\n  code: 'DEPTH_ZERO_SELF_SIGNED_CERT'", "untrusted-certificate"),
    ("node", "", "Error: self signed certificate in certificate chain\n  code: 'SELF_SIGNED_CERT_IN_CHAIN'",
     "untrusted-certificate"),
    ("node", "", "Error: 40C7A8E1F67F0000:error:0A00010B:SSL routines:ssl3_get_record:wrong version number:"
     "../deps/openssl/openssl/ssl/record/ssl3_record.c:355:\n  code: 'ERR_SSL_WRONG_VERSION_NUMBER'",
     "wrong-tls-mode"),
    ("node", "", "Error: 40C7A8E1F67F0000:error:0A000102:SSL routines:ssl_choose_client_version:unsupported "
     "protocol\n  code: 'ERR_SSL_UNSUPPORTED_PROTOCOL'", "protocol-version-mismatch"),
    ("node", "", "Error: Invalid login: 535 5.7.8 Error: authentication failed: authentication failure\n"
     "  code: 'EAUTH', responseCode: 535", "auth-failed"),
    # rustls and lettre
    ("rust", "", "invalid peer certificate: NotValidForName", "hostname-mismatch"),
    ("rust", "", "invalid peer certificate: certificate not valid for name \"localhost\"; certificate is only "
     "valid for DnsName(\"wrong-host.mailtls.invalid\")", "hostname-mismatch"),
    ("rust", "", "invalid peer certificate: Expired", "certificate-expired"),
    ("rust", "", "invalid peer certificate: certificate expired: verification time 1764870000 (UNIX), but "
     "certificate is not valid after 1764783600 (86400 seconds ago)", "certificate-expired"),
    ("rust", "", "invalid peer certificate: NotValidYet", "certificate-not-yet-valid"),
    ("rust", "", "invalid peer certificate: UnsupportedSignatureAlgorithm", "weak-key-or-signature"),
    ("rust", "", "peer is incompatible: ServerDoesNotSupportTls12Or13", "protocol-version-mismatch"),
    ("rust", "", "received fatal alert: ProtocolVersion", "protocol-version-mismatch"),
    ("rust", "", "received fatal alert: CertificateRequired", "client-certificate-required"),
    ("rust", "", "Connection error: STARTTLS is not supported on this server", "starttls-not-offered"),
    ("rust", "", "permanent error (535): 5.7.8 Error: authentication failed: authentication failure", "auth-failed"),
    # .NET SslStream / MailKit
    ("dotnet", "System.Security.Authentication.AuthenticationException", "The remote certificate is invalid "
     "according to the validation procedure: RemoteCertificateNameMismatch", "hostname-mismatch"),
    ("dotnet", "System.Security.Authentication.AuthenticationException", "The remote certificate is invalid "
     "because of errors in the certificate chain: UntrustedRoot", "untrusted-certificate"),
    ("dotnet", "System.Security.Authentication.AuthenticationException", "Authentication failed because the "
     "remote party sent a TLS alert: 'ProtocolVersion'.", "protocol-version-mismatch"),
    ("dotnet", "System.ComponentModel.Win32Exception", "The client and server can't communicate, because they do "
     "not possess a common algorithm", "protocol-version-mismatch"),
    ("dotnet", "System.IO.IOException", "Cannot determine the frame size or a corrupted frame was received.",
     "wrong-tls-mode"),
    ("dotnet", "MailKit.Security.AuthenticationException", "535: 5.7.8 Error: authentication failed: "
     "authentication failure", "auth-failed"),
    # GnuTLS (gnutls-cli)
    ("gnutls", "", "*** Received alert [70]: Error in protocol version", "protocol-version-mismatch"),
    ("gnutls", "", "- Status: The certificate is NOT trusted. The certificate chain uses not yet valid "
     "certificate.", "certificate-not-yet-valid"),
    # STARTTLS refusals in the words of many clients
    ("command", "", "STARTTLS is not supported on this server", "starttls-not-offered"),
    ("command", "", "SMTP Error: STARTTLS command failed", "starttls-not-offered"),
    ("command", "", "smtp: server does not support STARTTLS", "starttls-not-offered"),
    ("command", "", "STARTTLS extension not supported by server.", "starttls-not-offered"),
    ("command", "", "502 5.5.2 Error: command not recognized", "starttls-not-offered"),
    ("command", "", "454 4.7.0 TLS not available due to temporary reason", "starttls-not-offered"),
]  # fmt: skip


@pytest.mark.parametrize(("family", "exc", "text", "cls"), LIBRARY_ROWS, ids=lambda v: v if len(v) < 30 else None)
def test_library_texts(family: str, exc: str, text: str, cls: str) -> None:
    diagnosis = diagnose(text, family=family, exception_type=exc)
    assert diagnosis.failure_class == cls, diagnosis.evidence
    assert diagnosis.evidence[0].startswith("client: ")
    # The generic family reads every table and must come to the same class.
    assert diagnose(text, family="command", exception_type=exc).failure_class == cls


@pytest.mark.parametrize(
    ("family", "text"),
    [
        ("go", GO_UNKNOWN),
        ("node", "Error: unable to verify the first certificate\n  code: 'UNABLE_TO_VERIFY_LEAF_SIGNATURE'"),
        ("node", "Error: unable to get local issuer certificate\n  code: 'UNABLE_TO_GET_ISSUER_CERT_LOCALLY'"),
        ("rust", "invalid peer certificate: UnknownIssuer"),
        ("dotnet", "The remote certificate is invalid because of errors in the certificate chain: PartialChain"),
    ],
)
def test_unknown_issuer_texts_leave_the_chain_classes_to_the_cell(family: str, text: str) -> None:
    for expected in ("untrusted-certificate", "incomplete-chain"):
        d = diagnose(text, family=family, expected=expected)
        assert d.failure_class == expected and set(d.tied) == {"untrusted-certificate", "incomplete-chain"}
    # ... and never a host name, whatever the cell expects.
    assert diagnose(text, family=family, expected="hostname-mismatch").failure_class == "untrusted-certificate"


@pytest.mark.parametrize(
    ("family", "text"),
    [
        ("go", "x509: certificate has expired or is not yet valid"),
        ("dotnet", "The remote certificate is invalid because of errors in the certificate chain: NotTimeValid"),
    ],
)
def test_texts_that_do_not_say_which_date(family: str, text: str) -> None:
    for expected in ("certificate-expired", "certificate-not-yet-valid"):
        assert diagnose(text, family=family, expected=expected).failure_class == expected


# --- issue 9: each wrong class, as a regression test -------------------------------------------

POSTFIX_BAD_CERT = (
    "postfix/smtps/smtpd[120]: warning: TLS library problem: error:0A000412:SSL routines::sslv3 alert bad "
    "certificate:../ssl/record/rec_layer_s3.c:1586:SSL alert number 42"
)
DOVECOT_BAD_CERT = (
    "imap-login: Disconnected: Connection closed (no auth attempts in 0 secs): user=<>, rip=172.17.0.1, TLS "
    "handshaking: SSL_accept() failed: error:0A000412:SSL routines::sslv3 alert bad certificate: SSL alert number 42"
)


@pytest.mark.parametrize("family", ["go", "command"])
def test_go_not_yet_valid_is_not_expired(family: str) -> None:
    cell = CELLS["postfix-smtps-implicit-intermediate-not-yet-valid"]
    d = diagnose(GO_BEFORE, family=family, cell=cell, expected="certificate-not-yet-valid")
    assert d.failure_class == "certificate-not-yet-valid" and not d.ambiguous
    # Even a cell that expected "expired" cannot turn Go's "is before" into it.
    assert diagnose(GO_BEFORE, family=family, expected="certificate-expired").failure_class == (
        "certificate-not-yet-valid"
    )
    assert diagnose(GO_AFTER, family=family, expected="certificate-not-yet-valid").failure_class == (
        "certificate-expired"
    )


@pytest.mark.parametrize(("server", "line"), [("postfix", POSTFIX_BAD_CERT), ("dovecot", DOVECOT_BAD_CERT)])
@pytest.mark.parametrize("family", ["go", "command"])
def test_go_unknown_authority_is_never_hostname_mismatch(server: str, line: str, family: str) -> None:
    for expected in (None, "untrusted-certificate", "hostname-mismatch"):
        d = diagnose(GO_UNKNOWN, family=family, server=server, server_lines=[line], expected=expected)
        assert d.failure_class == "untrusted-certificate", d.evidence
        assert d.evidence[0] == f"client: {GO_UNKNOWN}"
    missing = diagnose(GO_UNKNOWN, family=family, server=server, server_lines=[line], expected="incomplete-chain")
    assert missing.failure_class == "incomplete-chain"


@pytest.mark.parametrize("family", ["node", "command"])
def test_node_altnames_is_hostname_mismatch(family: str) -> None:
    cell = CELLS["postfix-submission-starttls-intermediate-wrong-host"]
    probe = Finding("the server completes handshakes at TLSv1.2 TLSv1.3: the version is not the problem",
                    ("no-shared-cipher",), 1)  # fmt: skip
    for findings in ((), (probe,)):
        d = diagnose(NODE_ALTNAMES, family=family, cell=cell, expected="hostname-mismatch", findings=findings)
        assert d.failure_class == "hostname-mismatch" and not d.ambiguous


def _wire(cell: Cell, **fields: object) -> list[Finding]:
    """The wire facts of one recorded session with ``fields`` on ``cell`` (read by the recorder's judge)."""
    session = Session.model_validate(
        {"id": "t", "cell": cell.id, "protocol": str(cell.protocol), "client": "127.0.0.1:1", "opened": 0.0, **fields}
    )
    return wire_facts(WireView(cell, (session,)))


HELLO = {"legacy_version": "TLSv1.2", "versions": ["TLSv1.2", "TLSv1.3"], "versions_from": "supported_versions",
         "ciphers": ["ECDHE-RSA-AES128-GCM-SHA256"]}  # fmt: skip


def test_a_502_answer_to_starttls_is_starttls_not_offered() -> None:
    text = "starttls: 502 5.5.1 Error: command not implemented"
    for family in ("go", "command", "python"):
        assert diagnose(text, family=family).failure_class == "starttls-not-offered"
    session = {"starttls": {"command": "STARTTLS", "answer": "502 5.5.1 Error: command not implemented",
                            "accepted": False}}  # fmt: skip
    d = diagnose("exit status 1", wire=_wire(STARTTLS_CELL, **session), expected="untrusted-certificate")
    assert d.failure_class == "starttls-not-offered"
    assert d.evidence[0] == "wire: the server answered STARTTLS with '502 5.5.1 Error: command not implemented'"


JAMES_NOISE = [
    "INFO  SMTP session sessionId=0c535408 started from 127.0.0.1:53574",
    "INFO  Connection from /127.0.0.1:53574 closed (sessionId=0c535408)",
]


def test_reply_codes_are_codes_not_digits_in_ids_or_ports() -> None:
    openssl = "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: self-signed certificate (_ssl.c:1006)"
    for _ in range(20):  # the same answer every run
        d = diagnose(openssl, family="python", server="james", server_lines=JAMES_NOISE)
        assert d.failure_class == "untrusted-certificate" and not any("sessionId" in e for e in d.evidence)
    assert diagnose("closed", family="python", server="james", server_lines=JAMES_NOISE).failure_class == (UNCLASSIFIED)
    real = "SMTP AUTH failed for user tester: 535 5.7.8 Authentication credentials invalid"
    assert diagnose("closed", server="james", server_lines=[*JAMES_NOISE, real]).failure_class == "auth-failed"


def test_curl_tls_alert_numbers_are_not_reply_codes() -> None:
    # curl prints 512 + the alert number: handshake failure (40) is 552, bad certificate (42) is 554.
    curl = (
        "* TLSv1.3 (IN), TLS alert, handshake failure (552):\n"
        "* OpenSSL/3.0.22: error:0A000410:SSL routines::sslv3 alert handshake failure\n"
        "curl: (35) OpenSSL/3.0.22: error:0A000410:SSL routines::sslv3 alert handshake failure"
    )
    cell = CELLS["postfix-smtps-implicit-null-cipher-valid"]
    d = diagnose(curl, family="curl", cell=cell, expected="no-shared-cipher")
    assert d.failure_class == "no-shared-cipher", d.evidence
    # A reply code in parentheses still counts.
    assert diagnose("permanent error (552): 5.3.4 message too big", family="rust").failure_class == "server-refused"


ID_AND_PORT_LINES = [
    *JAMES_NOISE,
    "postfix/smtpd[535]: connect from localhost[127.0.0.1]:50254",
    "postfix/smtpd[77]: disconnect from unknown[172.17.0.1]:45354 ehlo=1 starttls=0/1 commands=1/2",
    "queue id 5020A1B2C3, port 4545, took 454ms, message-id=<502.535@mailtls.test>",
]


def test_no_rule_reads_a_code_inside_an_id_or_a_port() -> None:
    tables = {**{f"client {k}": v for k, v in client_tables().items()},
              **{f"server {k}": v for k, v in server_tables().items()}, "wire": WIRE}  # fmt: skip
    for name, table in tables.items():
        for rule in table:
            for line in ID_AND_PORT_LINES:
                assert not rule.pattern.search(line), f"{name}: {rule.pattern.pattern!r} matched {line!r}"


@pytest.mark.parametrize("cell_id", ["postfix-smtps-implicit-intermediate-wrong-host",
                                     "postfix-smtps-implicit-intermediate-weak-rsa-1024"])  # fmt: skip
def test_a_silent_client_is_never_made_no_shared_cipher(cell_id: str) -> None:
    cell = CELLS[cell_id]
    expected = str(cell.cert.failure) if cell.cert and cell.cert.failure else None
    words = "Could not connect to SMTP host."
    probe = Finding("the server completes handshakes at TLSv1.2 TLSv1.3; the client offers TLSv1.2 TLSv1.3: the "
                    "version is not the problem", ("no-shared-cipher",), 1)  # fmt: skip
    alone = diagnose(words, family="java", cell=cell, expected=expected, findings=[probe])
    assert alone.failure_class == UNCLASSIFIED  # nothing says which class; a fallback does not invent one
    assert f"probe: {probe.line}" in alone.evidence
    # With a server line that narrows to certificate classes, the cell's expected class breaks the tie.
    hinted = diagnose(words, family="java", cell=cell, expected=expected, findings=[probe], server="postfix",
                      server_lines=["postfix/smtps/smtpd[9]: lost connection after STARTTLS from localhost"])  # fmt: skip
    assert hinted.failure_class == expected


def test_the_version_probe_never_overrides_a_text_about_certificates() -> None:
    text = "javax.net.ssl.SSLHandshakeException: the server's certificate was refused"
    probe = Finding("the version is not the problem", ("no-shared-cipher",), 1)
    d = diagnose(text, family="command", findings=[probe], expected="hostname-mismatch")
    assert d.failure_class == "hostname-mismatch"
    assert diagnose(text, family="command", findings=[probe]).failure_class != "no-shared-cipher"


def test_cipher_remedy_names_only_what_the_server_really_lacks() -> None:
    wrong_host = CELLS["postfix-smtps-implicit-intermediate-wrong-host"]
    text = remedy("no-shared-cipher", cell=wrong_host)
    assert "forward secrecy" not in text and "share no cipher" in text
    static_rsa = CELLS["postfix-smtps-implicit-tls12-single-cipher-valid"]
    text = remedy("no-shared-cipher", cell=static_rsa)
    assert "no forward secrecy" in text and "refusing it is right" in text
    offered = remedy("no-shared-cipher", cell=static_rsa, offered_ciphers=["TLS_AES_128_GCM_SHA256",
                                                                           "ECDHE-RSA-AES128-GCM-SHA256"])  # fmt: skip
    assert offered.startswith("the client offered TLS_AES_128_GCM_SHA256, ECDHE-RSA-AES128-GCM-SHA256; ")


# --- the order of the witnesses -------------------------------------------------------------------


def test_wire_beats_client() -> None:
    wire = [Finding("the client's first bytes on this implicit-TLS port were not a TLS record (plaintext)")]
    d = diagnose("certificate verify failed: certificate has expired", family="python", wire=wire)
    assert d.failure_class == "wrong-tls-mode" and d.decided_by == "wire"
    assert d.evidence[0].startswith("wire: ")
    assert any("the client evidence" in e and "contradicts the wire evidence" in e for e in d.evidence)


def test_client_beats_server() -> None:
    d = diagnose("certificate verify failed: certificate has expired", family="python", server="postfix",
                 server_lines=["warning: TLS library problem: error:0A0000C1:SSL routines::no shared cipher"])  # fmt: skip
    assert d.failure_class == "certificate-expired" and d.decided_by == "client"


def test_server_beats_probe() -> None:
    d = diagnose("EOF occurred in violation of protocol (_ssl.c:1006)", family="python", server="postfix",
                 server_lines=["warning: TLS library problem: error:0A0000C1:SSL routines::no shared cipher"],
                 findings=[Finding("no common version", ("protocol-version-mismatch",))])  # fmt: skip
    assert d.failure_class == "no-shared-cipher" and d.decided_by == "server"


def test_probe_beats_the_expected_class() -> None:
    d = diagnose("EOF occurred in violation of protocol (_ssl.c:1006)", family="python",
                 findings=[Finding("no common version", ("protocol-version-mismatch",))],
                 expected="no-shared-cipher")  # fmt: skip
    assert d.failure_class == "protocol-version-mismatch" and d.decided_by == "probe"


def test_context_rule_never_overrides_words() -> None:
    implicit = CELLS["postfix-smtps-implicit-intermediate-valid"]
    text = "Connection unexpectedly closed: certificate verify failed: certificate has expired"
    assert diagnose(text, family="python", cell=implicit, tls=False).failure_class == "certificate-expired"


def test_a_stronger_witness_narrows_a_weaker_one() -> None:
    # The client says "handshake failure" (cipher, client certificate or version); the wire saw a ServerHello,
    # so no cipher is missing; the server's log settles the rest.
    hello = _wire(
        CELLS["postfix-smtps-implicit-intermediate-valid"],
        client_hello=HELLO,
        server_hello={"version": "TLSv1.2", "cipher": "ECDHE-RSA-AES128-GCM-SHA256"},
        client_finished=True,
    )
    text = "[SSL: SSLV3_ALERT_HANDSHAKE_FAILURE] sslv3 alert handshake failure (_ssl.c:1006)"
    d = diagnose(text, family="python", wire=hello, expected="no-shared-cipher")
    assert d.failure_class != "no-shared-cipher" and set(d.tied) == {"client-certificate-required",
                                                                      "protocol-version-mismatch"}  # fmt: skip
    cert = diagnose(text, family="python", wire=hello, server="embedded",
                    server_lines=["SSL_accept error: peer did not return a certificate"])  # fmt: skip
    assert cert.failure_class == "client-certificate-required" and not cert.ambiguous


def test_same_inputs_same_class_in_every_process() -> None:
    # Hash randomisation changes set and dict-of-set orders between processes: the answers must not change.
    script = (
        "import json; from pytest_mailtls.diagnose import diagnose\n"
        "texts = ['EOF occurred in violation of protocol', 'alert handshake failure', 'certificate verify failed',"
        " 'x509: certificate signed by unknown authority', 'curl: (35) something', 'TLS startup failed',"
        " 'The remote certificate was rejected by the provided RemoteCertificateValidationCallback.']\n"
        "print(json.dumps([[diagnose(t, server='postfix', server_lines=['lost connection after STARTTLS']).to_json(),"
        " diagnose(t).candidates] for t in texts]))\n"
    )
    outputs = set()
    for seed in ("1", "2", "3"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True)
        outputs.add(done.stdout)
    assert len(outputs) == 1, outputs
    assert json.loads(outputs.pop())


# --- facts from the wire --------------------------------------------------------------------------


def test_wire_findings_from_a_session() -> None:
    cell = CELLS["postfix-smtps-implicit-intermediate-valid"]
    facts = _wire(
        cell,
        client_hello={
            **HELLO,
            "legacy_version": "TLSv1",
            "versions": ["TLSv1"],
            "versions_from": "legacy_version",
            "ciphers": ["AES128-SHA"],
        },
        alerts=[{"sender": "server", "level": "fatal", "description": "protocol_version", "encrypted": False}],
    )
    [fact] = facts
    assert fact.classes == ("protocol-version-mismatch",)
    assert "the client offered TLSv1" in fact.line and "alert protocol_version" in fact.line
    assert fact.line.endswith("no common version")
    d = diagnose("Could not connect to SMTP host: localhost, port: 465", family="java", cell=cell, wire=facts,
                 profile=JAVA, offered_versions=["TLSv1"])  # fmt: skip
    assert d.failure_class == "protocol-version-mismatch" and d.decided_by == "wire"
    assert d.remedy.startswith("the client offered only TLSv1; the server accepts TLSv1.2-TLSv1.3; ")
    assert 'mail.smtp.ssl.protocols="TLSv1.2 TLSv1.3"' in d.remedy and "javax.mail 1.4.x" in d.remedy


SERVER_HELLO = {"version": "TLSv1.2", "cipher": "ECDHE-RSA-AES128-GCM-SHA256"}


@pytest.mark.parametrize(
    ("cell_id", "session", "cls"),
    [
        ("postfix-smtps-implicit-intermediate-valid", {"not_tls": True, "first_client_bytes": "EHLO x"},
         "wrong-tls-mode"),
        ("dovecot-imap-starttls-intermediate-valid",
         {"starttls": {"command": "a1 STARTTLS", "answer": "a1 BAD TLS support isn't enabled.", "accepted": False}},
         "starttls-not-offered"),
        ("dovecot-pop3-starttls-intermediate-valid",
         {"starttls": {"command": "STLS", "answer": "-ERR TLS support isn't enabled.", "accepted": False}},
         "starttls-not-offered"),
        ("postfix-submission-starttls-intermediate-valid",
         {"credentials": ["AUTH PLAIN"],
          "auth_answers": ["535 5.7.8 Error: authentication failed: authentication failure"]}, "auth-failed"),
        ("dovecot-imap-starttls-intermediate-valid",
         {"rejections": ["a1 NO [PRIVACYREQUIRED] Plaintext authentication disallowed on non-secure (SSL/TLS) "
                         "connections."]}, "starttls-required"),
        ("postfix-smtps-implicit-intermediate-valid",
         {"client_hello": HELLO, "server_hello": SERVER_HELLO, "client_finished": True,
          "alerts": [{"sender": "server", "level": "fatal", "description": "certificate_required"}]},
         "client-certificate-required"),
        ("postfix-smtps-implicit-intermediate-expired",
         {"client_hello": HELLO, "server_hello": SERVER_HELLO,
          "alerts": [{"sender": "client", "level": "fatal", "description": "certificate_expired"}]},
         "certificate-expired"),
    ],
)  # fmt: skip
def test_wire_facts_classify(cell_id: str, session: dict[str, object], cls: str) -> None:
    d = diagnose("", wire=_wire(CELLS[cell_id], **session), expected=cls)
    assert d.failure_class == cls and d.evidence[0].startswith("wire: ")


def test_wire_facts_that_rule_classes_out() -> None:
    cell = CELLS["postfix-smtps-implicit-intermediate-valid"]
    done = _wire(cell, client_hello=HELLO, server_hello=SERVER_HELLO, client_finished=True, handshake_completed=True)
    d = diagnose("Connection reset by peer", family="java", wire=done, server="postfix",
                 server_lines=["warning: unknown[172.17.0.1]: SASL PLAIN authentication failed"])  # fmt: skip
    assert d.failure_class == "auth-failed"
    # An encrypted alert says nothing about its description: no class is drawn from it.
    quiet = _wire(cell, client_hello=HELLO, server_hello=SERVER_HELLO, client_finished=True, handshake_completed=True,
                  alerts=[{"sender": "server", "level": "unknown", "description": "encrypted", "encrypted": True}])  # fmt: skip
    assert all(f.classes == () for f in quiet)
    # A recorder's own sentence with no class is read with the WIRE table.
    assert diagnose("", wire=[Finding("client sent fatal alert unknown_ca")]).failure_class in (
        "untrusted-certificate",
        "incomplete-chain",
    )


# --- remedies in every family's own knobs ------------------------------------------------------


def test_every_family_has_every_knob() -> None:
    families = set(family_names())
    assert {"node", "go", "rust", "dotnet", "gnutls"} <= families
    assert families == set(client_tables())
    for family in families:
        spec = client_family(family)
        assert set(REQUIRED_KNOBS) <= set(spec.knobs), (family, set(REQUIRED_KNOBS) - set(spec.knobs))
        assert set(spec.knobs) <= set(KNOBS)
    cell = CELLS["postfix-smtps-implicit-intermediate-not-yet-valid"]
    for family in sorted(families):
        for cls in FAILURE_CLASSES:
            assert remedy(cls, cell=cell, family=family), (family, cls)


@pytest.mark.parametrize(
    ("family", "words"),
    [
        ("java", 'mail.smtp.ssl.protocols="TLSv1.2 TLSv1.3"'),
        ("node", "tls: { minVersion: 'TLSv1.2', maxVersion: 'TLSv1.3' }"),
        ("go", "tls.Config{MinVersion: tls.VersionTLS12, MaxVersion: tls.VersionTLS13}"),
        ("rust", "&rustls::version::TLS13, &rustls::version::TLS12"),
        ("rust", "min_protocol_version(Some(native_tls::Protocol::Tlsv12))"),
        ("dotnet", "SslProtocols.Tls12 | SslProtocols.Tls13"),
        ("gnutls", "+VERS-TLS1.2:+VERS-TLS1.3"),
    ],
)
def test_version_knobs(family: str, words: str) -> None:
    cell = CELLS["postfix-smtps-implicit-intermediate-valid"]
    text = remedy("protocol-version-mismatch", cell=cell, family=family, offered_versions=["TLSv1"])
    assert words in text
    assert text.startswith("the client offered only TLSv1; the server accepts TLSv1.2-TLSv1.3; ")


def test_version_remedy_keeps_the_profile_wording_without_an_offer() -> None:
    cell = CELLS["postfix-smtps-implicit-intermediate-valid"]
    text = remedy("protocol-version-mismatch", cell=cell, profile=PYTHON)
    assert text.startswith("the client offers TLSv1.2 TLSv1.3, the server accepts TLSv1.2 TLSv1.3: ")
    none = remedy("protocol-version-mismatch", cell=cell, family="java", offered_versions=[])
    assert none.startswith("the client sent no ClientHello")


@pytest.mark.parametrize(
    ("cls", "family", "words"),
    [
        ("untrusted-certificate", "node", "NODE_EXTRA_CA_CERTS"),
        ("untrusted-certificate", "go", "RootCAs"),
        ("untrusted-certificate", "dotnet", "CustomTrustStore"),
        ("hostname-mismatch", "go", "ServerName"),
        ("hostname-mismatch", "dotnet", "TargetHost"),
        ("starttls-required", "node", "requireTLS: true"),
        ("starttls-required", "dotnet", "SecureSocketOptions.StartTls"),
        ("starttls-required", "rust", "Tls::Required"),
        ("client-certificate-required", "go", "tls.LoadX509KeyPair"),
        ("client-certificate-required", "rust", "PKCS#8"),
        ("wrong-tls-mode", "node", "secure: true"),
    ],
)
def test_family_knobs(cls: str, family: str, words: str) -> None:
    cell = {
        "wrong-tls-mode": CELLS["postfix-smtps-implicit-intermediate-valid"],
        "untrusted-certificate": CELLS["postfix-smtps-implicit-intermediate-valid"],
    }.get(cls, CELLS["postfix-submission-starttls-intermediate-valid"])
    assert words in remedy(cls, cell=cell, family=family)


def test_a_client_without_its_tls_module_is_not_starttls_not_offered() -> None:
    # swaks without Net::SSLeay says "TLS not available": the client's own lack, not the server's refusal.
    text = "*** TLS not available: requires Net::SSLeay.  Exiting\nswaks exit status 10"
    assert diagnose(text, family="swaks").failure_class == UNCLASSIFIED


def test_a_probe_that_only_rules_the_version_out() -> None:
    # What certify.version_findings can say when a common version exists: no class named, one ruled out.
    probe = Finding("the server completes handshakes at TLSv1.2; the client offers TLSv1.2: the version is not the "
                    "problem", excludes=("protocol-version-mismatch",))  # fmt: skip
    text = "[SSL: UNEXPECTED_EOF_WHILE_READING] EOF occurred in violation of protocol (_ssl.c:1006)"
    d = diagnose(text, family="python", findings=[probe], expected="protocol-version-mismatch")
    assert d.failure_class != "protocol-version-mismatch" and f"probe: {probe.line}" in d.evidence
    assert diagnose("Could not connect to SMTP host.", family="java", findings=[probe]).failure_class == UNCLASSIFIED


def test_the_weak_dh_remedy_names_the_group_and_the_fix() -> None:
    cell = CELLS["postfix-submission-starttls-dhe-1024-valid"]
    d = diagnose("[SSL: DH_KEY_TOO_SMALL] dh key too small (_ssl.c:1006)", family="python", cell=cell)
    assert d.failure_class == "weak-dh"
    assert "1024-bit DH group" in d.remedy and "ffdhe2048" in d.remedy and "refusing it is right" in d.remedy
