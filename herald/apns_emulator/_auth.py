"""Provider-token (JWT) authentication, as APNs does it for token-based auth."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeAlias

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from herald.apns_emulator._log import logger

#: A provider public key: PEM text/bytes or an already loaded key object.
PublicKeyLike: TypeAlias = str | bytes | ec.EllipticCurvePublicKey

#: Apple rejects provider tokens issued more than one hour ago.
DEFAULT_TOKEN_TTL = 3600.0
#: Tolerated clock skew for tokens whose ``iat`` lies slightly in the future.
CLOCK_SKEW = 60.0

# Apple's 403 reasons for provider tokens.
_MISSING = "MissingProviderToken"
_INVALID = "InvalidProviderToken"
_EXPIRED = "ExpiredProviderToken"


def generate_signing_key() -> tuple[str, str]:
    """Create a P-256 provider key pair like the ``.p8`` keys Apple hands out.

    Returns ``(private_pem, public_pem)``: the private key as unencrypted
    PKCS#8 PEM (the ``.p8`` format aioapns and others accept) and the public
    key as SubjectPublicKeyInfo PEM for :meth:`ApnsEmulator.add_key`.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    private_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode("ascii")
    public_pem = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode("ascii")
    )
    return private_pem, public_pem


def load_public_key(key: PublicKeyLike) -> ec.EllipticCurvePublicKey:
    """Load a provider public key, insisting on P-256 since ES256 needs exactly that."""
    if isinstance(key, str):
        key = key.encode("ascii")
    loaded = key if isinstance(key, ec.EllipticCurvePublicKey) else _load_pem(key)
    if loaded.curve.name == ec.SECP256R1.name:
        return loaded
    raise ValueError(f"provider keys must be P-256, got {loaded.curve.name}")


def _load_pem(data: bytes) -> ec.EllipticCurvePublicKey:
    loaded = serialization.load_pem_public_key(data)
    if isinstance(loaded, ec.EllipticCurvePublicKey):
        return loaded
    raise ValueError("provider keys must be elliptic-curve (P-256) public keys")


@dataclass(frozen=True)
class AuthResult:
    """Outcome of checking an ``authorization`` header.

    ``reason`` is ``None`` when the token is accepted, otherwise Apple's
    403 reason string.  ``key_id`` is the token's ``kid`` when it was legible.
    """

    reason: str | None
    key_id: str | None = None


@dataclass(frozen=True)
class _ProviderKey:
    team_id: str
    public_key: ec.EllipticCurvePublicKey


class ProviderTokenVerifier:
    """Checks ``authorization: bearer <JWT>`` headers against registered keys."""

    def __init__(self, token_ttl: float = DEFAULT_TOKEN_TTL) -> None:
        self._token_ttl = token_ttl
        self._keys: dict[str, _ProviderKey] = {}

    def add_key(self, key_id: str, team_id: str, public_key: PublicKeyLike) -> None:
        """Accept tokens with header ``kid=key_id`` and claim ``iss=team_id``."""
        self._keys[key_id] = _ProviderKey(team_id, load_public_key(public_key))

    def verify(self, authorization: str | None, now: float) -> AuthResult:
        """Return Apple's verdict on the header; never logs the token itself."""
        if not authorization:
            return AuthResult(_MISSING)
        scheme, _, token = authorization.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return AuthResult(_INVALID)
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError:
            logger.info("Rejected provider token: not a JWT")
            return AuthResult(_INVALID)
        kid = header.get("kid")
        if not isinstance(kid, str):
            logger.info("Rejected provider token: no kid in header")
            return AuthResult(_INVALID)
        # Checked here (and pinned again in decode) so a token announcing
        # another algorithm is refused before any key material is involved.
        if header.get("alg") != "ES256":
            logger.info("Rejected provider token for kid %s: alg is not ES256", kid)
            return AuthResult(_INVALID, kid)
        provider = self._keys.get(kid)
        if provider is None:
            logger.info("Rejected provider token: unknown kid %s", kid)
            return AuthResult(_INVALID, kid)
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                provider.public_key,
                algorithms=["ES256"],
                options={"require": ["iss", "iat"]},
                leeway=CLOCK_SKEW,
            )
        except jwt.InvalidTokenError as exc:
            # Signature failures and malformed/future iat all land here; the
            # exception class names the cause without revealing the token.
            logger.info("Rejected provider token for kid %s: %s", kid, type(exc).__name__)
            return AuthResult(_INVALID, kid)
        if claims.get("iss") != provider.team_id:
            logger.info("Rejected provider token for kid %s: wrong team", kid)
            return AuthResult(_INVALID, kid)
        # Expiry is judged only after the signature checked out, so a forged
        # old token reports InvalidProviderToken like Apple does.
        if now - float(claims["iat"]) > self._token_ttl:
            logger.info(
                "Rejected provider token for kid %s: older than %ss",
                kid,
                self._token_ttl,
            )
            return AuthResult(_EXPIRED, kid)
        return AuthResult(None, kid)
