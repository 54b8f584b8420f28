"""Who is calling: tokens -> users, checked in a server interceptor before a request is decoded.

`--tokens-file` holds one `NAME TOKEN [admin]` per line (# comments and blank lines allowed);
`--token T` is the one-user shorthand (user "default", admin). Without either, every caller
is the admin user "" (loopback only: server_main refuses to listen elsewhere without tokens).
Tokens are compared as SHA-256 digests with hmac.compare_digest against every known one, so
the time a check takes does not depend on how much of a token was right.
"""
from __future__ import annotations

import hashlib
import hmac
import re
import threading
from dataclasses import dataclass

import grpc

TOKEN_KEY, CLIENT_KEY = "x-djinn-token", "x-djinn-client"
_CLIENT_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
_NAME = re.compile(r"^[A-Za-z0-9._@-]{1,64}$")


@dataclass(frozen=True)
class Identity:
    user: str
    admin: bool
    client: str = ""            # the caller's x-djinn-client ("" = the user's anonymous client)

    @property
    def key(self) -> tuple[str, str]:
        return self.user, self.client

    def may_see(self, owner: str | None) -> bool:
        return owner is None or self.admin or owner == self.user


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


def load_tokens_file(path: str) -> list[tuple[str, str, bool]]:
    users, seen = [], set()
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            words = line.split("#", 1)[0].split()
            if not words:
                continue
            if len(words) not in (2, 3) or (len(words) == 3 and words[2] != "admin"):
                raise ValueError(f"{path}:{n}: expected 'NAME TOKEN [admin]', got {len(words)} words")
            name, token = words[0], words[1]
            if not _NAME.match(name):
                raise ValueError(f"{path}:{n}: user name '{name}' must be 1-64 of [A-Za-z0-9._@-]")
            if len(token) < 8:
                raise ValueError(f"{path}:{n}: the token of '{name}' is shorter than 8 characters")
            if token in seen:
                raise ValueError(f"{path}:{n}: the token of '{name}' is also another user's")
            seen.add(token)
            users.append((name, token, len(words) == 3))
    if not users:
        raise ValueError(f"{path}: no users (one 'NAME TOKEN [admin]' per line)")
    return users


class Users:
    def __init__(self, users: list[tuple[str, str, bool]]):
        self._known = [(_digest(tok), name, admin) for name, tok, admin in users]
        self.required = bool(users)
        self._lock = threading.Lock()
        self.failures = 0

    @classmethod
    def from_options(cls, token: str = "", tokens_file: str = "") -> "Users":
        if tokens_file:
            return cls(load_tokens_file(tokens_file))
        return cls([("default", token, True)] if token else [])

    def check(self, token: str | None) -> tuple[str, bool] | None:
        """(user, admin) for a valid token, else None. Every known digest is compared."""
        if not self.required:
            return "", True
        d = _digest(token or "")
        found = None
        for known, name, admin in self._known:
            if hmac.compare_digest(known, d):
                found = (name, admin)
        return found

    def refused(self) -> None:
        with self._lock:
            self.failures += 1

    def identify(self, metadata) -> Identity:
        """The caller of an already-admitted call (the interceptor checked the token)."""
        md = {k: v for k, v in (metadata or ()) if isinstance(v, str)}
        who = self.check(md.get(TOKEN_KEY))
        user, admin = who if who else ("", False)
        client = md.get(CLIENT_KEY, "")
        return Identity(user, admin, client if _CLIENT_ID.match(client or "") else "")


def _refusal(handler, message: str):
    """A handler of the same kind that refuses without reading the request bytes."""
    async def unary(request, context):
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    async def stream(request, context):
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)
        yield  # pragma: no cover - makes this an async generator

    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(stream)
    return grpc.unary_unary_rpc_method_handler(unary)


class AuthInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, users: Users):
        self.users = users

    async def intercept_service(self, continuation, details):
        handler = await continuation(details)
        if handler is None or not self.users.required:
            return handler
        md = {k: v for k, v in (details.invocation_metadata or ()) if isinstance(v, str)}
        token = md.get(TOKEN_KEY)
        if self.users.check(token) is None:
            self.users.refused()
            return _refusal(handler, "missing x-djinn-token" if not token else "wrong x-djinn-token")
        return handler
