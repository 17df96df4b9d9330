"""JWT authentication: pinned algorithms, required claims, scopes for service tokens."""

from __future__ import annotations

import time
from dataclasses import dataclass

import jwt
from aiohttp import web

from api.problems import Problem
from engine.settings import Settings

SCOPE_WRITE = "notifications:write"
"""May send notifications to any user."""
SCOPE_ADMIN = "admin"
"""May read any user's data and global stats."""


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: ``sub`` of the token and its scopes."""

    subject: str
    scopes: frozenset[str]

    def has(self, scope: str) -> bool:
        """Whether the token carries ``scope`` (``admin`` implies every scope)."""
        return scope in self.scopes or SCOPE_ADMIN in self.scopes


class TokenVerifier:
    """Verifies bearer tokens against the configured key and pinned algorithms."""

    def __init__(self, settings: Settings) -> None:
        self._algorithms = list(settings.jwt_algorithms)
        # One key per algorithm family: an HS token is never checked against the public key
        # (nor an RS/ES token against the secret), which rules out algorithm confusion.
        self._keys = {
            alg: settings.jwt_secret if alg.startswith("HS") else settings.jwt_public_key for alg in self._algorithms
        }
        self._issuer = settings.jwt_issuer

    def verify(self, token: str) -> Principal:
        """The principal of a valid token; ``Problem(401)`` otherwise (reason, never the token)."""
        try:
            algorithm = jwt.get_unverified_header(token).get("alg")
        except jwt.PyJWTError as exc:
            raise Problem(401, "Unauthorized", f"invalid token: {exc}") from None
        key = self._keys.get(algorithm) if isinstance(algorithm, str) else None
        if not key or not isinstance(algorithm, str):
            raise Problem(401, "Unauthorized", f"invalid token: algorithm {algorithm!r} is not accepted")
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                issuer=self._issuer,
                options={"require": ["exp", "iat", "sub", "iss"]},
            )
        except jwt.ExpiredSignatureError:
            raise Problem(401, "Unauthorized", "token expired") from None
        except jwt.PyJWTError as exc:  # InvalidTokenError, and InvalidKeyError for a key of the wrong kind
            raise Problem(401, "Unauthorized", f"invalid token: {exc}") from None
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject:
            raise Problem(401, "Unauthorized", "invalid token: empty subject")
        raw_scope = claims.get("scope", "")
        scopes = frozenset(raw_scope.split()) if isinstance(raw_scope, str) else frozenset()
        return Principal(subject=subject, scopes=scopes)

    def from_request(self, request: web.Request) -> Principal:
        """Principal from ``Authorization: Bearer`` (or ``?token=`` for WebSockets)."""
        header = request.headers.get("Authorization", "")
        if header:
            scheme, _, token = header.partition(" ")
            if scheme.lower() != "bearer" or not token:
                raise Problem(401, "Unauthorized", "expected 'Authorization: Bearer <token>'")
            return self.verify(token.strip())
        token = request.query.get("token", "")
        if not token:
            raise Problem(401, "Unauthorized", "missing bearer token")
        return self.verify(token)


def mint_token(settings: Settings, subject: str, *, scopes: tuple[str, ...] = (), ttl: int | None = None) -> str:
    """A token for ``subject`` signed with the configured HS secret (dev and tooling)."""
    algorithm = next((a for a in settings.jwt_algorithms if a.startswith("HS")), None)
    if algorithm is None:
        raise Problem(400, "Bad Request", "token minting needs an HS* algorithm and a secret")
    now = int(time.time())
    claims = {
        "sub": subject,
        "iss": settings.jwt_issuer,
        "iat": now,
        "exp": now + (ttl if ttl is not None else settings.token_ttl_seconds),
    }
    if scopes:
        claims["scope"] = " ".join(scopes)
    return jwt.encode(claims, settings.jwt_secret, algorithm=algorithm)
