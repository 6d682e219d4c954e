"""TLS as seen from the path: records, hellos and alerts read from the bytes, without keys.

:class:`TLSObserver` is fed each direction's bytes in order (``feed("client", data)``) and keeps what
a passive observer can know: the ClientHello (versions, cipher suites in order, SNI, ALPN, groups,
signature algorithms), the ServerHello (chosen version and suite), cleartext alerts, a client
certificate sent in clear (TLS <= 1.2), and whether each side finished the handshake and sent
application data. Encrypted records are counted, never read.

How "finished" is told without keys:

* TLS <= 1.2: a side finished when it sent ChangeCipherSpec (the client only does after it accepted
  the server's certificate: it verifies on ServerHelloDone, before ClientKeyExchange); application
  data is any record of type 23.
* TLS 1.3: everything after the ServerHello is type 23. The client verifies the server's
  certificate before it sends its Finished, so a client record longer than an alert (an encrypted
  alert is 2 bytes + 1 content-type byte + a 16-byte tag = 19) means it accepted the certificate;
  a further such record is application data (a record of at most 19 bytes is always an alert: the shortest
  mail command encrypts to 23).

PYTEST_DONT_REWRITE
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Literal

from ..tls import suite_name, suite_names

__all__ = [
    "ALERTS",
    "TLSObserver",
    "ClientHelloInfo",
    "ServerHelloInfo",
    "AlertInfo",
    "cipher_name",
    "version_name",
    "looks_like_tls",
]

Side = Literal["client", "server"]

_VERSIONS = {0x0300: "SSLv3", 0x0301: "TLSv1", 0x0302: "TLSv1.1", 0x0303: "TLSv1.2", 0x0304: "TLSv1.3"}
_ORDER = ("SSLv3", "TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3")

#: TLS alert descriptions (RFC 8446 section 6, plus the TLS 1.2 ones still seen).
ALERTS: dict[int, str] = {
    0: "close_notify",
    10: "unexpected_message",
    20: "bad_record_mac",
    21: "decryption_failed",
    22: "record_overflow",
    30: "decompression_failure",
    40: "handshake_failure",
    41: "no_certificate",
    42: "bad_certificate",
    43: "unsupported_certificate",
    44: "certificate_revoked",
    45: "certificate_expired",
    46: "certificate_unknown",
    47: "illegal_parameter",
    48: "unknown_ca",
    49: "access_denied",
    50: "decode_error",
    51: "decrypt_error",
    60: "export_restriction",
    70: "protocol_version",
    71: "insufficient_security",
    80: "internal_error",
    86: "inappropriate_fallback",
    90: "user_canceled",
    100: "no_renegotiation",
    109: "missing_extension",
    110: "unsupported_extension",
    112: "unrecognized_name",
    113: "bad_certificate_status_response",
    115: "unknown_psk_identity",
    116: "certificate_required",
    120: "no_application_protocol",
}

_GROUPS = {
    23: "secp256r1",
    24: "secp384r1",
    25: "secp521r1",
    29: "x25519",
    30: "x448",
    256: "ffdhe2048",
    257: "ffdhe3072",
    258: "ffdhe4096",
    259: "ffdhe6144",
    260: "ffdhe8192",
    0x11EC: "X25519MLKEM768",
    0x6399: "X25519Kyber768Draft00",
}

_SIGALGS = {
    0x0401: "rsa_pkcs1_sha256",
    0x0501: "rsa_pkcs1_sha384",
    0x0601: "rsa_pkcs1_sha512",
    0x0403: "ecdsa_secp256r1_sha256",
    0x0503: "ecdsa_secp384r1_sha384",
    0x0603: "ecdsa_secp521r1_sha512",
    0x0804: "rsa_pss_rsae_sha256",
    0x0805: "rsa_pss_rsae_sha384",
    0x0806: "rsa_pss_rsae_sha512",
    0x0807: "ed25519",
    0x0808: "ed448",
    0x0809: "rsa_pss_pss_sha256",
    0x080A: "rsa_pss_pss_sha384",
    0x080B: "rsa_pss_pss_sha512",
    0x0201: "rsa_pkcs1_sha1",
    0x0203: "ecdsa_sha1",
    0x0202: "dsa_sha1",
}

#: A ServerHello with this random is a HelloRetryRequest (RFC 8446 4.1.3): a second ClientHello follows.
_HRR_RANDOM = bytes.fromhex("cf21ad74e59a6111be1d8c021e65b891c2a211167abb8c5e079e09e2c8a8339c")
#: A TLS 1.3 encrypted alert: 2 bytes, the inner content type and a 16-byte tag (clients do not pad them).
_ALERT_MAX = 19


def version_name(value: int) -> str:
    """``0x0303`` -> ``"TLSv1.2"``; unknown values as hex."""
    return _VERSIONS.get(value, f"0x{value:04x}")


def cipher_name(value: int) -> str:
    """IANA suite number -> OpenSSL name (``0xc02f`` -> ``ECDHE-RSA-AES128-GCM-SHA256``); unknown as hex."""
    return suite_name(value)


#: The GREASE values of RFC 8701 (0x0A0A, 0x1A1A, ... 0xFAFA), skipped in every list a hello carries.
_GREASE = frozenset(0x0A0A + 0x1010 * i for i in range(16))


def _u16s(data: bytes) -> tuple[int, ...]:
    """``data`` read as big-endian 16-bit numbers (a trailing odd byte is ignored)."""
    return struct.unpack(f">{len(data) // 2}H", data[: len(data) // 2 * 2])


def looks_like_tls(data: bytes) -> bool:
    """Whether ``data`` starts like a TLS record carrying a handshake (0x16 0x03 0x0X)."""
    return len(data) >= 3 and data[0] == 0x16 and data[1] == 0x03 and data[2] <= 0x04


@dataclass
class ClientHelloInfo:
    legacy_version: str
    versions: list[str]  # ascending; from supported_versions, else every version up to legacy_version
    versions_from: Literal["supported_versions", "legacy_version"]
    ciphers: list[str]  # in the client's order, GREASE left out
    sni: str | None = None
    alpn: list[str] = field(default_factory=list)
    groups: list[str] = field(default_factory=list)
    signature_algorithms: list[str] = field(default_factory=list)


@dataclass
class ServerHelloInfo:
    version: str
    cipher: str
    hello_retry: bool = False


@dataclass
class AlertInfo:
    sender: Side
    level: str  # "warning", "fatal", or "unknown" when encrypted
    description: str  # e.g. "protocol_version"; "encrypted" when it could not be read
    encrypted: bool = False


class _Stream:
    """One direction's record reassembly."""

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.handshake = bytearray()  # cleartext handshake bytes, reassembled across records
        self.encrypted = False  # this side's records are no longer readable
        self.ccs = False  # sent ChangeCipherSpec
        self.app_records = 0  # type-23 records longer than an alert
        self.records = 0


class TLSObserver:
    """What a passive observer learns from one TLS connection's bytes."""

    def __init__(self) -> None:
        self.client_hello: ClientHelloInfo | None = None
        self.server_hello: ServerHelloInfo | None = None
        self.alerts: list[AlertInfo] = []
        self.client_certificate: bool | None = None  # TLS <= 1.2 only: None when not seen (or encrypted)
        #: TLS <= 1.2 with a finite-field DHE suite: the size in bits of the prime of the server's DH group, read
        #: from its ServerKeyExchange (``dh_p``); None when not seen.
        self.server_dh_bits: int | None = None
        self.server_hello_done = False  # TLS <= 1.2: the server's first flight is complete
        self.not_tls: bool = False  # the client's first bytes were no TLS record
        self.first_client_bytes: bytes = b""
        self._streams: dict[Side, _Stream] = {"client": _Stream(), "server": _Stream()}
        self._broken = False

    # --- facts -------------------------------------------------------------------------
    @property
    def version(self) -> str | None:
        return self.server_hello.version if self.server_hello and not self.server_hello.hello_retry else None

    @property
    def tls13(self) -> bool:
        return self.version == "TLSv1.3"

    @property
    def client_finished(self) -> bool:
        """The client completed its side of the handshake (and so accepted the server's certificate)."""
        c = self._streams["client"]
        if self.server_hello is None:
            return False
        return c.app_records >= 1 if self.tls13 else c.ccs

    @property
    def server_finished(self) -> bool:
        s = self._streams["server"]
        if self.server_hello is None:
            return False
        return s.app_records >= 1 if self.tls13 else s.ccs

    @property
    def handshake_completed(self) -> bool:
        return self.client_finished and self.server_finished

    @property
    def settled(self) -> bool:
        """Nothing more to learn: both sides finished and the client sent application data (the rest is counted
        by the relay, not read)."""
        return self.server_finished and self.client_app_data

    @property
    def client_app_data(self) -> bool:
        """The client sent application data after its handshake."""
        needed = 2 if self.tls13 else 1
        return self.client_finished and self._streams["client"].app_records >= needed

    # --- feeding -----------------------------------------------------------------------
    def feed(self, side: Side, data: bytes) -> None:
        if self._broken or not data:
            return
        stream = self._streams[side]
        if side == "client" and not self.first_client_bytes:
            self.first_client_bytes = bytes(data[:64])
            if not looks_like_tls(data):
                self.not_tls = True
                self._broken = True
                return
        stream.buffer += data
        while len(stream.buffer) >= 5:
            ctype, _version, length = struct.unpack("!BHH", stream.buffer[:5])
            if len(stream.buffer) < 5 + length:
                break
            body = bytes(stream.buffer[5 : 5 + length])
            del stream.buffer[: 5 + length]
            stream.records += 1
            try:
                self._record(side, stream, ctype, body)
            except (IndexError, struct.error, ValueError):
                self._broken = True  # garbled: keep what we know, read no further
                return

    def _record(self, side: Side, stream: _Stream, ctype: int, body: bytes) -> None:
        if ctype == 20:  # ChangeCipherSpec
            stream.ccs = True
            if not self.tls13:  # TLS 1.3 sends it for middlebox compatibility only
                stream.encrypted = True
            return
        if ctype == 21:  # alert
            if stream.encrypted or len(body) != 2:
                self.alerts.append(AlertInfo(side, "unknown", "encrypted", True))
            else:
                level = {1: "warning", 2: "fatal"}.get(body[0], str(body[0]))
                self.alerts.append(AlertInfo(side, level, ALERTS.get(body[1], f"alert {body[1]}")))
            return
        if ctype == 23:  # application data (in TLS 1.3 also encrypted handshake and alerts)
            if self.tls13 and len(body) <= _ALERT_MAX:
                # A record this short is an encrypted alert: before the client's Finished it can be nothing else,
                # and after it the shortest mail command (QUIT or NOOP and CRLF, 6 bytes) encrypts to 23 bytes. So
                # a close_notify from a client that checks the host name after the handshake (curl) is no data.
                self.alerts.append(AlertInfo(side, "unknown", "encrypted", True))
            else:
                stream.app_records += 1
            return
        if ctype == 22 and not stream.encrypted:
            stream.handshake += body
            self._handshake(side, stream)

    def _handshake(self, side: Side, stream: _Stream) -> None:
        buf = stream.handshake
        while len(buf) >= 4 and not stream.encrypted:
            mtype = buf[0]
            length = int.from_bytes(buf[1:4], "big")
            if len(buf) < 4 + length:
                return
            msg = bytes(buf[4 : 4 + length])
            del buf[: 4 + length]
            if mtype == 1 and side == "client":
                self.client_hello = _parse_client_hello(msg)
            elif mtype == 2 and side == "server":
                self.server_hello = _parse_server_hello(msg)
                if self.tls13:
                    # From here on both sides encrypt their handshake (the client after this flight).
                    self._streams["server"].encrypted = True
                    self._streams["client"].encrypted = True
                    return
            elif mtype == 12 and side == "server" and self.server_hello is not None:
                if _finite_field_dhe(self.server_hello.cipher) and len(msg) >= 2:
                    size = int.from_bytes(msg[:2], "big")  # ServerDHParams: dh_p<1..2^16-1>, dh_g, dh_Ys
                    self.server_dh_bits = int.from_bytes(msg[2 : 2 + size], "big").bit_length()
            elif mtype == 14 and side == "server":
                self.server_hello_done = True
            elif mtype == 11 and side == "client":
                # Certificate from the client (TLS <= 1.2, in clear): a 3-byte list length of 0 means none.
                self.client_certificate = len(msg) >= 3 and int.from_bytes(msg[:3], "big") > 0


def _finite_field_dhe(cipher: str) -> bool:
    """An OpenSSL (``DHE-RSA-...``) or IANA (``TLS_DHE_RSA_...``) suite name with a finite-field DHE key exchange."""
    return cipher.startswith(("DHE-", "EDH-", "TLS_DHE_"))


def _parse_client_hello(msg: bytes) -> ClientHelloInfo:
    legacy = int.from_bytes(msg[0:2], "big")
    pos = 2 + 32
    sid_len = msg[pos]
    pos += 1 + sid_len
    cs_len = int.from_bytes(msg[pos : pos + 2], "big")
    pos += 2
    suites = _u16s(msg[pos : pos + cs_len])
    pos += cs_len
    comp_len = msg[pos]
    pos += 1 + comp_len
    table = suite_names()  # a hello offers up to a few hundred suites: one dict look-up each
    hello = ClientHelloInfo(
        legacy_version=version_name(legacy),
        versions=[],
        versions_from="legacy_version",
        ciphers=[table.get(s) or f"0x{s:04x}" for s in suites if s not in _GREASE],
    )
    supported: list[int] = []
    for ext_type, data in _extensions(msg, pos):
        if ext_type == 0:  # server_name
            hello.sni = _parse_sni(data)
        elif ext_type == 16:  # ALPN
            hello.alpn = _parse_alpn(data)
        elif ext_type == 10:  # supported_groups
            ids = _u16s(data[2 : 2 + int.from_bytes(data[:2], "big")])
            hello.groups = [_GROUPS.get(g, f"0x{g:04x}") for g in ids if g not in _GREASE]
        elif ext_type == 13:  # signature_algorithms
            ids = _u16s(data[2 : 2 + int.from_bytes(data[:2], "big")])
            hello.signature_algorithms = [_SIGALGS.get(s, f"0x{s:04x}") for s in ids if s not in _GREASE]
        elif ext_type == 43:  # supported_versions
            supported = list(_u16s(data[1 : 1 + data[0]]))
    if supported:
        names = {version_name(v) for v in supported if v not in _GREASE}
        hello.versions = [v for v in _ORDER if v in names]
        hello.versions_from = "supported_versions"
    else:
        top = version_name(legacy)
        hello.versions = [v for v in _ORDER[1:] if top in _ORDER and _ORDER.index(v) <= _ORDER.index(top)]
    return hello


def _parse_server_hello(msg: bytes) -> ServerHelloInfo:
    legacy = int.from_bytes(msg[0:2], "big")
    random = msg[2:34]
    pos = 34
    sid_len = msg[pos]
    pos += 1 + sid_len
    suite = int.from_bytes(msg[pos : pos + 2], "big")
    pos += 2 + 1  # suite, compression method
    version = legacy
    for ext_type, data in _extensions(msg, pos):
        if ext_type == 43 and len(data) >= 2:
            version = int.from_bytes(data[:2], "big")
    return ServerHelloInfo(version_name(version), cipher_name(suite), hello_retry=random == _HRR_RANDOM)


def _extensions(msg: bytes, pos: int) -> list[tuple[int, bytes]]:
    if pos + 2 > len(msg):
        return []
    end = pos + 2 + int.from_bytes(msg[pos : pos + 2], "big")
    pos += 2
    out = []
    while pos + 4 <= min(end, len(msg)):
        ext_type = int.from_bytes(msg[pos : pos + 2], "big")
        ext_len = int.from_bytes(msg[pos + 2 : pos + 4], "big")
        out.append((ext_type, msg[pos + 4 : pos + 4 + ext_len]))
        pos += 4 + ext_len
    return out


def _parse_sni(data: bytes) -> str | None:
    # server_name_list: u16 length, then entries of (type u8, u16 length, name)
    pos = 2
    while pos + 3 <= len(data):
        kind, n = data[pos], int.from_bytes(data[pos + 1 : pos + 3], "big")
        if kind == 0:
            return data[pos + 3 : pos + 3 + n].decode("ascii", "replace")
        pos += 3 + n
    return None


def _parse_alpn(data: bytes) -> list[str]:
    out, pos = [], 2
    while pos < len(data):
        n = data[pos]
        out.append(data[pos + 1 : pos + 1 + n].decode("ascii", "replace"))
        pos += 1 + n
    return out
