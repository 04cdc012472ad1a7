"""Request checks in front of every route (pure ASGI middleware, so bodies are never buffered).

1. **Body size**: a declared ``Content-Length`` over the limit is answered 413 before reading;
   a body that grows past it while streaming is cut off with 413 as well. Uploads get
   ``max_upload_mb``; every other route 1 MiB (prompts and exports are small).
2. **Token** (when the server has one): every request must carry it as
   ``Authorization: Bearer T``, an ``X-Ultrasam-Token`` header, the ``ultrasam_token`` cookie,
   or ``?token=T``; a page opened with ``?token=`` gets the cookie (HttpOnly, SameSite=Strict)
   so its scripts and images authenticate without the token in every URL.
3. **Host** (loopback server without token): the Host header must name the loopback
   interface; a page on another site that rebinds its DNS name to 127.0.0.1 is refused.
4. **Origin**: a state-changing request sent by a page of another origin is refused (403).
5. **Headers**: a Content-Security-Policy that allows only this server's own scripts, styles,
   images and connections (the page needs nothing else), no framing, no referrer.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Awaitable, Callable, MutableMapping
from http.cookies import CookieError, SimpleCookie
from typing import Any
from urllib.parse import parse_qs, urlsplit

from starlette.exceptions import HTTPException

from .settings import MIB, ServeSettings, is_loopback

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

COOKIE = "ultrasam_token"
SMALL_BODY = 1 * MIB
CSP = ("default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'; "
       "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; "
       "form-action 'self'")
_UNSAFE = {"POST", "PUT", "PATCH", "DELETE"}


class BodyTooLarge(HTTPException):
    """Raised from ``receive`` when a streamed body passes the limit. An HTTPException, so
    FastAPI's body parsing lets it through and it is answered as a 413 JSON error."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body is over the limit of {limit:,} bytes")


async def _json(send: Send, status: int, message: str,
                headers: list[tuple[bytes, bytes]] | None = None) -> None:
    body = json.dumps({"detail": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())] + (headers or [])})
    await send({"type": "http.response.body", "body": body})


def _header(scope: Scope, name: bytes) -> str | None:
    for k, v in scope.get("headers", []):
        if k.lower() == name:
            return v.decode("latin-1")
    return None


class Guard:
    """The checks above, wrapped around the FastAPI app."""

    def __init__(self, app: ASGIApp, settings: ServeSettings, upload_path: str) -> None:
        self.app = app
        self.settings = settings
        self.upload_path = upload_path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method = scope.get("method", "GET")
        refusal = self._refuse(scope, method)
        if refusal is not None:
            await _json(send, *refusal)
            return
        limit = (self.settings.max_upload_bytes if scope.get("path") == self.upload_path
                 else SMALL_BODY)
        declared = _header(scope, b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await _json(send, 413, f"request body of {int(declared):,} bytes is over the "
                                   f"limit of {limit:,} bytes")
            return
        started = False
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        extra = self._cookie_to_set(scope)

        async def send_with_headers(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = list(message.get("headers", []))
                headers += [(b"content-security-policy", CSP.encode()),
                            (b"x-content-type-options", b"nosniff"),
                            (b"x-frame-options", b"DENY"),
                            (b"referrer-policy", b"no-referrer")] + extra
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, counting_receive, send_with_headers)
        except BodyTooLarge:
            if not started:
                await _json(send, 413, f"request body is over the limit of {limit:,} bytes")

    # ------------------------------------------------------------------------- checks
    def _refuse(self, scope: Scope, method: str) -> tuple[int, str] | None:
        host = _header(scope, b"host") or ""
        if self.settings.token is None:
            hostname = urlsplit(f"//{host}").hostname or ""
            if not is_loopback(hostname):
                return (400, (f"this server answers on the loopback address only; Host "
                              f"{host!r} refused (DNS rebinding protection)"))
        elif not self._has_token(scope):
            return (401, ("missing or wrong token: open the URL printed by `ultrasam serve` "
                          "(it ends in ?token=...) or send 'Authorization: Bearer TOKEN'"))
        origin = _header(scope, b"origin")
        if (method in _UNSAFE and origin and origin != "null"
                and urlsplit(origin).netloc.lower() != host.lower()):
            return (403, f"cross-origin request from {origin} refused")
        return None

    def _has_token(self, scope: Scope) -> bool:
        token = self.settings.token
        assert token is not None
        candidates: list[str] = []
        auth = _header(scope, b"authorization")
        if auth and auth.lower().startswith("bearer "):
            candidates.append(auth[7:].strip())
        if (h := _header(scope, b"x-ultrasam-token")) is not None:
            candidates.append(h)
        if (c := _header(scope, b"cookie")) is not None:
            try:
                jar = SimpleCookie(c)
            except CookieError:  # a malformed cookie header counts as no cookie
                jar = SimpleCookie()
            if COOKIE in jar:
                candidates.append(jar[COOKIE].value)
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        candidates += query.get("token", [])
        return any(hmac.compare_digest(c.encode(), token.encode()) for c in candidates)

    def _cookie_to_set(self, scope: Scope) -> list[tuple[bytes, bytes]]:
        if self.settings.token is None or scope.get("path") != "/":
            return []
        if "token" not in parse_qs(scope.get("query_string", b"").decode("latin-1")):
            return []
        cookie = f"{COOKIE}={self.settings.token}; HttpOnly; SameSite=Strict; Path=/"
        return [(b"set-cookie", cookie.encode())]
