"""Bearer-token authentication, checked at the top of every RPC.

Three kinds of credentials (krakod.config.AuthConfig): agent join tokens for
AgentService, tenant API keys (each maps to one tenant) for GatewayService and
EventService, admin tokens for AdminService (an admin may also act on any
tenant through the gateway). With no credentials configured krakod runs open
(only allowed on loopback, or with --allow-unauthenticated).
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass

import grpc

from krakod.config import AuthConfig

DEFAULT_TENANT = "default"


@dataclass(frozen=True, slots=True)
class Principal:
    kind: str  # open | tenant | admin | agent
    tenant_id: str | None  # None: may act on every tenant

    @property
    def is_admin(self) -> bool:
        return self.tenant_id is None

    def may_see(self, tenant_id: str) -> bool:
        return self.tenant_id is None or self.tenant_id == tenant_id

    def tenant_for(self, requested: str) -> str:
        """The tenant a request acts on: the key's own, or the requested one for open/admin callers."""
        if self.tenant_id is not None:
            return self.tenant_id
        return requested or DEFAULT_TENANT


class AuthError(Exception):
    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def bearer_token(metadata: object) -> str | None:
    for key, value in metadata or ():  # type: ignore[attr-defined]
        if key == "authorization":
            text = value.decode() if isinstance(value, bytes) else str(value)
            scheme, _, token = text.partition(" ")
            if scheme.lower() == "bearer" and token:
                return token.strip()
            raise AuthError(grpc.StatusCode.UNAUTHENTICATED, "authorization metadata must be 'Bearer <token>'")
    return None


def _match(token: str, candidates: frozenset[str] | set[str]) -> bool:
    return any(hmac.compare_digest(token, c) for c in candidates)


class Authenticator:
    def __init__(self, config: AuthConfig) -> None:
        self.config = config

    def _token(self, context: grpc.aio.ServicerContext) -> str | None:
        return bearer_token(context.invocation_metadata())

    def agent(self, context: grpc.aio.ServicerContext) -> Principal:
        token = self._token(context)
        if not self.config.enabled:
            return Principal("open", None)
        if token is None:
            raise AuthError(grpc.StatusCode.UNAUTHENTICATED, "missing agent join token (authorization: Bearer ...)")
        if not self.config.agent_tokens or not _match(token, self.config.agent_tokens):
            raise AuthError(grpc.StatusCode.UNAUTHENTICATED, "invalid agent join token")
        return Principal("agent", None)

    def client(self, context: grpc.aio.ServicerContext) -> Principal:
        """A gateway/event caller: a tenant key or an admin token."""
        token = self._token(context)
        if not self.config.enabled:
            return Principal("open", None)
        if token is None:
            raise AuthError(grpc.StatusCode.UNAUTHENTICATED, "missing API key (authorization: Bearer <key>)")
        for key, tenant in self.config.tenant_keys.items():
            if hmac.compare_digest(token, key):
                return Principal("tenant", tenant)
        if _match(token, self.config.admin_tokens):
            return Principal("admin", None)
        raise AuthError(grpc.StatusCode.UNAUTHENTICATED, "invalid API key")

    def admin(self, context: grpc.aio.ServicerContext) -> Principal:
        token = self._token(context)
        if not self.config.enabled:
            return Principal("open", None)
        if token is None:
            raise AuthError(grpc.StatusCode.UNAUTHENTICATED, "missing admin token (authorization: Bearer ...)")
        if _match(token, self.config.admin_tokens):
            return Principal("admin", None)
        if token in self.config.tenant_keys:
            raise AuthError(grpc.StatusCode.PERMISSION_DENIED, "tenant API keys cannot use AdminService")
        raise AuthError(grpc.StatusCode.UNAUTHENTICATED, "invalid admin token")
