"""The HTTP side of `turnout alert-receiver`: a Starlette app served by uvicorn, with the limits a webhook
endpoint needs (the translation itself is `turnout.alert_receiver.AlertReceiver`).

    POST /alertmanager (or /)   401 no/wrong bearer token · 413 body over `max_body` · 408 body not received
                                within `read_timeout` · then the receiver's 200 / 400 / 502
    GET  /-/healthy, /-/ready   200 {"status": "ok"} (nothing more: it needs no token)
    anything else               404 (405 for a wrong method)

uvicorn (h11) already refuses a malformed or negative Content-Length with 400 before the app runs, and
bounds a request head (16 KiB). On top of it: the body is counted while it streams (chunked included) and
refused at the first byte over the limit; a request head must arrive within `read_timeout` (uvicorn has no
such deadline, so a client trickling a head would hold its connection for ever); at most
`max_connections` connections are served at once (uvicorn's `limit_concurrency`: a request on one more is
answered 503, which Alertmanager retries); idle keep-alive connections close after `keep_alive` seconds.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import socket
import threading
from collections.abc import Mapping
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass

import anyio
import h11
import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from uvicorn.protocols.http.h11_impl import H11Protocol

from turnout.alert_receiver import AlertReceiver

__all__ = ["AlertServer", "Limits", "create_app"]

log = logging.getLogger("turnout.alert_receiver")


@dataclass(frozen=True)
class Limits:
    """What one client may cost the receiver. Alertmanager's bodies are a few KiB and arrive at once."""

    max_body: int = 1 << 20  # bytes of one webhook body
    read_timeout: float = 10.0  # seconds for a request's head, and again for its body
    keep_alive: float = 5.0  # seconds an idle keep-alive connection stays open
    max_connections: int = 64  # connections served at once (idle ones too); a request on one more gets 503


class _Refused(Exception):
    def __init__(self, status: int, error: str):
        self.status, self.error = status, error


def _answer(status: int, body: dict, *, close: bool = False, headers: Mapping[str, str] | None = None) -> JSONResponse:
    # "Connection: close" when the request body was not read to its end: the connection cannot be reused.
    return JSONResponse(body, status, headers={**(headers or {}), **({"Connection": "close"} if close else {})})


async def _read_body(request: Request, limits: Limits) -> bytes:
    """The body, counted as it streams; _Refused(413) at the first byte over the limit, (408) when it is
    not all there within the read timeout, (400) when the client went away."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limits.max_body:
        raise _Refused(413, f"body larger than {limits.max_body} bytes")
    body = bytearray()
    try:
        with anyio.fail_after(limits.read_timeout):
            async for chunk in request.stream():
                body += chunk
                if len(body) > limits.max_body:
                    raise _Refused(413, f"body larger than {limits.max_body} bytes")
    except TimeoutError:
        raise _Refused(408, f"body not received within {limits.read_timeout:g} s") from None
    except ClientDisconnect:
        raise _Refused(400, "the client closed the connection before sending the whole body") from None
    return bytes(body)


def create_app(receiver: AlertReceiver, limits: Limits = Limits(), executor: Executor | None = None) -> Starlette:
    """The ASGI app: bearer token, body limit and read timeout, then `receiver.handle` in a worker thread
    (of `executor` when given: `AlertServer` owns one so that stopping it leaves no thread behind)."""

    async def alertmanager(request: Request) -> JSONResponse:
        authorization = request.headers.get("authorization")
        authenticated = receiver.authenticated(authorization)
        if receiver.requires_token and not authenticated:
            client = request.client.host if request.client else "?"
            log.warning("refused a webhook call from %s: %s bearer token", client, "wrong" if authorization else "no")
            # Checked before the body is read: an unauthenticated caller costs no more than its head.
            return _answer(
                401,
                {"error": "missing or wrong bearer token"},
                close=True,
                headers={"WWW-Authenticate": 'Bearer realm="turnout alert-receiver"'},
            )
        try:
            body = await _read_body(request, limits)
        except _Refused as r:
            log.warning("refused a webhook call: %s", r.error)
            return _answer(r.status, {"error": r.error}, close=True)
        # The receiver is blocking (it posts to Prefect with httpx): keep it off the event loop.
        handle = functools.partial(receiver.handle, body, authenticated=authenticated)
        status, answer = await asyncio.get_running_loop().run_in_executor(executor, handle)  # None: the loop's own
        return _answer(status, answer)

    async def healthy(request: Request) -> JSONResponse:
        return _answer(200, {"status": "ok"})

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, HTTPException)  # registered for HTTPException only (below)
        return _answer(exc.status_code, {"error": "POST alerts to /alertmanager"}, headers=exc.headers)

    return Starlette(
        routes=[Route(path, alertmanager, methods=["POST"]) for path in ("/", "/alertmanager", "/alertmanager/")]
        + [Route(path, healthy, methods=["GET"]) for path in ("/-/healthy", "/-/ready")],
        exception_handlers={HTTPException: http_error},
    )


class _Protocol(H11Protocol):
    """uvicorn's h11 protocol plus a deadline for each request head (`head_timeout`, set per server).

    uvicorn closes idle keep-alive connections but waits for ever on a head that is never finished: a slow
    loris holds its connection, and with `limit_concurrency` enough of them get every genuine request 503.
    """

    head_timeout: float = 10.0
    _head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._watch_head()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._watch_head()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._watch_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_timer()
        super().connection_lost(exc)

    def _watch_head(self) -> None:
        waiting = self.conn.their_state is h11.IDLE and not self.transport.is_closing()
        if not waiting:
            self._stop_head_timer()
        elif self._head_timer is None:
            self._head_timer = self.loop.call_later(self.head_timeout, self._head_timed_out)

    def _stop_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.transport.close()


class AlertServer:
    """`receiver` served on `listen` (HOST, PORT; port 0 picks a free one) with `limits`.

    The socket is bound at construction (an OSError there means nothing started). `serve()` runs in the
    calling thread until SIGINT/SIGTERM (the CLI); `start()` runs it in a thread and `stop()` ends it and
    closes the receiver, waiting for the thread (tests; also a context manager).
    """

    def __init__(self, receiver: AlertReceiver, listen: tuple[str, int], limits: Limits = Limits()):
        self.receiver, self.limits = receiver, limits
        host, port = listen
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._socket = socket.create_server((host, port), family=family, backlog=512)
        protocol = type("_AlertProtocol", (_Protocol,), {"head_timeout": limits.read_timeout})
        # Its own threads for the blocking receiver, joined by `stop()` (a loop's default executor outlives it).
        self._executor = ThreadPoolExecutor(max_workers=limits.max_connections, thread_name_prefix="turnout-alert")
        config = uvicorn.Config(
            create_app(receiver, limits, self._executor),
            http=protocol,
            lifespan="off",
            log_config=None,
            log_level="warning",
            access_log=False,  # it would log the raw request path; turnout logs what matters, escaped
            proxy_headers=False,
            server_header=False,
            # uvicorn serves a request when fewer than `limit_concurrency` connections are open, itself included
            limit_concurrency=limits.max_connections + 1,
            timeout_keep_alive=limits.keep_alive,  # type: ignore[arg-type]  # uvicorn takes a float here too
            # a request still reading its body when asked to stop gets at most one more read timeout
            timeout_graceful_shutdown=int(limits.read_timeout) + 1,
        )
        self._server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        """The (host, port) actually listened on."""
        host, port = self._socket.getsockname()[:2]
        return host, port

    def serve(self) -> None:
        """Serve in this thread until SIGINT/SIGTERM (from the main thread) or `stop()`; then close the receiver."""
        try:
            self._server.run(sockets=[self._socket])
        finally:
            self._socket.close()
            self._executor.shutdown(wait=True)
            self.receiver.close()

    def start(self) -> AlertServer:
        """Serve in a background thread; return once it accepts connections."""
        self._thread = threading.Thread(target=self.serve, name="turnout-alert-server", daemon=True)
        self._thread.start()
        while not self._server.started:
            if not self._thread.is_alive():
                raise RuntimeError("the alert server stopped while starting (see the log)")
            self._thread.join(0.02)
        return self

    def stop(self, timeout: float | None = None) -> None:
        """Stop serving (open requests get up to one read timeout to finish) and wait for the thread."""
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout if timeout is not None else self.limits.read_timeout + 10)
            if self._thread.is_alive():
                raise RuntimeError("the alert server did not stop")
            self._thread = None
        else:
            self._socket.close()
            self._executor.shutdown(wait=True)
            self.receiver.close()

    def __enter__(self) -> AlertServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
