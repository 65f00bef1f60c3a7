"""Request limits in front of an HTTP scoring server: what MLflow's scoring server does not check.

MLflow's server parses any JSON body (a deeply nested one ends in a RecursionError and an HTTP
500 without a reason), casts JSON booleans and numeric strings to float32 and answers them, and
repeats the request in its error messages (a 50 MB body came back as a 50 MB error). This ASGI
middleware sits between the client and that app. Before the app reads a request to
``/invocations`` it refuses, with a 4xx and the reason:

- a body larger than ``max_body`` bytes (413), counted as it arrives;
- a content type other than JSON (415);
- JSON that is not ``{"inputs": ...}`` or ``{"instances": ...}`` holding numbers and nulls only
  (400: strings and booleans are not pixels);
- JSON nested deeper than ``max_depth`` levels (400).

Every error response it passes on is cut to ``max_error`` characters of message, without a
stack trace. The checks scan the raw bytes (no parse), so their cost stays linear and small.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np

Scope = dict[str, Any]
Message = dict[str, Any]
App = Callable[
    [Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]], Awaitable[None]
]

MAX_DEPTH = 8  # {"inputs": [N][C][H][W]} is 5 levels deep
MAX_ERROR = 1000
_ENVELOPE = re.compile(rb'\A\s*\{\s*"(inputs|instances)"\s*:')
_OPEN, _CLOSE = (ord("["), ord("{")), (ord("]"), ord("}"))


def json_problem(body: bytes, max_depth: int = MAX_DEPTH) -> str | None:
    """Why a JSON request body cannot be a batch of images, or None when it may be one."""
    if not _ENVELOPE.match(body):
        return 'send {"inputs": [[...image...], ...]} (or "instances"): a JSON object with one key'
    if body.count(b'"') != 2:  # the key's two quotes: any other string is not a pixel
        return 'the request holds text besides its "inputs" key; send numbers in [0, 1] (null for missing)'
    if b"true" in body or b"false" in body:
        return "the request holds booleans; send numbers in [0, 1]"
    raw = np.frombuffer(body, dtype=np.uint8)
    where = np.flatnonzero(np.isin(raw, (*_OPEN, *_CLOSE)))
    if len(where):
        step = np.where(np.isin(raw[where], _OPEN), 1, -1).astype(np.int32)
        depth = int(np.cumsum(step).max())
        if depth > max_depth:
            return (
                f"the request is nested {depth} levels deep; images are arrays of rank 4 at most "
                f"({max_depth} levels with the envelope)"
            )
    return None


def cap_error(body: bytes, limit: int = MAX_ERROR) -> bytes:
    """An error body with its message cut to ``limit`` characters and no stack trace."""
    try:
        doc = json.loads(body)
    except ValueError:
        doc = None
    if isinstance(doc, dict):
        doc.pop("stack_trace", None)
        msg = str(doc.get("message", ""))
        if len(msg) > limit:
            doc["message"] = f"{msg[:limit]}... ({len(msg) - limit:,} more characters not repeated)"
        return json.dumps(doc).encode()
    text = body.decode("utf-8", "replace")
    if len(text) > limit:
        text = f"{text[:limit]}... ({len(text) - limit:,} more characters not repeated)"
    return text.encode()


async def _reply(send: Callable[[Message], Awaitable[None]], status: int, message: str) -> None:
    code = {413: "REQUEST_LIMIT_EXCEEDED", 415: "BAD_REQUEST"}.get(status, "BAD_REQUEST")
    body = json.dumps({"error_code": code, "message": message}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body, "more_body": False})


class RequestLimits:
    """The ASGI middleware described in the module docstring."""

    def __init__(self, app: App, max_body: int, max_depth: int = MAX_DEPTH, max_error: int = MAX_ERROR):
        self.app, self.max_body, self.max_depth, self.max_error = app, max_body, max_depth, max_error

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        capped = self._capped(send)
        if scope.get("path") != "/invocations" or scope.get("method") != "POST":
            await self.app(scope, receive, capped)
            return
        headers = {k.lower(): v for k, v in scope.get("headers", [])}
        too_big = f"the request is larger than {self.max_body:,} bytes, the most this model takes; send fewer images"
        length = headers.get(b"content-length", b"")
        if length.isdigit() and int(length) > self.max_body:
            await _reply(send, 413, too_big)
            return
        kind = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
        if kind != b"application/json":
            await _reply(send, 415, 'send application/json: {"inputs": [[...image...], ...]}')
            return
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if len(body) > self.max_body:
                await _reply(send, 413, too_big)
                return
            if not message.get("more_body", False):
                break
        problem = json_problem(bytes(body), self.max_depth)
        if problem is not None:
            await _reply(send, 400, problem)
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()

        await self.app(scope, replay, capped)

    def _capped(self, send: Any) -> Callable[[Message], Awaitable[None]]:
        """``send`` with error bodies held back, cut by :func:`cap_error` and sent in one piece."""
        start: Message | None = None
        held = bytearray()

        async def capped(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start" and message["status"] >= 400:
                start = message
                return
            if message["type"] == "http.response.body" and start is not None:
                held.extend(message.get("body", b""))
                if message.get("more_body", False):
                    return
                body = cap_error(bytes(held), self.max_error)
                headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
                headers.append((b"content-length", str(len(body)).encode()))
                await send({**start, "headers": headers})
                await send({"type": "http.response.body", "body": body, "more_body": False})
                return
            await send(message)

        return capped
