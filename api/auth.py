"""JWT authentication: pinned algorithms, required claims and audience, bounded lifetime, scopes."""

from __future__ import annotations

import time
from dataclasses import dataclass

import jwt
from aiohttp import web

from api.jwks import JwksKeys
from api.problems import Problem
from engine.settings import DEV_JWT_SECRET, ConfigError, Settings

SCOPE_WRITE = "notifications:write"
"""May send notifications to any user."""
SCOPE_ADMIN = "admin"
"""May read any user's data and global stats."""


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: ``sub`` of the token and its scopes."""

    subject: str
    scopes: frozenset[str]
    expires_at: float = 0.0
    """``exp`` of the token (Unix seconds): a WebSocket is closed then."""

    def has(self, scope: str) -> bool:
        """Whether the token carries ``scope`` (``admin`` implies every scope)."""
        return scope in self.scopes or SCOPE_ADMIN in self.scopes


def refuse_dev_defaults(settings: Settings) -> None:
    """``ConfigError`` unless a production role has a key of its own (every role but ``herald dev``).

    The dev secret is in the source code: anyone could sign an admin token with it. Dev mode
    (the unauthenticated token endpoint) is switched on by ``herald dev`` alone.
    """
    if settings.dev_mode:
        raise ConfigError("HERALD_DEV_MODE is only for `herald dev`; unset it for this role")
    if any(a.startswith("HS") for a in settings.jwt_algorithms) and settings.jwt_secret == DEV_JWT_SECRET:
        raise ConfigError(
            "HERALD_JWT_SECRET is not set (the built-in dev secret works only under `herald dev`): set 32+ random"
            " characters, or HERALD_JWT_ALGORITHMS=RS256 with HERALD_JWT_PUBLIC_KEY or HERALD_JWT_JWKS_URL"
        )
    if not any(a.startswith("HS") for a in settings.jwt_algorithms) and not (
        settings.jwt_public_key or settings.jwt_jwks_url
    ):
        raise ConfigError(
            f"HERALD_JWT_ALGORITHMS={','.join(settings.jwt_algorithms)}"
            " needs HERALD_JWT_PUBLIC_KEY or HERALD_JWT_JWKS_URL"
        )


class TokenVerifier:
    """Verifies bearer tokens against the configured keys and pinned algorithms.

    Required claims: ``sub``, ``iss``, ``aud``, ``iat`` and ``exp``, with ``exp - iat`` at most
    ``HERALD_JWT_MAX_LIFETIME_SECONDS``. RS256/ES256 keys come from ``HERALD_JWT_PUBLIC_KEY``
    and/or the provider's JWKS (by the token's ``kid``); ``start`` loads the JWKS keys.
    """

    def __init__(self, settings: Settings) -> None:
        self._algorithms = frozenset(settings.jwt_algorithms)
        self._secret = settings.jwt_secret
        self._public_key = settings.jwt_public_key
        self._issuer = settings.jwt_issuer
        self._audience = settings.jwt_audience
        self._max_lifetime = settings.jwt_max_lifetime_seconds
        self._jwks = (
            JwksKeys(settings.jwt_jwks_url, settings.jwt_jwks_refresh_seconds) if settings.jwt_jwks_url else None
        )

    async def start(self) -> None:
        """Load the JWKS keys (if configured); raises when the provider cannot be reached."""
        if self._jwks is not None:
            await self._jwks.start()

    async def stop(self) -> None:
        """Stop refreshing the JWKS keys."""
        if self._jwks is not None:
            await self._jwks.stop()

    def _key(self, algorithm: str, header: dict[str, object]) -> str | jwt.PyJWK:
        # One key per algorithm family: an HS token is never checked against a public key
        # (nor an RS/ES token against the secret), which rules out algorithm confusion.
        if algorithm.startswith("HS"):
            return self._secret
        kid = header.get("kid")
        if self._jwks is not None and isinstance(kid, str) and kid:
            jwk = self._jwks.get(kid)
            if jwk is not None:
                if jwk.algorithm_name != algorithm:
                    raise Problem(401, "Unauthorized", f"invalid token: key {kid!r} is not a {algorithm} key")
                return jwk
            if not self._public_key:
                raise Problem(401, "Unauthorized", f"invalid token: unknown key id {kid!r}")
        if not self._public_key:
            raise Problem(401, "Unauthorized", "invalid token: no key id ('kid') in the header")
        return self._public_key

    def verify(self, token: str) -> Principal:
        """The principal of a valid token; ``Problem(401)`` otherwise (reason, never the token)."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise Problem(401, "Unauthorized", f"invalid token: {exc}") from None
        algorithm = header.get("alg")
        if not isinstance(algorithm, str) or algorithm not in self._algorithms:
            raise Problem(401, "Unauthorized", f"invalid token: algorithm {algorithm!r} is not accepted")
        key = self._key(algorithm, header)
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                issuer=self._issuer,
                audience=self._audience,
                options={"require": ["exp", "iat", "sub", "iss", "aud"]},
            )
        except jwt.ExpiredSignatureError:
            raise Problem(401, "Unauthorized", "token expired") from None
        except jwt.PyJWTError as exc:  # InvalidTokenError, and InvalidKeyError for a key of the wrong kind
            raise Problem(401, "Unauthorized", f"invalid token: {exc}") from None
        # pyjwt has checked that both are integers (and iat not in the future).
        if int(claims["exp"]) - int(claims["iat"]) > self._max_lifetime:
            raise Problem(401, "Unauthorized", f"invalid token: lifetime (exp - iat) over {self._max_lifetime} seconds")
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject:
            raise Problem(401, "Unauthorized", "invalid token: empty subject")
        raw_scope = claims.get("scope", "")
        scopes = frozenset(raw_scope.split()) if isinstance(raw_scope, str) else frozenset()
        return Principal(subject=subject, scopes=scopes, expires_at=float(claims["exp"]))

    def from_request(self, request: web.Request) -> Principal:
        """Principal of a REST request: ``Authorization: Bearer`` only.

        A token in the URL ends up in access logs, browser history, ``Referer`` headers and
        pagination links, so ``?token=`` is refused here (it is for WebSockets only).
        """
        if "token" in request.query:
            raise Problem(
                400,
                "Bad Request",
                "a token in the URL (?token=) is accepted only on /ws/notifications; send 'Authorization: Bearer'",
            )
        return self._from_header(request)

    def from_websocket(self, request: web.Request) -> Principal:
        """Principal of a WebSocket upgrade: the header, or ``?token=`` (browsers cannot set headers there)."""
        if request.headers.get("Authorization"):
            return self._from_header(request)
        token = request.query.get("token", "")
        if not token:
            raise Problem(401, "Unauthorized", "missing bearer token")
        return self.verify(token)

    def _from_header(self, request: web.Request) -> Principal:
        header = request.headers.get("Authorization", "")
        if not header:
            raise Problem(401, "Unauthorized", "missing bearer token")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Problem(401, "Unauthorized", "expected 'Authorization: Bearer <token>'")
        return self.verify(token.strip())


def mint_token(settings: Settings, subject: str, *, scopes: tuple[str, ...] = (), ttl: int | None = None) -> str:
    """A token for ``subject`` signed with the configured HS secret (dev and tooling).

    ``ValueError`` without an HS algorithm, or for a lifetime over ``HERALD_JWT_MAX_LIFETIME_SECONDS``.
    """
    algorithm = next((a for a in settings.jwt_algorithms if a.startswith("HS")), None)
    if algorithm is None:
        raise ValueError("token minting needs an HS* algorithm in HERALD_JWT_ALGORITHMS and HERALD_JWT_SECRET")
    lifetime = ttl if ttl is not None else settings.token_ttl_seconds
    if not 0 < lifetime <= settings.jwt_max_lifetime_seconds:
        raise ValueError(f"token lifetime must be 1 to {settings.jwt_max_lifetime_seconds} seconds")
    now = int(time.time())
    claims: dict[str, object] = {
        "sub": subject,
        "iss": settings.jwt_issuer,
        "aud": settings.jwt_audience,
        "iat": now,
        "exp": now + lifetime,
    }
    if scopes:
        claims["scope"] = " ".join(scopes)
    return jwt.encode(claims, settings.jwt_secret, algorithm=algorithm)
