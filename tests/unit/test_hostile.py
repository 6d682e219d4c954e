"""Hostile-network cells without servers: the model (ids, matrix, manifest), the oracle's expectations, and what
each tap does to the bytes it is handed (a real ClientHello from the ssl module for the intolerant ones)."""

from __future__ import annotations

import ssl
from collections.abc import Callable

import pytest

from pytest_mailtls.diagnose import Diagnosis
from pytest_mailtls.errors import MailTLSError, MatrixError
from pytest_mailtls.manifest import Endpoint
from pytest_mailtls.matrix import load_matrix, parse_matrix
from pytest_mailtls.oracle import ClientProfile, expect, verdict
from pytest_mailtls.policy import SERVICES, Cell, CertProfile, Mode
from pytest_mailtls.report import CellRecord, Report
from pytest_mailtls.wire.attacks import ATTACKS, NETWORKS, VULNERABILITY_CLASSES, attack_named
from pytest_mailtls.wire.attacks.faults import RETRY_CLASS
from pytest_mailtls.wire.recorder import Link, SessionAnalyzer

MATRIX = load_matrix()
INTERMEDIATE = MATRIX.policies["intermediate"]


def _cell(service: str = "submission", mode: Mode = Mode.STARTTLS, network: str | None = None) -> Cell:
    return Cell("postfix", SERVICES[service], mode, INTERMEDIATE, CertProfile.VALID, network=network)


class _Link(Link):
    """The relay's side of a tap, written down (what the tap sends each way, resets, notes)."""

    def __init__(self, cell: Cell) -> None:
        self.cell = cell
        self.analyzer = SessionAnalyzer(
            session_id="t", cell=cell.id, protocol=str(cell.protocol), implicit=cell.mode is Mode.IMPLICIT, client="c"
        )
        self.client: list[bytes] = []
        self.server: list[bytes] = []
        self.events: list[str] = []
        self.was_reset = False
        self.timers: list[Callable[[], None]] = []

    def to_client(self, data: bytes, *, record: bool = True) -> None:
        self.client.append(data)

    def to_server(self, data: bytes) -> None:
        self.server.append(data)

    def reset(self) -> None:
        self.was_reset = True

    def later(self, delay: float, callback: Callable[[], None]) -> None:
        self.timers.append(callback)

    def note(self, event: str) -> None:
        self.events.append(event)


def _tap(network: str, cell: Cell | None = None) -> tuple[object, _Link]:
    cell = cell or _cell(network=network)
    link = _Link(cell)
    return attack_named(network).tap(cell).opened(link), link


# --- the model ------------------------------------------------------------------------------------


def test_a_hostile_cell_names_its_attack_in_its_id_and_keeps_its_base() -> None:
    cell = _cell(network="strip-capa")
    assert cell.id == "postfix-submission-starttls-intermediate-valid-strip-capa"
    assert cell.base == _cell() and cell.base.network is None and cell.hostile


def test_the_hostile_selection_holds_every_applicable_attack_and_full_none() -> None:
    hostile = MATRIX.cells(servers=["postfix", "dovecot"], selection="hostile")
    ids = {c.id for c in hostile}
    assert "postfix-submission-starttls-intermediate-valid-strip-capa" in ids
    assert "dovecot-imap-starttls-intermediate-valid-strip-wrongtag" in ids
    assert "postfix-smtps-implicit-intermediate-valid-intercept" in ids
    assert "postfix-smtps-implicit-intermediate-valid-strip-capa" not in ids  # no cleartext phase to strip
    assert "postfix-submission-starttls-intermediate-valid-strip-bad" not in ids  # IMAP only
    assert all(attack_named(str(c.network)).applies(c) for c in hostile)
    assert not any(c.network for c in MATRIX.cells(servers=["postfix"], selection="full"))
    assert not any(c.network for c in MATRIX.cells(servers=["postfix"], selection="modern-only"))


def test_a_matrix_names_unknown_attacks_in_one_line() -> None:
    doc = {
        "policies": {"p": {"min_version": "TLSv1.2", "max_version": "TLSv1.3"}},
        "grid": [{"services": ["submission"], "modes": ["starttls"], "policies": ["p"], "network": ["strip-al"]}],
    }
    with pytest.raises(MatrixError, match=r"unknown hostile network or fault 'strip-al'.*strip-capa"):
        parse_matrix(doc)
    doc["grid"][0]["network"] = "all"  # type: ignore[index]
    cells = parse_matrix(doc).all_cells(["postfix"])
    assert {c.network for c in cells} == {n for n, a in ATTACKS.items() if "smtp" in a.protocols}


def test_the_manifest_carries_the_network() -> None:
    endpoint = Endpoint(
        cell=_cell(network="intercept"),
        host="127.0.0.1",
        port=2525,
        server_hostname="localhost",
        ca_file="ca.pem",
        username="u",
        password="p",
    )
    back = Endpoint.from_json(endpoint.to_json())
    assert back.id == endpoint.id and back.cell.network == "intercept" and back.id.endswith("-intercept")
    with pytest.raises(MailTLSError, match="network 'nope' is not one of"):
        Endpoint.from_json({**endpoint.to_json(), "network": "nope"})


def test_every_attack_declares_its_class_and_its_secure_outcome() -> None:
    assert {a.vulnerability for a in NETWORKS.values()} | {RETRY_CLASS} == set(VULNERABILITY_CLASSES)
    for attack in NETWORKS.values():
        assert attack.secure_outcome and attack.description
        assert attack.expected == "either" or attack.refusal is not None


# --- the oracle ------------------------------------------------------------------------------------

PYTHON = ClientProfile("python")


@pytest.mark.parametrize("network", sorted(ATTACKS))
def test_a_success_is_insecure_only_where_a_secure_client_must_refuse(network: str) -> None:
    attack = ATTACKS[network]
    cell = _cell(mode=Mode.IMPLICIT, service="smtps", network=network)
    if not attack.applies(cell):
        cell = _cell(network=network, service="imap" if attack.protocols == ("imap",) else "submission")
    expected = expect(PYTHON, cell)
    assert not expected.secure_overlap
    assert verdict(expected, ok=False, tls=None)[0] == "refused-correctly"
    assert verdict(expected, ok=True, tls=True)[0] == ("insecure" if attack.expected == "refuse" else "pass")
    assert verdict(expected, ok=True, tls=False)[0] == "insecure"


def test_an_attack_changes_nothing_for_a_client_that_cannot_have_the_cell_anyway() -> None:
    old = ClientProfile("old", versions=("TLSv1",))
    expected = expect(old, _cell(network="tamper-capa"))
    assert expected.outcome == "protocol-version-mismatch" and not expected.may_succeed


def test_existing_cells_keep_their_expectations() -> None:
    for cell in MATRIX.cells(servers=["postfix", "dovecot"]):
        assert not expect(PYTHON, cell).may_succeed


# --- the taps ------------------------------------------------------------------------------------


def _feed(tap: object, side: str, data: bytes) -> None:
    getattr(tap, "from_client" if side == "client" else "from_server")(None, data)


def test_strip_capa_removes_starttls_from_a_multiline_ehlo_answer_and_answers_the_command() -> None:
    tap, link = _tap("strip-capa")
    _feed(tap, "server", b"220 mx ESMTP\r\n")
    _feed(tap, "client", b"EHLO me\r\n")
    _feed(tap, "server", b"250-mx\r\n250-PIPELINING\r\n250 STARTTLS\r\n")
    assert b"".join(link.client) == b"220 mx ESMTP\r\n250-mx\r\n250 PIPELINING\r\n"
    _feed(tap, "client", b"STARTTLS\r\n")
    assert link.server == [b"EHLO me\r\n"]  # the server never sees STARTTLS
    assert link.client[-1].startswith(b"502 ")
    assert link.events == ["removed STARTTLS from the EHLO answer", "answered the client's 'STARTTLS' itself with "
                           "'502 5.5.1 Error: command not implemented'"]  # fmt: skip


def test_strip_capa_imap_and_pop3() -> None:
    tap, link = _tap("strip-capa", _cell("imap", network="strip-capa"))
    _feed(tap, "server", b"* OK [CAPABILITY IMAP4rev1 STARTTLS LOGINDISABLED] ready\r\n")
    assert link.client == [b"* OK [CAPABILITY IMAP4rev1 LOGINDISABLED] ready\r\n"]
    tap, link = _tap("strip-capa", _cell("pop3", network="strip-capa"))
    _feed(tap, "server", b"+OK ready\r\n")
    _feed(tap, "client", b"CAPA\r\n")
    _feed(tap, "server", b"+OK\r\nTOP\r\nSTLS\r\nUSER\r\n.\r\n")
    assert b"".join(link.client) == b"+OK ready\r\n+OK\r\nTOP\r\nUSER\r\n.\r\n"


def test_strip_wrongtag_answers_under_the_next_tag() -> None:
    tap, link = _tap("strip-wrongtag", _cell("imap", network="strip-wrongtag"))
    _feed(tap, "client", b"A007 STARTTLS\r\n")
    assert link.client == [b"A008 OK Begin TLS negotiation now\r\n"] and link.server == []


def test_tamper_capa_adds_auth_in_clear_and_leaves_starttls() -> None:
    tap, link = _tap("tamper-capa")
    _feed(tap, "client", b"EHLO me\r\n")
    _feed(tap, "server", b"250-mx\r\n250 STARTTLS\r\n")
    assert link.client == [b"250-mx\r\n250-STARTTLS\r\n250 AUTH PLAIN LOGIN\r\n"]


def test_inject_command_withholds_the_answer_and_the_record_shows_pipelined_lines() -> None:
    tap, link = _tap("inject-command")
    _feed(tap, "client", b"STARTTLS\r\n")
    _feed(tap, "server", b"220 go ahead\r\n")
    assert link.client == [] and len(link.timers) == 1
    link.timers[0]()
    assert link.client == [b"220 go ahead\r\n"]


def _client_hello(maximum: ssl.TLSVersion) -> bytes:
    ctx = ssl.create_default_context()
    ctx.maximum_version = maximum
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname="localhost")
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    return outgoing.read()


@pytest.mark.parametrize(
    ("network", "tls13_reset", "tls12_reset"),
    [("intolerant-tls13", True, False), ("intolerant-ext", True, False), ("intolerant-size", True, False)],
)
def test_intolerant_boxes_reset_on_the_hellos_they_dislike(network: str, tls13_reset: bool, tls12_reset: bool) -> None:
    cell = _cell("smtps", Mode.IMPLICIT, network)
    for maximum, reset in ((ssl.TLSVersion.TLSv1_3, tls13_reset), (ssl.TLSVersion.TLSv1_2, tls12_reset)):
        tap, link = _tap(network, cell)
        hello = _client_hello(maximum)
        _feed(tap, "client", hello[:7])  # held until the record is whole
        assert link.server == [] and not link.was_reset
        _feed(tap, "client", hello[7:])
        assert link.was_reset is reset, (maximum, link.events)
        assert (b"".join(link.server) == hello) is not reset


# --- the report ---------------------------------------------------------------------------------


def test_the_report_lists_vulnerabilities_by_class() -> None:
    def record(network: str, verdict_: str, cls: str | None) -> CellRecord:
        endpoint = Endpoint(
            cell=_cell(network=network),
            host="127.0.0.1",
            port=2525,
            server_hostname="localhost",
            ca_file="ca.pem",
            username="u",
            password="p",
        )
        return CellRecord(
            manifest=endpoint.to_json(),
            expected="starttls-not-offered",
            secure_overlap=False,
            expected_reason="",
            actual="success",
            verdict=verdict_,
            verdict_reason="",
            diagnosis=Diagnosis(cls) if cls else None,
        )

    report = Report(
        client="c",
        profile={},
        generated="",
        cells=[
            record("strip-capa", "insecure", "starttls-stripping"),
            record("strip-refuse", "insecure", "starttls-stripping"),
            record("inject-response", "refused-correctly", "starttls-not-offered"),
            record("intercept", "insecure", "tls-interception"),
        ],
    )
    base = "postfix-submission-starttls-intermediate-valid"
    assert report.vulnerabilities() == {
        "starttls-stripping": [f"{base}-strip-capa", f"{base}-strip-refuse"],
        "tls-interception": [f"{base}-intercept"],
    }
    assert report.to_json()["vulnerabilities"] == report.vulnerabilities()
    assert Report.from_json(report.to_json()).vulnerabilities() == report.vulnerabilities()
    meaning = VULNERABILITY_CLASSES["starttls-stripping"]
    assert f"- **starttls-stripping** (2): {meaning}: `{base}-strip-capa`, `{base}-strip-refuse`" in report.markdown()


def test_the_certificates_relays_present_are_known_before_they_start() -> None:
    # A grid makes them with the rest of its PKI (and a head start ahead of the request): not on the relay's loop.
    from pytest_mailtls.wire.attacks import presented_profiles
    from pytest_mailtls.wire.attacks.faults import FaultTap

    by_family = {a.family: a for a in NETWORKS.values()}
    by_family["fault"] = next(a for a in NETWORKS.values() if a.tap_class is FaultTap)  # one played inside TLS
    plain = _cell(network=by_family["strip"].name)
    intercepted = _cell(network=by_family["intercept"].name)
    faulted = _cell(network=by_family["fault"].name)
    assert by_family["strip"].presents(plain) is None
    assert by_family["intercept"].presents(intercepted) is CertProfile.UNTRUSTED_CA
    assert faulted.cert is not None and by_family["fault"].presents(faulted) is faulted.cert  # the cell's own
    assert presented_profiles([plain, intercepted, faulted, intercepted]) == [CertProfile.UNTRUSTED_CA, faulted.cert]
    # The hostile selection's intercepting networks present the untrusted-CA profile, made with the rest.
    from pytest_mailtls.selection import resolve

    grid = [c for c in resolve(servers="postfix", select="hostile", need_engine=False).cells if c.network]
    assert set(presented_profiles(grid)) <= set(CertProfile) and CertProfile.UNTRUSTED_CA in presented_profiles(grid)
