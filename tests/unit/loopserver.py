"""A tiny asyncio server on its own thread, for in-test responders (probe and verify tests)."""

from __future__ import annotations

import asyncio
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
