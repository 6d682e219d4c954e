"""A tiny asyncio server on its own thread, for in-test responders (probe and verify tests)."""

from __future__ import annotations

import asyncio
import base64
import ssl
import threading


class LoopServer:
    """Serves ``self._session`` on 127.0.0.1 (port chosen by the OS) from an event loop thread.

    Subclasses set their own attributes, then call ``super().__init__(ssl_context)``; ``ssl_context``
    makes every connection implicit TLS.
    """

    port: int

    def __init__(self, ssl_context: ssl.SSLContext | None = None) -> None:
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(self.loop)
            start = asyncio.start_server(self._session, "127.0.0.1", 0, ssl=ssl_context)
            self.server = self.loop.run_until_complete(start)
            self.port = self.server.sockets[0].getsockname()[1]
            ready.set()
            self.loop.run_forever()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        ready.wait(5)

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        async def shutdown() -> None:
            self.server.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(shutdown(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


class LoginResponder(LoopServer):
    """A small STARTTLS IMAP or POP3 server whose one lie is chosen by the test.

    Honest by default for an ``auth: default`` cell: STARTTLS (STLS) offered, logins refused in clear
    (``LOGINDISABLED`` / ``-ERR [AUTH]``) and no SASL advertised before TLS; after TLS, ``AUTH=PLAIN
    AUTH=LOGIN`` (``SASL PLAIN LOGIN``) and the test user's password logs in. ``login_in_clear=True``
    makes it accept the password in clear while still advertising what an honest server would: the lie
    that only a login really attempted can show.
    """

    def __init__(
        self,
        protocol: str,
        tls: ssl.SSLContext,
        *,
        username: str,
        password: str,
        login_in_clear: bool = False,
    ) -> None:
        self.protocol, self.tls = protocol, tls
        self.username, self.password, self.login_in_clear = username, password, login_in_clear
        super().__init__(None)

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        state = {"tls": False}
        serve = self._imap if self.protocol == "imap" else self._pop3
        try:
            await serve(reader, writer, state)
        except (ConnectionError, ssl.SSLError, OSError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    def _may_login(self, state: dict[str, bool]) -> bool:
        return state["tls"] or self.login_in_clear

    def _good(self, username: str, password: str) -> bool:
        return (username, password) == (self.username, self.password)

    def _plain(self, b64: str) -> bool:
        try:
            _, user, password = base64.b64decode(b64).decode().split("\0")
        except ValueError:
            return False
        return self._good(user, password)

    async def _starttls(self, writer: asyncio.StreamWriter, state: dict[str, bool]) -> None:
        await writer.start_tls(self.tls)
        state["tls"] = True

    async def _imap(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, state: dict[str, bool]) -> None:
        writer.write(b"* OK ready\r\n")
        await writer.drain()
        while line := (await reader.readline()).decode().strip():
            tag, _, rest = line.partition(" ")
            command, _, args = rest.partition(" ")
            command = command.upper()
            if command == "CAPABILITY":
                caps = "AUTH=PLAIN AUTH=LOGIN" if state["tls"] else "STARTTLS LOGINDISABLED"
                writer.write(f"* CAPABILITY IMAP4rev1 {caps}\r\n{tag} OK done\r\n".encode())
            elif command == "STARTTLS" and not state["tls"]:
                writer.write(f"{tag} OK begin TLS\r\n".encode())
                await writer.drain()
                await self._starttls(writer, state)
                continue
            elif command == "LOGIN":
                user, _, password = args.partition(" ")
                if not self._may_login(state):
                    writer.write(f"{tag} NO [PRIVACYREQUIRED] Plaintext authentication disallowed\r\n".encode())
                elif self._good(user.strip('"'), password.strip('"')):
                    writer.write(f"{tag} OK logged in\r\n".encode())
                else:
                    writer.write(f"{tag} NO [AUTHENTICATIONFAILED] failed\r\n".encode())
            elif command == "AUTHENTICATE" and args.upper() == "PLAIN":
                if not self._may_login(state):
                    writer.write(f"{tag} NO [PRIVACYREQUIRED] Plaintext authentication disallowed\r\n".encode())
                else:
                    writer.write(b"+ \r\n")
                    await writer.drain()
                    ok = self._plain((await reader.readline()).decode().strip())
                    writer.write(f"{tag} {'OK logged in' if ok else 'NO failed'}\r\n".encode())
            elif command == "LOGOUT":
                writer.write(f"* BYE\r\n{tag} OK bye\r\n".encode())
                await writer.drain()
                return
            else:
                writer.write(f"{tag} BAD unknown\r\n".encode())
            await writer.drain()

    async def _pop3(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, state: dict[str, bool]) -> None:
        writer.write(b"+OK ready\r\n")
        await writer.drain()
        user = ""
        refuse = b"-ERR [AUTH] Plaintext authentication disallowed; issue STLS first\r\n"
        while line := (await reader.readline()).decode().strip():
            command, _, args = line.partition(" ")
            command = command.upper()
            if command == "CAPA":
                caps = "USER\r\nSASL PLAIN LOGIN" if state["tls"] else "STLS\r\nUSER"
                writer.write(f"+OK\r\n{caps}\r\n.\r\n".encode())
            elif command == "STLS" and not state["tls"]:
                writer.write(b"+OK begin TLS\r\n")
                await writer.drain()
                await self._starttls(writer, state)
                continue
            elif command == "USER":
                user = args
                writer.write(b"+OK\r\n" if self._may_login(state) else refuse)
            elif command == "PASS":
                if not self._may_login(state):
                    writer.write(refuse)
                else:
                    writer.write(b"+OK logged in\r\n" if self._good(user, args) else b"-ERR [AUTH] failed\r\n")
            elif command == "AUTH" and args.upper() == "PLAIN":
                if not self._may_login(state):
                    writer.write(refuse)
                else:
                    writer.write(b"+ \r\n")
                    await writer.drain()
                    ok = self._plain((await reader.readline()).decode().strip())
                    writer.write(b"+OK logged in\r\n" if ok else b"-ERR [AUTH] failed\r\n")
            elif command == "QUIT":
                writer.write(b"+OK bye\r\n")
                await writer.drain()
                return
            else:
                writer.write(b"-ERR unknown\r\n")
            await writer.drain()
