"""Server-fault cells without servers: what each fault's tap does to the dialogue it is handed (in clear; inside TLS
the same tap reads the relay's plaintext), the slow server's trickle, and the judge's reading of the sessions."""

from __future__ import annotations

from pytest_mailtls.oracle import ClientProfile, expect
from pytest_mailtls.policy import Mode
from pytest_mailtls.wire.attacks import FAULTS, attack_named
from pytest_mailtls.wire.attacks.faults import RETRY_LIMIT, SLOW_BYTES
from pytest_mailtls.wire.judge import WireView, insecurity
from pytest_mailtls.wire.session import DialogueLine, Session

from .test_hostile import _cell
from .test_hostile import _Link as _BaseLink


class _Link(_BaseLink):
    def __init__(self, cell: object) -> None:
        super().__init__(cell)  # type: ignore[arg-type]
        self.closed = False
        self.eof_passed = 0

    def close(self) -> None:
        self.closed = True

    def pass_eof(self) -> None:
        self.eof_passed += 1


def _tap(network: str, service: str = "submission", mode: Mode = Mode.STARTTLS) -> tuple[object, _Link]:
    cell = _cell(service, mode, network=network)
    link = _Link(cell)
    return attack_named(network).tap(cell).opened(link), link


def _feed(tap: object, side: str, data: bytes) -> None:
    getattr(tap, f"from_{side}")(None, data)


def test_a_refused_rcpt_is_answered_in_order_behind_pipelined_commands_and_never_reaches_the_server() -> None:
    tap, link = _tap("fault-rcpt-451")
    _feed(tap, "server", b"220 mx ESMTP\r\n")
    _feed(tap, "client", b"MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n")
    assert link.server == [b"MAIL FROM:<a@b>\r\n", b"DATA\r\n"]
    assert link.client == [b"220 mx ESMTP\r\n"]  # the 451 waits for the answer to MAIL
    _feed(tap, "server", b"250 2.1.0 Ok\r\n")
    assert link.client[1:] == [b"250 2.1.0 Ok\r\n", FAULTS["fault-rcpt-451"].answer.encode() + b"\r\n"]
    _feed(tap, "server", b"554 5.5.1 Error: no valid recipients\r\n")
    assert link.client[-1].startswith(b"554 5.5.1")
    assert link.events == [f"answered the client's RCPT with {FAULTS['fault-rcpt-451'].answer!r} in the server's place"]


def test_the_end_of_data_is_refused_and_the_server_never_gets_the_final_dot() -> None:
    tap, link = _tap("fault-data-554")
    _feed(tap, "server", b"220 mx ESMTP\r\n")
    for command, answer in ((b"MAIL FROM:<a@b>\r\n", b"250 Ok\r\n"), (b"DATA\r\n", b"354 End data\r\n")):
        _feed(tap, "client", command)
        _feed(tap, "server", answer)
    _feed(tap, "client", b"Subject: x\r\n\r\nhello\r\n.\r\n")
    assert b"".join(link.server).endswith(b"hello\r\n") and b"\r\n.\r\n" not in b"".join(link.server)
    assert link.client[-1].startswith(b"554 5.6.0")
    _feed(tap, "client", b"QUIT\r\n")
    assert link.client[-1] == b"221 2.0.0 Bye\r\n" and link.closed
    assert "the server never got the final dot" in link.events[0]


def test_a_connection_is_cut_after_the_first_line_of_the_message() -> None:
    tap, link = _tap("fault-data-disconnect")
    _feed(tap, "server", b"220 mx ESMTP\r\n")
    _feed(tap, "client", b"DATA\r\n")
    _feed(tap, "server", b"354 End data\r\n")
    assert not link.was_reset
    _feed(tap, "client", b"Subject: x\r\n")
    assert link.was_reset and link.server[-1] == b"Subject: x\r\n"


def test_greeting_faults_replace_the_greeting_and_hang_up() -> None:
    for network, service, first in (
        ("fault-greeting-421", "submission", b"421 4.3.2"),
        ("fault-greeting-bye", "imap", b"* BYE"),
        ("fault-greeting-err", "pop3", b"-ERR [SYS/TEMP]"),
    ):
        tap, link = _tap(network, service)
        _feed(tap, "server", b"220 real greeting\r\n" if service == "submission" else b"* OK real\r\n")
        assert link.client[0].startswith(first) and link.closed, network


def test_imap_and_pop3_stages_are_answered_by_tag_and_never_reach_the_server() -> None:
    tap, link = _tap("fault-login-no", "imap")
    _feed(tap, "server", b"* OK ready\r\n")
    _feed(tap, "client", b"A1 CAPABILITY\r\nA2 LOGIN user secret\r\n")
    assert link.server == [b"A1 CAPABILITY\r\n"]
    assert link.client[-1].startswith(b"A2 NO [AUTHENTICATIONFAILED]")
    assert link.events == [
        "answered the client's A2 LOGIN with 'A2 NO [AUTHENTICATIONFAILED] mailtls fault: authentication failed' "
        "in the server's place"
    ]  # the password is not written down
    tap, link = _tap("fault-append-no", "imap")
    _feed(tap, "server", b"* OK ready\r\n")
    _feed(tap, "client", b"A3 APPEND INBOX {7+}\r\nhello\r\nA4 NOOP\r\n")
    assert link.server == [b"A4 NOOP\r\n"]  # the LITERAL+ behind the refused APPEND is swallowed
    tap, link = _tap("fault-pass-err", "pop3")
    _feed(tap, "server", b"+OK ready\r\n")
    _feed(tap, "client", b"USER u\r\n")
    _feed(tap, "server", b"+OK\r\n")
    _feed(tap, "client", b"PASS secret\r\n")
    assert link.server == [b"USER u\r\n"] and link.client[-1].startswith(b"-ERR [AUTH]")


def test_inside_tls_after_starttls_no_greeting_is_expected() -> None:
    cell = _cell("submission", Mode.STARTTLS, network="fault-greeting-421")
    link = _Link(cell)
    from pytest_mailtls.wire.attacks.faults import FaultLines

    inner = FaultLines(attack_named("fault-greeting-421").tap(cell), link, inside=True)
    inner.from_client(link, b"EHLO me\r\n")
    inner.from_server(link, b"250 mx\r\n")
    assert link.client == [b"250 mx\r\n"] and not link.closed


def test_a_slow_server_trickles_and_holds_its_fin_until_the_last_byte() -> None:
    tap, link = _tap("fault-slow")
    _feed(tap, "server", b"x" * (SLOW_BYTES * 2 + 1))
    assert link.client == [] and tap.hold_eof()  # type: ignore[attr-defined]
    while link.timers:
        link.timers.pop(0)()
    assert [len(c) for c in link.client] == [SLOW_BYTES, SLOW_BYTES, 1]
    assert link.eof_passed == 1 and not tap.hold_eof()  # type: ignore[attr-defined]


def _session(**kw: object) -> Session:
    return Session.model_validate({"id": "1", "cell": "c", "protocol": "smtp", "client": "c", "opened": 0.0, **kw})


def test_the_judge_reads_what_the_client_saw_against_what_it_reported() -> None:
    cell = _cell(network="fault-rcpt-550")
    refused = _session(
        network="fault-rcpt-550",
        attack=["answered the client's RCPT with '550 5.1.1 mailtls fault: recipient refused' in the server's place"],
        inner_dialogue=[DialogueLine(dir="client", t=0, text="MAIL FROM:<a@b>").model_dump()],
        inner_message_accepted=False,
    )
    view = WireView(cell, (refused,))
    cls, evidence = insecurity(view, ok=True) or ("", [])
    assert cls == "lost-mail" and "no 2xx after the end of DATA" in evidence[0]
    assert insecurity(view, ok=False) is None  # it reported the failure
    # A retry that got its message accepted is no loss.
    accepted = _session(inner_message_accepted=True)
    assert insecurity(WireView(cell, (refused, accepted)), ok=True) is None
    # A stage the client never reached: nothing to judge.
    assert insecurity(WireView(_cell("imap", network="fault-append-no"), (_session(protocol="imap"),)), ok=True) is None
    login = _session(protocol="imap", attack=["answered the client's A2 LOGIN with 'A2 NO' in the server's place"])
    assert (insecurity(WireView(_cell("imap", network="fault-login-no"), (login,)), ok=True) or ("",))[0] == (
        "ignored-error"
    )


def test_a_fault_cell_expects_the_stages_refusal_or_a_success_where_the_stage_is_not_reached() -> None:
    python = ClientProfile("python")
    expected = expect(python, _cell(network="fault-auth-535"))
    assert (expected.outcome, expected.may_succeed) == ("auth-failed", True)
    assert expect(python, _cell(network="fault-slow")).outcome == "success"
    assert _cell(network="fault-rcpt-451").group == "faults"


def test_coming_back_at_once_for_a_refusal_is_a_retry_storm_whatever_the_client_reported() -> None:
    def attempts(network: str, n: int) -> WireView:
        played = _session(attack=[f"answered the client's RCPT with {FAULTS[network].answer!r} in the server's place"])
        return WireView(_cell(network=network), (played,) * n)

    assert insecurity(attempts("fault-rcpt-550", 1), ok=False) is None
    assert (insecurity(attempts("fault-rcpt-550", 2), ok=False) or ("",))[0] == "retry-storm"  # permanent: once
    assert insecurity(attempts("fault-rcpt-451", RETRY_LIMIT), ok=False) is None  # temporary: a few are fine
    assert (insecurity(attempts("fault-rcpt-451", RETRY_LIMIT + 1), ok=False) or ("",))[0] == "retry-storm"


def test_an_open_mx_gets_every_smtp_fault_but_the_auth_ones() -> None:
    from pytest_mailtls.matrix import load_matrix

    mx = [c for c in load_matrix().cells(servers=["postfix"], selection="faults") if c.service.name == "smtp"]
    assert mx and all(c.mode == Mode.STARTTLS and not c.auth.mechanisms for c in mx)
    played = sorted(c.network for c in mx)
    smtp = sorted(name for name, fault in FAULTS.items() if "smtp" in fault.protocols)
    assert played == [name for name in smtp if not name.startswith("fault-auth-")]
    assert len(played) == len(smtp) - 2  # 454 and 535 to AUTH: an MX without AUTH never meets them
    submission = [
        c for c in load_matrix().cells(servers=["postfix"], selection="faults") if c.service.name == "submission"
    ]
    assert {"fault-auth-454", "fault-auth-535"} <= {c.network for c in submission}
