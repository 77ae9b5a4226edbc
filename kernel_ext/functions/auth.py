"""User tokens (JWTs): verification with PyJWT, development tokens, and where the Jupyter
server extension publishes its shared store's credentials.

Below both `client/` (embedded `set_auth`, `connect_jupyter`) and `sync/` (the server's
`AuthProvider`), so neither imports the other for it.

A verified token must carry `sub`, `iss` and `exp` (Convex refuses tokens that never
expire): a token without `exp` would stay valid forever once leaked.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import jwt

from kernel_ext.errors import ValidationError

__all__ = [
    "REQUIRED_CLAIMS",
    "AuthConfig",
    "claims_of",
    "decode_token",
    "jupyter_record_path",
    "make_dev_token",
    "token_error_message",
]


#: Claims a verified token must have.
REQUIRED_CLAIMS: Final = ["sub", "iss", "exp"]


@dataclass(frozen=True)
class AuthConfig:
    """How to verify tokens: the issuer, optional audience and an HS256 secret or a public key
    (PEM) for RS256/ES256."""

    issuer: str
    secret: str | None = None
    public_key: str | None = None
    audience: str | None = None

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> AuthConfig:
        """Build from `{"issuer", "secret" | "public_key", "audience"?}`."""
        unknown = set(data) - {"issuer", "secret", "public_key", "audience"}
        if unknown or "issuer" not in data or ("secret" in data) == ("public_key" in data):
            raise ValidationError(
                'auth= takes {"issuer": ..., "secret": ... or "public_key": ..., "audience": ...}'
            )
        return cls(**data)


def claims_of(token: str, config: AuthConfig | None) -> dict[str, Any]:
    """The claims of a token: verified (signature, issuer, audience, expiry) when `config` is
    given, else read as they are (the embedded store trusts its own process).

    Raises:
        ValidationError: the token is malformed, forged, expired or for another issuer.
    """
    if config is not None:
        key = config.secret if config.secret is not None else config.public_key
        assert key is not None  # AuthConfig.from_mapping requires one of them
        algorithms = ["HS256"] if config.secret is not None else ["RS256", "ES256"]
        return decode_token(token, key, algorithms, issuer=config.issuer, audience=config.audience)
    try:
        return dict(jwt.decode(token, options={"verify_signature": False}))
    except jwt.PyJWTError as exc:
        raise ValidationError(token_error_message(exc)) from exc


def decode_token(
    token: str, key: Any, algorithms: list[str], *, issuer: str, audience: str | None
) -> dict[str, Any]:
    """The claims of a token verified with `key` (a secret, a PEM public key or a `PyJWK`):
    its signature by one of `algorithms`, its issuer, its audience (when given), its expiry,
    and that it has the `REQUIRED_CLAIMS`.

    Raises:
        ValidationError: the token is malformed, forged, expired or for another issuer.
    """
    try:
        return dict(
            jwt.decode(
                token,
                key,
                algorithms=algorithms,
                issuer=issuer,
                audience=audience,
                options={"verify_aud": audience is not None, "require": REQUIRED_CLAIMS},
            )
        )
    except jwt.PyJWTError as exc:
        raise ValidationError(token_error_message(exc)) from exc


def token_error_message(exc: jwt.PyJWTError) -> str:
    """What is wrong with a refused token, and (for a missing expiry) how to fix it."""
    if isinstance(exc, jwt.MissingRequiredClaimError) and exc.claim == "exp":
        return (
            'Invalid auth token: it has no "exp" (expiry) claim. Tokens must expire, as '
            "Convex requires: issue it with an exp (make_dev_token sets one from ttl_s)"
        )
    return f"Invalid auth token: {exc}"


def make_dev_token(
    subject: str,
    *,
    secret: str,
    issuer: str,
    audience: str | None = None,
    ttl_s: float = 3600.0,
    extra_claims: Mapping[str, Any] | None = None,
    **claims: Any,
) -> str:
    """A signed HS256 token for development and tests: `sub`, `iss`, `iat`, `exp` (and
    `aud`), plus `claims` (and `extra_claims`, for names that are also this function's
    parameters, such as `secret`)."""
    now = int(time.time())
    payload: dict[str, Any] = {
        "sub": subject,
        "iss": issuer,
        "iat": now,
        "exp": now + int(ttl_s),
        **(extra_claims or {}),
        **claims,
    }
    if audience is not None:
        payload["aud"] = audience
    return jwt.encode(payload, secret, algorithm="HS256")


def jupyter_record_path(runtime_dir: str | os.PathLike[str], pid: int) -> Path:
    """Where the Jupyter server extension of process `pid` records its shared store (URL,
    store file, admin key file), beside Jupyter's own `jpserver-<pid>.json` in the runtime
    directory (readable by its user only). `kernel_ext.connect_jupyter()` reads it."""
    return Path(runtime_dir) / f"convex-notebook-{pid}.json"
