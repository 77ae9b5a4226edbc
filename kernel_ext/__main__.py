"""The command line (API.md, Command line): `python -m kernel_ext serve ...` serves a store;
`python -m kernel_ext token ...` mints a development user token (HS256) for it."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar, cast

if TYPE_CHECKING:
    from kernel_ext.engine.store import Store
    from kernel_ext.persistence.urls import StoreLocation
    from kernel_ext.sync.auth import SharedSettings

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    from kernel_ext.functions.limits import DEFAULT_TIME_LIMIT
    from kernel_ext.sync.connection import MAX_CONCURRENT_CALLS, MAX_SUBSCRIPTIONS

    parser = argparse.ArgumentParser(prog="python -m kernel_ext")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser(
        "serve",
        help="serve a store over the Convex HTTP API and sync WebSocket",
        description="Serve a store so that the official Convex clients can use it.",
    )
    serve.add_argument("--functions", required=True, type=Path, help="the functions folder")
    serve.add_argument(
        "--db",
        required=True,
        help="the store: a file path, sqlite:///path, memory, or "
        "postgresql://user:password@host:port/dbname (any number of serve processes may "
        "serve one PostgreSQL store: they share its data, admin key and pushed functions)",
    )
    serve.add_argument("--port", type=_port, default=3210, help="0 picks a free port")
    serve.add_argument(
        "--site-port",
        type=_port,
        default=None,
        help="where HTTP actions (http.py) are served (default: the port + 1, as Convex's "
        "3210/3211, or a free port, with a warning, when that is taken or --port is 0)",
    )
    serve.add_argument("--host", default="127.0.0.1", help="default: 127.0.0.1 (this machine)")
    serve.add_argument(
        "--admin-key",
        help="default: a new random key, printed once (a PostgreSQL store keeps the key of the "
        "first process that served it: give none, or that one)",
    )
    limits = serve.add_argument_group("limits (per function call / per WebSocket)")
    limits.add_argument(
        "--function-time-limit",
        type=_at_least_zero(float),
        default=DEFAULT_TIME_LIMIT,
        metavar="SECONDS",
        help="how long a query or mutation may run before it is stopped and fails (default "
        "%(default)g; Convex allows 1; 0 means no limit)",
    )
    limits.add_argument(
        "--max-subscriptions",
        type=_at_least_zero(int),
        default=MAX_SUBSCRIPTIONS,
        metavar="N",
        help="live queries one WebSocket may hold (default %(default)s)",
    )
    limits.add_argument(
        "--max-concurrent-calls",
        type=_at_least_zero(int),
        default=MAX_CONCURRENT_CALLS,
        metavar="N",
        help="mutations and actions one WebSocket may have running (default %(default)s)",
    )
    auth = serve.add_argument_group("user tokens (JWT)")
    auth.add_argument("--auth-issuer", help="the `iss` tokens must have")
    auth.add_argument("--auth-audience", help="the `aud` tokens must have")
    keys = auth.add_mutually_exclusive_group()
    keys.add_argument(
        "--auth-secret",
        help="HS256 shared secret (default with --auth-issuer and no other key option: "
        "$CONVEX_AUTH_SECRET, which keeps it out of the process list)",
    )
    keys.add_argument("--auth-public-key", type=Path, help="PEM public key file (RS256/ES256)")
    keys.add_argument("--auth-jwks", type=Path, help="JSON Web Key Set file")
    token = commands.add_parser(
        "token",
        help="print a development user token (HS256) for a server's --auth-secret",
        description="Mint a signed user token (HS256) for development and tests.",
    )
    token.add_argument("subject", help="the `sub` claim (the user)")
    token.add_argument(
        "--secret",
        default=os.environ.get("CONVEX_AUTH_SECRET"),
        help="the server's --auth-secret (default: $CONVEX_AUTH_SECRET, which keeps it out of "
        "the process list and the shell history)",
    )
    token.add_argument("--issuer", required=True, help="the server's --auth-issuer")
    token.add_argument("--audience", help="the server's --auth-audience, if it has one")
    token.add_argument("--ttl", type=float, default=3600.0, help="seconds until it expires")
    token.add_argument(
        "--claim",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="another claim, e.g. email=ada@example.com (repeatable; VALUE as JSON if it parses)",
    )
    return parser


def _port(text: str) -> int:
    """A TCP port number (0: any free port). Checked here: the socket layer would wrap 99999
    around to another port and serve there without a word."""
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a port: give a number between 0 and 65535 (0 picks a free port)"
        )
    return port


_Number = TypeVar("_Number", int, float)


def _at_least_zero(kind: Callable[[str], _Number]) -> Callable[[str], _Number]:
    """An argparse type: a limit of `kind`, 0 or more. Checked here: a negative time limit
    would fail every call at once, a negative count refuse every subscription or call."""

    def parse(text: str) -> _Number:
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or not value >= 0:  # `not >=`: also refuses NaN
            raise argparse.ArgumentTypeError(f"{text!r} is not a limit: give 0 or more")
        return value

    return parse


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.command == "token":
        return _token(args)
    return _serve(args)


#: Claims the token command sets from its own arguments.
_SET_BY_OPTIONS = {
    "sub": "the SUBJECT argument",
    "iss": "--issuer",
    "aud": "--audience",
    "exp": "--ttl",
    "iat": "--ttl",
}


def _token(args: argparse.Namespace) -> int:
    import json

    from kernel_ext.functions.auth import make_dev_token

    if not args.secret:
        print("error: give --secret or set CONVEX_AUTH_SECRET", file=sys.stderr)
        return 2
    claims: dict[str, object] = {}
    for item in args.claim:
        name, sep, text = item.partition("=")
        if not sep or not name:
            print(f"error: --claim {item!r} is not NAME=VALUE", file=sys.stderr)
            return 2
        if name in _SET_BY_OPTIONS:
            print(f"error: set {name!r} with {_SET_BY_OPTIONS[name]}, not --claim", file=sys.stderr)
            return 2
        try:
            claims[name] = json.loads(text)
        except ValueError:
            claims[name] = text  # a plain string needs no JSON quotes
    print(
        make_dev_token(
            args.subject,
            secret=args.secret,
            issuer=args.issuer,
            audience=args.audience,
            ttl_s=args.ttl,
            extra_claims=claims,
        )
    )
    return 0


def _auth_provider(args: argparse.Namespace) -> object:
    from kernel_ext.sync.auth import AuthProvider

    has_key = any(x is not None for x in (args.auth_secret, args.auth_public_key, args.auth_jwks))
    if args.auth_issuer is not None and not has_key and os.environ.get("CONVEX_AUTH_SECRET"):
        args.auth_secret, has_key = os.environ["CONVEX_AUTH_SECRET"], True
    if args.auth_issuer is None:
        if has_key or args.auth_audience is not None:
            raise ValueError("--auth-audience and the key options need --auth-issuer")
        return None
    if not has_key:
        raise ValueError("--auth-issuer needs one of --auth-secret, --auth-public-key, --auth-jwks")
    return AuthProvider.from_files(
        args.auth_issuer,
        audience=args.auth_audience,
        secret=args.auth_secret,
        public_key_file=args.auth_public_key,
        jwks_file=args.auth_jwks,
    )


def _serve(args: argparse.Namespace) -> int:
    from kernel_ext.engine.store import Store
    from kernel_ext.errors import StoreError
    from kernel_ext.functions.backend import Backend
    from kernel_ext.persistence.urls import open_persistence, parse_store_url
    from kernel_ext.sync.auth import AuthProvider
    from kernel_ext.sync.server import run_server

    try:
        provider = _auth_provider(args)
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    assert provider is None or isinstance(provider, AuthProvider)
    try:
        # Parsed before anything is created: a URL of no store is refused, never a file name.
        location = parse_store_url(args.db)
        print(f"Store: {location.describe()}", flush=True)
        persistence = open_persistence(location)
    except StoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    backend = Backend(Store(persistence))
    try:
        try:
            backend.load_functions(args.functions)
            admin_key = _admin_key(args.admin_key, backend.store, location)
        except (FileNotFoundError, StoreError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1

        def ready(url: str) -> None:
            persistence.set_owner_info(url)
            print(f"Serving {url}", flush=True)

        def site_ready(url: str, warning: str) -> None:
            if warning:
                print(warning, file=sys.stderr, flush=True)
            print(f"HTTP actions at {url}", flush=True)

        try:
            run_server(
                backend,
                host=args.host,
                port=args.port,
                admin_key=admin_key,
                auth=provider,
                on_ready=ready,
                site_port=args.site_port,
                on_site_ready=site_ready,
                push_dir=None if location.path is None else location.path.parent / "pushed",
                time_limit=args.function_time_limit,
                max_subscriptions=args.max_subscriptions,
                max_concurrent_calls=args.max_concurrent_calls,
            )
        except OSError as exc:  # the address is taken or not ours
            ports = f"{args.port}" if args.site_port is None else f"{args.port} or {args.site_port}"
            print(f"error: cannot listen on {args.host}:{ports}: {exc}", file=sys.stderr)
            return 1
    finally:
        backend.close()
    return 0


def _admin_key(given: str | None, store: Store, location: StoreLocation) -> str:
    """The served admin key, printed once: on a shared store (PostgreSQL) the one kept in the
    database (`given`, or a new one, stored first if it has none); otherwise `given` or a new
    one, kept beside the store file (mode 0600) when there is one.

    Raises:
        AuthenticationError: `given` differs from the key a shared store keeps.
    """
    from kernel_ext.sync.auth import (
        admin_key_path,
        generate_admin_key,
        stored_admin_key,
        write_admin_key,
    )

    if store.shared:
        settings = cast("SharedSettings", store.persistence)
        key = stored_admin_key(settings, given, location.describe())
        print(f"Admin key (kept in the database): {key}", flush=True)
        return key
    key = given or generate_admin_key()
    if location.path is None:  # nothing on disk to keep it beside
        print(f"Admin key: {key}", flush=True)
    else:
        key_file = admin_key_path(location.path)
        write_admin_key(key_file, key)
        print(f"Admin key (also in {key_file}): {key}", flush=True)
    return key


if __name__ == "__main__":
    sys.exit(main())
