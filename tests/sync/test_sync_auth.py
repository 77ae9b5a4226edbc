"""Server-side identities: JWT verification (secret, public key, JWKS) and the admin key."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
import time

import jwt
import pytest
import sync_peers
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from kernel_ext.errors import AuthenticationError, ValidationError
from kernel_ext.functions.auth import AuthConfig, claims_of, make_dev_token
from kernel_ext.sync.auth import (
    AuthProvider,
    ServerAuthenticator,
    admin_key_path,
    generate_admin_key,
    parse_admin_header,
    write_admin_key,
)

SECRET = "a-secret-that-is-long-enough-for-hs256!"
ISS = "https://auth.test"


def rsa_key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def pem(private):
    return private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def token(key, alg, *, iss=ISS, aud=None, ttl=60, kid=None, **claims):
    now = int(time.time())
    payload = {"sub": "u1", "iss": iss, "iat": now, **claims}
    if ttl is not None:  # None: a token that never expires
        payload["exp"] = now + ttl
    if aud is not None:
        payload["aud"] = aud
    return jwt.encode(payload, key, algorithm=alg, headers={"kid": kid} if kid else None)


def test_no_provider_refuses_every_token():
    auth = ServerAuthenticator("k")
    with pytest.raises(AuthenticationError, match="No auth provider"):
        auth.authenticate_user(make_dev_token("u", secret=SECRET, issuer=ISS))


def test_hs256_secret_with_audience_and_expiry():
    auth = ServerAuthenticator("k", AuthProvider(ISS, audience="app", secret=SECRET))
    good = make_dev_token("ada", secret=SECRET, issuer=ISS, audience="app", email="a@x")
    identity = auth.authenticate_user(good)
    assert identity.user["tokenIdentifier"] == f"{ISS}|ada" and identity.user["email"] == "a@x"
    assert identity.expires_at is not None and identity.expires_at > time.time()
    assert not identity.admin
    for bad in (
        make_dev_token("ada", secret=SECRET, issuer=ISS),  # no audience
        make_dev_token("ada", secret=SECRET, issuer=ISS, audience="other"),
        make_dev_token("ada", secret=SECRET, issuer=ISS, audience="app", ttl_s=-5),
        make_dev_token("ada", secret=SECRET + "x", issuer=ISS, audience="app"),
        make_dev_token("ada", secret=SECRET, issuer="https://evil", audience="app"),
        "garbage",
    ):
        with pytest.raises(AuthenticationError):
            auth.authenticate_user(bad)


def test_public_key_file(tmp_path):
    private = rsa_key()
    (tmp_path / "key.pem").write_bytes(pem(private))
    provider = AuthProvider.from_files(ISS, public_key_file=tmp_path / "key.pem")
    auth = ServerAuthenticator("k", provider)
    assert auth.authenticate_user(token(private, "RS256")).user["subject"] == "u1"
    with pytest.raises(AuthenticationError):
        auth.authenticate_user(token(rsa_key(), "RS256"))
    # An HS256 token signed with the public key text must not pass (algorithm confusion).
    with pytest.raises(AuthenticationError):
        auth.authenticate_user(jwt.encode({"sub": "u1", "iss": ISS}, "x" * 40, algorithm="HS256"))


def test_jwks_file_chooses_the_key_by_kid(tmp_path):
    rsa_private, ec_private = rsa_key(), ec.generate_private_key(ec.SECP256R1())
    keys = []
    for kid, private, alg in (("r1", rsa_private, "RS256"), ("e1", ec_private, "ES256")):
        jwk = json.loads(jwt.algorithms.get_default_algorithms()[alg].to_jwk(private.public_key()))
        keys.append({**jwk, "kid": kid, "alg": alg, "use": "sig"})
    (tmp_path / "jwks.json").write_text(json.dumps({"keys": keys}))
    auth = ServerAuthenticator("k", AuthProvider.from_files(ISS, jwks_file=tmp_path / "jwks.json"))
    assert auth.authenticate_user(token(rsa_private, "RS256", kid="r1")).user["subject"] == "u1"
    assert auth.authenticate_user(token(ec_private, "ES256", kid="e1")).user["subject"] == "u1"
    with pytest.raises(AuthenticationError, match="kid"):
        auth.authenticate_user(token(rsa_private, "RS256", kid="unknown"))
    with pytest.raises(AuthenticationError):
        auth.authenticate_user(token(rsa_key(), "RS256", kid="r1"))
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValidationError):
        AuthProvider.from_files(ISS, jwks_file=tmp_path / "bad.json")


def test_provider_needs_exactly_one_key():
    with pytest.raises(ValidationError):
        AuthProvider(ISS)
    with pytest.raises(ValidationError):
        AuthProvider(ISS, secret="a", public_key="b")


def test_admin_key_and_headers():
    auth = ServerAuthenticator("admin-xyz")
    assert auth.authenticate_admin("admin-xyz", None).admin
    with pytest.raises(AuthenticationError):
        auth.authenticate_admin("admin-xy", None)
    acting = auth.authenticate_admin("admin-xyz", {"subject": "s", "issuer": "i", "name": "N"})
    assert acting.admin and acting.user == {
        "tokenIdentifier": "i|s",
        "subject": "s",
        "issuer": "i",
        "name": "N",
    }
    with pytest.raises(AuthenticationError):
        auth.authenticate_admin("admin-xyz", {"name": "no subject"})
    assert auth.authenticate_header(None).user is None
    assert auth.authenticate_header("convex admin-xyz").admin
    with pytest.raises(AuthenticationError):
        auth.authenticate_header("Basic dXNlcjpwdw==")
    with pytest.raises(AuthenticationError):
        parse_admin_header("key:!!!notbase64")
    with pytest.raises(AuthenticationError):
        parse_admin_header("key:WzFd")  # base64 of [1]
    with pytest.raises(ValidationError):
        ServerAuthenticator("")


def test_admin_key_file_is_private(tmp_path):
    key = generate_admin_key()
    assert len(key) > 40 and generate_admin_key() != key
    path = admin_key_path(tmp_path / "sub" / "store.db")
    assert path.name == "store.db.admin-key"
    path.parent.mkdir()
    path.write_text("old")
    path.chmod(0o644)
    write_admin_key(path, key)
    assert path.read_text() == key + "\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


# -- `python -m kernel_ext token` ----------------------------------------------------------


def _token_command(*args: str) -> subprocess.CompletedProcess[str]:
    """`python -m kernel_ext token ARGS...`"""
    return subprocess.run(
        [sys.executable, "-m", "kernel_ext", "token", *args], capture_output=True, text=True
    )


def test_the_token_command_mints_a_token_the_server_accepts(server_factory):
    issuer, secret = sync_peers.ISSUER, sync_peers.SECRET
    minted = _token_command(
        "ada",
        *("--secret", secret, "--issuer", issuer),
        *("--claim", "email=ada@example.com", "--claim", 'roles=["admin"]'),
    )
    assert minted.returncode == 0, minted.stderr
    token = minted.stdout.strip()
    server = server_factory("--auth-issuer", issuer, "--auth-secret", secret)
    client = sync_peers.RawClient(server.url).connect()
    client.send({"type": "Authenticate", "baseVersion": 0, "tokenType": "User", "value": token})
    client.identity = 1
    transition = client.add(0, "who:ami")
    identity = transition["modifications"][0]["value"]
    assert identity["subject"] == "ada" and identity["email"] == "ada@example.com"
    assert identity["roles"] == ["admin"]
    assert identity["tokenIdentifier"] == f"{issuer}|ada"


def test_the_token_command_refuses_a_malformed_claim():
    done = _token_command("ada", "--secret", "s" * 32, "--issuer", "i", "--claim", "no-equals")
    assert done.returncode == 2 and "is not NAME=VALUE" in done.stderr


def test_the_token_command_takes_the_secret_from_the_environment(monkeypatch):
    monkeypatch.setenv("CONVEX_AUTH_SECRET", "s" * 32)
    done = _token_command("ada", "--issuer", "i", "--claim", "secret=not-a-parameter")
    assert done.returncode == 0, done.stderr
    claims = jwt.decode(done.stdout.strip(), "s" * 32, algorithms=["HS256"], issuer="i")
    assert claims["sub"] == "ada" and claims["secret"] == "not-a-parameter"


def test_the_token_command_explains_missing_and_reserved_options(monkeypatch):
    monkeypatch.delenv("CONVEX_AUTH_SECRET", raising=False)
    missing = _token_command("ada", "--issuer", "i")
    assert missing.returncode == 2 and "CONVEX_AUTH_SECRET" in missing.stderr
    reserved = _token_command("ada", "--secret", "s" * 32, "--issuer", "i", "--claim", "exp=1")
    assert reserved.returncode == 2 and "set 'exp' with --ttl" in reserved.stderr


def test_tokens_without_an_expiry_are_refused(tmp_path):
    """Convex requires `exp`: a leaked token without one would be valid forever."""
    message = r'no "exp" \(expiry\) claim.*Tokens must expire'
    hs256 = ServerAuthenticator("k", AuthProvider(ISS, secret=SECRET))
    with pytest.raises(AuthenticationError, match=message):
        hs256.authenticate_user(token(SECRET, "HS256", ttl=None))
    assert hs256.authenticate_user(token(SECRET, "HS256")).expires_at is not None
    private = rsa_key()
    jwk = json.loads(jwt.algorithms.get_default_algorithms()["RS256"].to_jwk(private.public_key()))
    (tmp_path / "jwks.json").write_text(json.dumps({"keys": [{**jwk, "kid": "r1"}]}))
    jwks = ServerAuthenticator("k", AuthProvider.from_files(ISS, jwks_file=tmp_path / "jwks.json"))
    with pytest.raises(AuthenticationError, match=message):
        jwks.authenticate_user(token(private, "RS256", ttl=None, kid="r1"))
    (tmp_path / "key.pem").write_bytes(pem(private))
    pem_file = AuthProvider.from_files(ISS, public_key_file=tmp_path / "key.pem")
    with pytest.raises(AuthenticationError, match=message):
        ServerAuthenticator("k", pem_file).authenticate_user(token(private, "RS256", ttl=None))
    # The embedded store verifies tokens the same way when given a key.
    with pytest.raises(ValidationError, match=message):
        claims_of(token(SECRET, "HS256", ttl=None), AuthConfig(ISS, secret=SECRET))
