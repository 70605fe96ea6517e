"""Who may send requests. Before any route, ``RequestGuard`` refuses what a web page could send: a
Host that is not this server's (DNS rebinding), a browser Origin not allowed by
``--allowed-origins``, and a POST whose body is not declared JSON (a "simple" request, which a
browser sends cross-origin without asking first)."""
from __future__ import annotations

import logging
from dataclasses import dataclass

from fastapi.responses import JSONResponse
from starlette.datastructures import Headers

from .protocol import APIError

log = logging.getLogger("uvicorn.error")


LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
WILDCARD_BINDS = ("", "0.0.0.0", "::")


def host_name(host: str) -> str:
    """A Host header's (or an address's) name: lower case, without its port or IPv6 brackets."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def origin_name(origin: str) -> str:
    """An origin as browsers send it: scheme://host[:port], lower case, no trailing slash."""
    return origin.strip().lower().rstrip("/")


@dataclass(frozen=True)
class Access:
    """Who may send requests: host names (Host headers) and browser origins; None allows any."""
    hosts: frozenset[str] | None
    origins: frozenset[str] | None

    @classmethod
    def of(cls, bound: str, allowed_hosts=(), allowed_origins=()) -> "Access":
        """The loopback names, the bound address (unless it binds every address) and the lists given ('*': any)."""
        hosts = {*LOOPBACK_NAMES, *(() if host_name(bound) in WILDCARD_BINDS else (host_name(bound),)),
                 *map(host_name, allowed_hosts)}
        origins = set(map(origin_name, allowed_origins))
        return cls(None if "*" in hosts else frozenset(hosts), None if "*" in origins else frozenset(origins))

    def refusal(self, method: str, headers: Headers) -> APIError | None:
        """Why a request is refused before any route, or None."""
        host = headers.get("host")
        if host is not None and self.hosts is not None and host_name(host) not in self.hosts:
            return APIError(403, f"the Host {host_name(host)!r} is not this server's (a guard against DNS rebinding); "
                                 f"start it with --allowed-hosts {host_name(host)} to allow it", "host_not_allowed")
        origin = headers.get("origin")
        if origin is not None and self.origins is not None and origin_name(origin) not in self.origins:
            return APIError(403, f"requests from the browser origin {origin!r} are not allowed; start the server "
                                 f"with --allowed-origins {origin} to allow them", "origin_not_allowed")
        declared = headers.get("content-type", "").split(";")[0].strip().lower()
        if method == "POST" and declared != "application/json":
            return APIError(415, f"the body must be JSON, sent with Content-Type: application/json, not "
                                 f"{declared or 'no Content-Type'}", "unsupported_media_type")
        return None


class RequestGuard:
    """ASGI middleware, outermost: a refused request gets its error object and reaches nothing else."""

    def __init__(self, app, access: Access):
        self.app, self.access = app, access

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and (refused := self.access.refusal(scope["method"], Headers(scope=scope))):
            log.info("refused %s %s: %s", scope["method"], scope["path"], refused.message)
            await JSONResponse(refused.body(), refused.status)(scope, receive, send)
            return
        await self.app(scope, receive, send)
