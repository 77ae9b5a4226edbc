"""Store URLs: the one place that turns what a user gives (`connect()`, `serve --db`, the
jupyter-server extension's `$CONVEX_JUPYTER_DB`) into a `Persistence`.

Accepted:

- `memory` (also `:memory:` and `sqlite:///:memory:`, as sqlite3 spells it; never a file of
  that name): a store that writes nothing lasting (gone when closed);
- `sqlite:///relative/path.db`, `sqlite:////absolute/path.db`, or a plain path (`str` or
  `os.PathLike`): a store file;
- `postgresql://user:password@host:port/dbname` (or `postgres://`): a store in that
  PostgreSQL database (it must exist), which any number of processes may open at once.

Any other `scheme://...` is refused (never taken for a file path: `postgresql://u:pw@h/db`
would otherwise become a folder named after the password). Server URLs (`http(s)://`,
`ws(s)://`) are the remote client's: `connect()` handles them before it gets here.
Passwords never appear in a message or a description (`describe_url`).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

from kernel_ext.errors import PersistenceError
from kernel_ext.persistence.base import Persistence

__all__ = [
    "ACCEPTED",
    "StoreLocation",
    "describe_url",
    "mask_password",
    "open_persistence",
    "parse_store_url",
]

#: What a store URL may be, for error messages.
ACCEPTED: Final = (
    "memory, sqlite:///relative/path.db, sqlite:////absolute/path.db, a file path, "
    "or postgresql://user:password@host:port/dbname"
)
_POSTGRES_SCHEMES: Final = frozenset({"postgresql", "postgres"})
#: `scheme://`, as RFC 3986 spells a scheme; a Windows drive (`C:\`) has no `//`.
_SCHEME: Final = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_SQLITE_PREFIX: Final = "sqlite:///"
#: libpq also takes the password as a parameter (`?password=...`).
_PASSWORD_PARAM: Final = re.compile(r"([?&](?:ssl)?password=)[^&#]*", re.IGNORECASE)


@dataclass(frozen=True)
class StoreLocation:
    """Where a store is: `kind` and, for a file, its absolute `path`; for PostgreSQL, its
    `url` (with the password: never print it, print `describe()`).
    """

    kind: Literal["memory", "sqlite", "postgresql"]
    path: Path | None = None
    url: str | None = None

    def describe(self) -> str:
        """`memory`, the file's path, or the URL with its password masked."""
        if self.kind == "memory":
            return "memory"
        if self.kind == "sqlite":
            return str(self.path)
        return mask_password(self.url or "")

    def __repr__(self) -> str:  # the dataclass repr would show the password
        return f"StoreLocation({self.kind!r}, {self.describe()!r})"


def mask_password(url: str) -> str:
    """`url` with the password of its user part, and any `password=` parameter, replaced by
    `***` (`postgresql://user:***@host/db`); a URL without one is returned unchanged."""
    match = _SCHEME.match(url)
    if match is None:
        return url
    rest = _PASSWORD_PARAM.sub(r"\1***", url[match.end() :])
    authority, sep, tail = _split_authority(rest)
    userinfo, at, host = authority.rpartition("@")
    if not at or ":" not in userinfo:
        return match.group(0) + rest
    user = userinfo.partition(":")[0]
    return f"{match.group(0)}{user}:***@{host}{sep}{tail}"


def _split_authority(rest: str) -> tuple[str, str, str]:
    """`(authority, separator, the rest)` of what follows `scheme://`: the authority ends at
    the first `/`, `?` or `#` after its last `@` (a password may hold any of them)."""
    start = rest.rfind("@") + 1
    for i in range(start, len(rest)):
        if rest[i] in "/?#":
            return rest[:i], rest[i], rest[i + 1 :]
    return rest, "", ""


#: The names of a store that writes nothing lasting (sqlite3's too: a user who writes
#: `:memory:` means no file, and would otherwise get one named `:memory:`).
_MEMORY: Final = frozenset({"memory", ":memory:", "sqlite:///:memory:"})


def parse_store_url(url: str | os.PathLike[str]) -> StoreLocation:
    """Where the store `url` names (see the module docstring for what is accepted). Pure:
    opens and creates nothing.

    Raises:
        PersistenceError: an empty URL, or a `scheme://` URL of no store (the message lists
            what is accepted and masks any password).
    """
    if isinstance(url, os.PathLike):
        return StoreLocation("sqlite", Path(url).resolve())
    if not isinstance(url, str) or not url:
        raise PersistenceError(f"A store URL must be a non-empty string or path, got {url!r}")
    if url in _MEMORY:
        return StoreLocation("memory")
    if url.startswith(_SQLITE_PREFIX):
        path = url[len(_SQLITE_PREFIX) :]
        if not path:
            raise PersistenceError(f"{url!r} names no file: give {_SQLITE_PREFIX}path/to/store.db")
        return StoreLocation("sqlite", Path(path).resolve())
    match = _SCHEME.match(url)
    if match is None:
        return StoreLocation("sqlite", Path(url).resolve())
    scheme = match.group(1).lower()
    if scheme in _POSTGRES_SCHEMES:
        return StoreLocation("postgresql", url=url)
    raise PersistenceError(
        f"{mask_password(url)!r} is not a store URL (unknown scheme {scheme}://). A store is "
        f"one of: {ACCEPTED}; a server is reached with kernel_ext.connect('http://host:port')."
    )


def describe_url(url: str | os.PathLike[str] | StoreLocation) -> str:
    """What a status line shows for a store: `memory`, the file's absolute path, or the URL
    with its password masked. A URL of no store is described with its password masked too."""
    if isinstance(url, StoreLocation):
        return url.describe()
    try:
        return parse_store_url(url).describe()
    except PersistenceError:
        return mask_password(str(url))


def open_persistence(url: str | os.PathLike[str] | StoreLocation) -> Persistence:
    """Open (creating it if new) the store `url` names.

    Raises:
        PersistenceError: the URL names no store, or the store cannot be opened
            (`StoreLocked`: another process owns the file; for PostgreSQL, the server cannot
            be reached, the database does not exist or holds an incompatible store).
    """
    location = url if isinstance(url, StoreLocation) else parse_store_url(url)
    if location.kind == "memory":
        from kernel_ext.persistence.sqlite import SqlitePersistence

        return SqlitePersistence(None)
    if location.kind == "sqlite":
        from kernel_ext.persistence.sqlite import SqlitePersistence

        return SqlitePersistence(location.path)
    from kernel_ext.persistence.postgres import PostgresPersistence

    return PostgresPersistence(location.url or "")
