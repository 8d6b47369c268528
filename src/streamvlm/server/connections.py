"""Connections that send no request are closed: uvicorn's h11 protocol with a header deadline.

uvicorn closes an idle keep-alive connection after a response (`timeout_keep_alive`), but a
connection that never sends a complete request (an idle or a slow "slowloris" socket) is held
forever. `GuardedH11Protocol` gives every connection `header_timeout` seconds, from when it opens
and again after each response, to deliver its next request's headers; a WebSocket upgrade hands
the socket to the WebSocket protocol and leaves this one. It subclasses uvicorn's `H11Protocol`
(passed through the public `http=` setting of `uvicorn.Config`) and uses three of its
attributes, `cycle`, `transport` and `loop`; `tests/test_server.py` fails if they change meaning.
"""

import asyncio

from uvicorn.protocols.http.h11_impl import H11Protocol


class GuardedH11Protocol(H11Protocol):
    header_timeout = 10.0

    @classmethod
    def with_timeout(cls, seconds: float) -> type["GuardedH11Protocol"]:
        return type(cls.__name__, (cls,), {"header_timeout": seconds})

    def connection_made(self, transport: asyncio.Transport) -> None:
        super().connection_made(transport)
        self._arm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm()  # the next request on this keep-alive connection has the same deadline

    def _arm(self) -> None:
        waiting_on = self.cycle  # a new request replaces it
        self.loop.call_later(self.header_timeout, self._deadline, waiting_on)

    def _deadline(self, waiting_on) -> None:
        upgraded = self.transport.get_protocol() is not self
        if self.cycle is waiting_on and not upgraded and not self.transport.is_closing():
            self.transport.close()
