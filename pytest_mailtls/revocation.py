"""The session's revocation endpoints: a CRL and an OCSP responder on 127.0.0.1, for the run's lifetime.

The session PKI (:mod:`pytest_mailtls.pki`) writes what the responder serves into ``<pki dir>/revocation/``:
``root.crl`` (DER, signed by the session CA) and ``status.json`` (serial -> ``good`` or ``revoked``, for the
certificates that name this responder). The responder reads them on every request, so a certificate made by
another process of a shared PKI is answered alike. It listens on an ephemeral port chosen when the first
certificate that names it is made (the URL is inside the certificate); a daemon thread of the process that
made it serves until :meth:`Responder.close` or the end of that process.

``GET /root.crl`` answers the CRL (``application/pkix-crl``); ``POST /ocsp`` (RFC 6960, and ``GET
/ocsp/<base64>``) answers an OCSP response signed by the session CA: ``revoked`` for a revoked serial,
``good`` for another one the PKI issued with these URLs, ``unknown`` otherwise.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import http.server
import json
import threading
import urllib.parse
from collections.abc import Callable
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509 import ocsp

__all__ = ["Responder", "CRL_NAME", "STATUS_NAME", "CLOSED_PORT", "write_crl"]

CRL_NAME = "root.crl"
STATUS_NAME = "status.json"
#: A port nothing listens on (tcpmux: no unprivileged process can bind it): "revocation endpoint unreachable".
CLOSED_PORT = 1


class Responder:
    """An HTTP server on 127.0.0.1 that answers CRL downloads and OCSP requests from ``folder``."""

    def __init__(self, folder: Path, ca_cert: Callable[[], x509.Certificate], ca_key: Callable[[], rsa.RSAPrivateKey]):
        self.folder = folder
        self._ca_cert, self._ca_key = ca_cert, ca_key
        responder = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = urllib.parse.urlparse(self.path).path
                if path == f"/{CRL_NAME}":
                    self._answer(200, "application/pkix-crl", responder.crl())
                elif path.startswith("/ocsp/"):
                    request = base64.b64decode(urllib.parse.unquote(path.removeprefix("/ocsp/")))
                    self._answer(200, "application/ocsp-response", responder.ocsp(request))
                else:
                    self._answer(404, "text/plain", b"not found\n")

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(min(length, 65536))
                if urllib.parse.urlparse(self.path).path.rstrip("/") != "/ocsp":
                    self._answer(404, "text/plain", b"not found\n")
                    return
                self._answer(200, "application/ocsp-response", responder.ocsp(body))

            def _answer(self, status: int, kind: str, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                return None  # quiet: clients poll it

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, name="mailtls-revocation", daemon=True)
        self._thread.start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def crl(self) -> bytes:
        try:
            return (self.folder / CRL_NAME).read_bytes()
        except OSError:
            return b""

    def statuses(self) -> dict[int, str]:
        try:
            return {int(k): str(v) for k, v in json.loads((self.folder / STATUS_NAME).read_text()).items()}
        except (OSError, ValueError):
            return {}

    def ocsp(self, request_der: bytes) -> bytes:
        """The signed answer to one OCSP request (a malformed one gets ``malformedRequest``)."""
        try:
            request = ocsp.load_der_ocsp_request(request_der)
        except ValueError:
            return ocsp.OCSPResponseBuilder.build_unsuccessful(ocsp.OCSPResponseStatus.MALFORMED_REQUEST).public_bytes(
                serialization.Encoding.DER
            )
        ca = self._ca_cert()
        status = self.statuses().get(request.serial_number)
        now = dt.datetime.now(dt.UTC).replace(microsecond=0)
        cert_status = {
            "revoked": ocsp.OCSPCertStatus.REVOKED,
            "good": ocsp.OCSPCertStatus.GOOD,
        }.get(status or "", ocsp.OCSPCertStatus.UNKNOWN)
        builder = ocsp.OCSPResponseBuilder().add_response_by_hash(
            issuer_name_hash=request.issuer_name_hash,
            issuer_key_hash=request.issuer_key_hash,
            serial_number=request.serial_number,
            algorithm=request.hash_algorithm,
            cert_status=cert_status,
            this_update=now - dt.timedelta(minutes=5),
            next_update=now + dt.timedelta(days=1),
            revocation_time=now - dt.timedelta(hours=1) if cert_status is ocsp.OCSPCertStatus.REVOKED else None,
            revocation_reason=x509.ReasonFlags.key_compromise if cert_status is ocsp.OCSPCertStatus.REVOKED else None,
        )
        builder = builder.responder_id(ocsp.OCSPResponderEncoding.HASH, ca)
        with contextlib.suppress(x509.ExtensionNotFound):
            builder = builder.add_extension(request.extensions.get_extension_for_class(x509.OCSPNonce).value, False)
        return builder.sign(self._ca_key(), hashes.SHA256()).public_bytes(serialization.Encoding.DER)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def write_crl(folder: Path, ca_cert: x509.Certificate, ca_key: rsa.RSAPrivateKey, revoked: list[int]) -> None:
    """(Re)write ``folder/root.crl``: the session CA's CRL listing ``revoked`` serials, valid for a day."""
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca_cert.subject)
        .last_update(now - dt.timedelta(minutes=5))
        .next_update(now + dt.timedelta(days=1))
        .add_extension(x509.CRLNumber(len(revoked) + 1), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key()),  # type: ignore[arg-type]
            critical=False,
        )
    )
    for serial in revoked:
        entry = (
            x509.RevokedCertificateBuilder()
            .serial_number(serial)
            .revocation_date(now - dt.timedelta(hours=1))
            .add_extension(x509.CRLReason(x509.ReasonFlags.key_compromise), critical=False)
            .build()
        )
        builder = builder.add_revoked_certificate(entry)
    crl = builder.sign(ca_key, hashes.SHA256())
    tmp = folder / f".{CRL_NAME}.tmp"
    tmp.write_bytes(crl.public_bytes(serialization.Encoding.DER))
    tmp.replace(folder / CRL_NAME)
