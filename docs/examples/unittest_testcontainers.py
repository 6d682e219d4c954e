"""unittest with pytest-mailtls's testcontainers-style API: real Postfix, no pytest needed.

    python -m unittest docs/examples/unittest_testcontainers.py
"""

from __future__ import annotations

import smtplib
import ssl
import unittest

from pytest_mailtls.testcontainers import PostfixContainer


class SubmissionTest(unittest.TestCase):
    postfix: PostfixContainer

    @classmethod
    def setUpClass(cls) -> None:
        # The modern and legacy submission cells with a valid certificate and AUTH after STARTTLS.
        cls.postfix = PostfixContainer(service="submission", mode="starttls", cert="valid", auth="default",
                                       policy=["modern", "legacy"]).start()  # fmt: skip

    @classmethod
    def tearDownClass(cls) -> None:
        cls.postfix.stop()

    def test_sends_over_starttls(self) -> None:
        [cell] = self.postfix.find(policy="modern")
        with smtplib.SMTP(cell.host, cell.port, local_hostname="client.mailtls.test", timeout=10) as smtp:
            smtp.starttls(context=ssl.create_default_context(cafile=self.postfix.ca_file))
            smtp.login(cell.username, cell.password)
            smtp.sendmail(cell.address, [cell.address], b"Subject: hello\r\n\r\nfrom unittest\r\n")
        [message] = cell.messages(count=1)
        self.assertEqual(message["Subject"], "hello")

    def test_testcontainers_conventions(self) -> None:
        self.assertEqual(self.postfix.get_container_host_ip(), "127.0.0.1")
        port = self.postfix.get_exposed_port(587)  # the first submission cell
        self.assertIn(port, [cell.port for cell in self.postfix.endpoints])
        self.assertTrue(self.postfix.get_connection_url(587).startswith("smtp://"))


if __name__ == "__main__":
    unittest.main()
