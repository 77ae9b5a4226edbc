"""Who is calling the server: user JWTs (verified with PyJWT) and the admin key.

- A user token is verified against the provider configured at start (issuer, audience,
  expiry, signature; an HS256 secret, a PEM public key, or a JWKS file). It must have an
  `exp` claim, as Convex requires. Without a provider, every token is refused, as Convex
  does when no auth provider matches.
- The admin key is generated at start (or given), printed once and stored next to the store
  file with mode 0600; a PostgreSQL store keeps it in the database (`stored_admin_key`), so
  every `serve` process on it has the same one. It allows internal functions, and acting as
  any user.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hmac
import json
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import jwt

from kernel_ext.errors import AuthenticationError, ValidationError
from kernel_ext.functions.auth import AuthConfig, claims_of, decode_token, token_error_message
from kernel_ext.functions.context import identity_from_claims
from kernel_ext.sync.protocol import Identity

__all__ = [
    "AuthProvider",
    "ServerAuthenticator",
    "SharedSettings",
    "admin_key_path",
    "generate_admin_key",
    "parse_admin_header",
    "stored_admin_key",
    "write_admin_key",
]


@dataclass(frozen=True)
class AuthProvider:
    """How user tokens are verified: exactly one of `secret` (HS256), `public_key` (PEM, RS256
    or ES256) and `jwks` (a JSON Web Key Set, keys chosen by `kid`)."""

    issuer: str
    audience: str | None = None
    secret: str | None = None
    public_key: str | None = None
    jwks: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        given = [x for x in (self.secret, self.public_key, self.jwks) if x is not None]
        if len(given) != 1:
            raise ValidationError(
                "Configure user tokens with an issuer and exactly one of a secret, a public key "
                "file or a JWKS file"
            )

    @classmethod
    def from_files(
        cls,
        issuer: str,
        *,
        audience: str | None = None,
        secret: str | None = None,
        public_key_file: str | os.PathLike[str] | None = None,
        jwks_file: str | os.PathLike[str] | None = None,
    ) -> AuthProvider:
        """Build from command-line options, reading the key files.

        Raises:
            ValidationError: not exactly one key source, or an unreadable JWKS file.
            OSError: a file cannot be read.
        """
        public_key = None if public_key_file is None else Path(public_key_file).read_text()
        jwks = None
        if jwks_file is not None:
            try:
                jwks = json.loads(Path(jwks_file).read_text())
                jwt.PyJWKSet.from_dict(jwks)
            except (ValueError, jwt.PyJWKError) as exc:
                raise ValidationError(f"{jwks_file} is not a valid JWKS file: {exc}") from exc
        return cls(issuer, audience, secret, public_key, jwks)

    def verify(self, token: str) -> dict[str, Any]:
        """The claims of a valid token.

        Raises:
            AuthenticationError: the token is malformed, forged, expired, or for another
                issuer or audience.
        """
        try:
            if self.jwks is None:
                config = AuthConfig(self.issuer, self.secret, self.public_key, self.audience)
                return claims_of(token, config)
            return self._verify_with_jwks(token)
        except ValidationError as exc:
            raise AuthenticationError(str(exc)) from exc

    @functools.cached_property
    def _jwk_keys(self) -> list[jwt.PyJWK]:
        """The keys of `jwks`, parsed once."""
        return jwt.PyJWKSet.from_dict(dict(self.jwks or {})).keys

    def _verify_with_jwks(self, token: str) -> dict[str, Any]:
        try:
            kid = jwt.get_unverified_header(token).get("kid")
            keys = self._jwk_keys
        except jwt.PyJWTError as exc:
            raise AuthenticationError(token_error_message(exc)) from exc
        matching = [k for k in keys if kid is None or k.key_id == kid]
        if not matching:
            raise AuthenticationError(f"Invalid auth token: no key with kid {kid!r}")
        key = matching[0]
        return decode_token(
            token, key, [key.algorithm_name], issuer=self.issuer, audience=self.audience
        )


class ServerAuthenticator:
    """The server's `Authenticator` (see `kernel_ext.sync.protocol`).

    Args:
        admin_key: the key that grants admin rights.
        provider: how to verify user tokens; None refuses every token.
    """

    def __init__(self, admin_key: str, provider: AuthProvider | None = None) -> None:
        if not admin_key:
            raise ValidationError("The admin key must not be empty")
        self._admin_key = admin_key.encode("utf-8")
        self.provider = provider

    def authenticate_user(self, token: str) -> Identity:
        """The identity of a verified user token.

        Raises:
            AuthenticationError: no provider is configured, or the token is invalid.
        """
        if self.provider is None:
            raise AuthenticationError(
                "No auth provider is configured on this server (start it with --auth-issuer "
                "and a key), so the auth token cannot be verified"
            )
        claims = self.provider.verify(token)
        try:
            user = identity_from_claims(claims)
        except ValidationError as exc:
            raise AuthenticationError(f"Invalid auth token: {exc}") from exc
        exp = claims.get("exp")
        return Identity(user, expires_at=float(exp) if isinstance(exp, int | float) else None)

    def authenticate_admin(self, key: str, acting_as: Mapping[str, Any] | None) -> Identity:
        """Admin rights for the right key, acting as `acting_as` (a user identity with at
        least `subject` and `issuer`, as JS sends it) when given.

        Raises:
            AuthenticationError: the key is wrong or `acting_as` is not an identity.
        """
        if not hmac.compare_digest(key.encode("utf-8"), self._admin_key):
            raise AuthenticationError("The admin key is not valid for this server")
        if acting_as is None:
            return Identity(admin=True)
        subject, issuer = acting_as.get("subject"), acting_as.get("issuer")
        if not isinstance(subject, str) or not isinstance(issuer, str):
            raise AuthenticationError("An impersonated identity needs 'subject' and 'issuer'")
        user = {"tokenIdentifier": f"{issuer}|{subject}", **acting_as}
        return Identity(user, admin=True)

    def authenticate_header(self, value: str | None) -> Identity:
        """The identity of an HTTP `Authorization` header: `Bearer <JWT>`, or `Convex <admin
        key>[:<base64 JSON identity>]`; no header is anonymous.

        Raises:
            AuthenticationError: a refused token or key, or an unknown scheme.
        """
        if not value:
            return Identity()
        scheme, _, credentials = value.strip().partition(" ")
        if scheme.lower() == "bearer":
            return self.authenticate_user(credentials.strip())
        if scheme.lower() == "convex":
            key, acting_as = parse_admin_header(credentials.strip())
            return self.authenticate_admin(key, acting_as)
        raise AuthenticationError("The Authorization header must be 'Bearer <token>'")


def parse_admin_header(credentials: str) -> tuple[str, dict[str, Any] | None]:
    """Split `key[:<base64 JSON identity>]` (an admin acting as a user).

    Raises:
        AuthenticationError: the identity part is not base64 JSON of an object.
    """
    key, colon, encoded = credentials.partition(":")
    if not colon:
        return key, None
    try:
        acting_as = json.loads(base64.b64decode(encoded, validate=True))
    except (binascii.Error, ValueError) as exc:
        raise AuthenticationError("The identity after the admin key is not base64 JSON") from exc
    if not isinstance(acting_as, dict):
        raise AuthenticationError("The identity after the admin key must be a JSON object")
    return key, acting_as


def generate_admin_key() -> str:
    """A fresh random admin key (256 bits)."""
    return "admin-" + secrets.token_hex(32)


def admin_key_path(db_path: str | os.PathLike[str]) -> Path:
    """Where the admin key of the store at `db_path` is kept: `<db>.admin-key`."""
    path = Path(db_path)
    return path.with_name(path.name + ".admin-key")


def write_admin_key(path: Path, key: str) -> None:
    """Store `key` at `path`, readable by the owner only (mode 0600 from creation on)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # the file may have existed with a wider mode
        os.write(fd, (key + "\n").encode("ascii"))
    finally:
        os.close(fd)


class SharedSettings(Protocol):
    """What a shared store keeps for every process (`PostgresPersistence`)."""

    def setting_or_default(self, key: str, default: str) -> str: ...


#: The setting a shared store keeps its admin key in.
_ADMIN_KEY_SETTING = "admin_key"


def stored_admin_key(settings: SharedSettings, given: str | None, where: str) -> str:
    """The admin key a shared store keeps for every process serving it: the one it has, or
    `given` (else a fresh one) stored first if it has none (the first process decides).

    Args:
        settings: the store.
        given: the key the operator asked for (`serve --admin-key`), if any.
        where: the store, as messages name it (its password masked).

    Raises:
        AuthenticationError: `given` differs from the stored key (neither key is named).
    """
    stored = settings.setting_or_default(_ADMIN_KEY_SETTING, given or generate_admin_key())
    if given is not None and not hmac.compare_digest(stored.encode(), given.encode()):
        raise AuthenticationError(
            f"The store {where} has its own admin key, kept in the database and shared by "
            "every process serving it, and --admin-key differs from it: omit --admin-key to "
            "serve with the stored key (it is printed at start)"
        )
    return stored
