"""A small mail client: the code under test in the README's examples.

``send_report`` mails the weekly report over SMTP the way a careful application does: TLS from the
first byte or STARTTLS (never plaintext), the certificate and the host name verified against the
trusted CA, then AUTH where the server offers it. It knows nothing of pytest-mailtls.

As a command (for ``mailtls certify --command`` and ``command_client``):
    python mailer.py HOST PORT starttls|implicit CA_FILE USER PASSWORD [CERT_FILE KEY_FILE]; exit status 0 when
    sent, else 1 and one line on stderr.
"""

from __future__ import annotations

import smtplib
import ssl
import sys
from email.message import EmailMessage

__all__ = ["send_report"]

#: The name this client gives in EHLO (without one, smtplib asks DNS for this machine's name).
HELO = "reports.mailtls.test"


def send_report(
    host: str,
    port: int,
    *,
    tls: str,
    cafile: str | None = None,
    user: str = "",
    password: str = "",
    certfile: str | None = None,
    keyfile: str | None = None,
    sender: str = "reports@mailtls.test",
    to: str = "team@mailtls.test",
    timeout: float = 10.0,
) -> None:
    """Send the weekly report to ``to`` through ``host:port``; ``tls`` is ``"implicit"`` or ``"starttls"``.

    ``certfile``/``keyfile``: a client certificate, for servers that require one (mutual TLS).

    Raises what smtplib and ssl raise: ``ssl.SSLCertVerificationError`` for a certificate that does not
    verify, ``smtplib.SMTPNotSupportedError`` when the server offers no STARTTLS, ...
    """
    context = ssl.create_default_context(cafile=cafile)  # verifies the chain and the host name
    if certfile:
        context.load_cert_chain(certfile, keyfile)
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = sender, to, "weekly report"
    message.set_content("All systems nominal.\n")
    if tls == "implicit":
        smtp: smtplib.SMTP = smtplib.SMTP_SSL(host, port, local_hostname=HELO, context=context, timeout=timeout)
    elif tls == "starttls":
        smtp = smtplib.SMTP(host, port, local_hostname=HELO, timeout=timeout)
    else:
        raise ValueError(f"tls={tls!r}: choose implicit or starttls")
    with smtp:
        if tls == "starttls":
            smtp.starttls(context=context)  # raises SMTPNotSupportedError when not offered: no plaintext fallback
        smtp.ehlo()
        if user and smtp.has_extn("auth"):
            smtp.login(user, password)
        smtp.send_message(message)


def main(argv: list[str]) -> int:
    host, port, mode, cafile, user, password, certfile, keyfile = [*argv, "", ""][:8]
    tls = "implicit" if mode == "implicit" else "starttls"
    try:
        send_report(host, int(port), tls=tls, cafile=cafile, user=user, password=password, certfile=certfile or None,
                    keyfile=keyfile or None)
    except (OSError, smtplib.SMTPException) as exc:
        print(f"mailer: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
