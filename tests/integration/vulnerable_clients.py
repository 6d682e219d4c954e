"""Deliberately vulnerable (or careless) clients, for the hostile-network and fault cells to catch.

    python vulnerable_clients.py fallback HOST PORT SERVER_HOSTNAME CA_FILE USER PASSWORD
    python vulnerable_clients.py buffering HOST PORT SERVER_HOSTNAME CA_FILE USER PASSWORD
    python vulnerable_clients.py ignoring HOST PORT SERVER_HOSTNAME CA_FILE USER PASSWORD
    python vulnerable_clients.py ignoring-imap HOST PORT SERVER_HOSTNAME CA_FILE USER PASSWORD
    python vulnerable_clients.py retrying HOST PORT SERVER_HOSTNAME CA_FILE USER PASSWORD

* ``fallback`` uses STARTTLS when it works and carries on in clear when it is missing or refused: it sends
  ``AUTH PLAIN`` and the message anyway (the STARTTLS-stripping victim).
* ``buffering`` reads the server with a buffer of its own and keeps what it buffered before the TLS handshake:
  lines a network injected after ``220 Ready to start TLS`` are taken as the answers to its commands inside TLS
  (the response-injection victim, like the clients of CVE-2011-0411's family).

* ``ignoring`` does STARTTLS and AUTH properly, then sends MAIL, RCPT, DATA and (where DATA got 354) the message
  without looking at the answers, and exits 0 whatever they were (the lost-mail victim of the fault cells).
* ``ignoring-imap`` upgrades with STARTTLS, logs in and selects INBOX, prints a refusal and exits 0 anyway (it
  ignores errors).
* ``retrying`` sends properly, and on any refusal reconnects at once and tries again, five times in all, then exits 1
  (the retry-storm victim: it reports the failure, but hammers the server for a permanent one).

All verify the certificate against CA_FILE. ``fallback`` and ``buffering`` exit 0 when the server accepted the
message, 1 otherwise; what they did goes to stderr.
"""

from __future__ import annotations

import base64
import contextlib
import smtplib
import socket
import ssl
import sys


def _message(user: str) -> str:
    return f"From: {user}\r\nTo: {user}\r\nSubject: vulnerable client\r\n\r\nhello\r\n"


def fallback(host: str, port: int, name: str, ca: str, user: str, password: str) -> int:
    smtp = smtplib.SMTP(timeout=10)
    smtp.connect(host, port)
    smtp._host = name  # the name STARTTLS verifies (the address dialled is the relay's)
    smtp.ehlo("vulnerable.client")
    try:
        smtp.starttls(context=ssl.create_default_context(cafile=ca))
        smtp.ehlo("vulnerable.client")
        print("STARTTLS worked", file=sys.stderr)
    except (smtplib.SMTPException, ssl.SSLError, OSError) as exc:
        print(f"STARTTLS failed ({exc}); carrying on in clear", file=sys.stderr)
    token = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
    code, text = smtp.docmd("AUTH", "PLAIN " + token)
    print(f"AUTH -> {code} {text!r}", file=sys.stderr)
    try:
        smtp.sendmail(user, [user], _message(user))
    except smtplib.SMTPException as exc:
        print(f"sending failed: {exc}", file=sys.stderr)
        return 1
    smtp.quit()
    return 0


class _Buffered:
    """A line reader that keeps its buffer across the STARTTLS upgrade (the bug)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock: socket.socket = sock
        self.buf = b""

    def reply(self) -> tuple[int, str]:
        lines = []
        while True:
            while b"\n" not in self.buf:
                chunk = self.sock.recv(4096)
                if not chunk:
                    raise ConnectionError("server closed")
                self.buf += chunk
            line, _, self.buf = self.buf.partition(b"\n")
            text = line.decode("latin-1").rstrip("\r")
            lines.append(text)
            if text[3:4] != "-":
                return int(text[:3]), "\n".join(lines)

    def send(self, text: str) -> None:
        self.sock.sendall(text.encode() + b"\r\n")


def buffering(host: str, port: int, name: str, ca: str, user: str, password: str) -> int:
    conn = _Buffered(socket.create_connection((host, port), timeout=10))
    conn.reply()
    conn.send("EHLO vulnerable.client")
    conn.reply()
    conn.send("STARTTLS")
    code, _ = conn.reply()
    if code != 220:
        print(f"STARTTLS refused ({code})", file=sys.stderr)
        return 1
    conn.sock = ssl.create_default_context(cafile=ca).wrap_socket(conn.sock, server_hostname=name)
    print(f"TLS up; {len(conn.buf)} bytes kept from before the handshake", file=sys.stderr)
    token = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
    ok = True
    for command in ("EHLO vulnerable.client", f"AUTH PLAIN {token}", f"MAIL FROM:<{user}>", f"RCPT TO:<{user}>"):
        conn.send(command)
        code, text = conn.reply()
        print(f"{command.split()[0]} -> {code} {text.splitlines()[0]!r}", file=sys.stderr)
        ok = ok and code < 400
    conn.send("QUIT")
    return 0 if ok else 1


def ignoring(host: str, port: int, name: str, ca: str, user: str, password: str) -> int:
    smtp = smtplib.SMTP(timeout=10)
    smtp.connect(host, port)
    smtp._host = name
    smtp.ehlo("careless.client")
    smtp.starttls(context=ssl.create_default_context(cafile=ca))
    smtp.ehlo("careless.client")
    smtp.login(user, password)
    for command in (f"MAIL FROM:<{user}>", f"RCPT TO:<{user}>", "DATA"):
        code, text = smtp.docmd(command)
        print(f"{command.split()[0]} -> {code} {text!r} (not checked)", file=sys.stderr)
    if code == 354:  # the message only goes where DATA was accepted; its fate is not checked either
        smtp.send((_message(user) + ".\r\n").encode())
        code, text = smtp.getreply()
        print(f"end of DATA -> {code} {text!r} (not checked)", file=sys.stderr)
    with contextlib.suppress(smtplib.SMTPException, OSError):
        smtp.quit()
    print("sent", file=sys.stderr)
    return 0


def ignoring_imap(host: str, port: int, name: str, ca: str, user: str, password: str) -> int:
    import imaplib

    imap = imaplib.IMAP4(host, port, timeout=10)
    imap.host = name  # the name STARTTLS verifies (the address dialled is the relay's)
    imap.starttls(ssl.create_default_context(cafile=ca))
    for step in (lambda: imap.login(user, password), lambda: imap.select("INBOX", readonly=True)):
        try:
            print(f"-> {step()!r}", file=sys.stderr)
        except imaplib.IMAP4.error as exc:
            print(f"refused ({exc}); carrying on", file=sys.stderr)
    with contextlib.suppress(imaplib.IMAP4.error, OSError):
        imap.logout()
    return 0


def retrying(host: str, port: int, name: str, ca: str, user: str, password: str) -> int:
    for attempt in range(1, 6):
        smtp = smtplib.SMTP(timeout=10)
        try:
            smtp.connect(host, port)
            smtp._host = name
            smtp.starttls(context=ssl.create_default_context(cafile=ca))
            smtp.login(user, password)
            smtp.sendmail(user, [user], _message(user))
            smtp.quit()
            return 0
        except (smtplib.SMTPException, OSError) as exc:
            print(f"attempt {attempt} failed ({exc}); again at once", file=sys.stderr)
            with contextlib.suppress(OSError):
                smtp.close()
    return 1


def main(argv: list[str]) -> int:
    kind, host, port, name, ca, user, password = argv
    kinds = {
        "fallback": fallback,
        "buffering": buffering,
        "ignoring": ignoring,
        "ignoring-imap": ignoring_imap,
        "retrying": retrying,
    }
    run = kinds[kind]
    try:
        return run(host, int(port), name, ca, user, password)
    except (OSError, smtplib.SMTPException, ValueError) as exc:
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
