"""A real, throwaway PostgreSQL cluster for the test suite.

`PgCluster(base).start()` runs Debian's PostgreSQL binaries: `initdb` of a fresh cluster under
`base`, then a server listening on 127.0.0.1 only, on a free port, with its unix socket in the
data directory (never /var/run/postgresql, so a distribution's own cluster, if one runs, is
never touched). Durability is switched off (fsync, synchronous_commit, full_page_writes): the
cluster dies with the test session. When the tests run as root, every PostgreSQL program runs
as the `postgres` user (initdb and postgres refuse root).

Every step is bounded: a step that does not finish in time raises `PgClusterError` with the
server log's tail, and `stop()` kills a server that does not stop.
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
from psycopg import sql

__all__ = ["PgCluster", "PgClusterError", "find_bindir"]

#: Seconds a step (initdb, start, stop, a statement) may take before it counts as failed.
STEP_TIMEOUT = 60
#: Settings of a fast, throwaway cluster; several processes and pools connect at once.
SETTINGS = {
    "listen_addresses": "'127.0.0.1'",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "300",
    # Fewer checkpoints while a suite creates and drops many databases.
    "checkpoint_timeout": "'30min'",
    "max_wal_size": "'1GB'",
    # FILE_COPY checkpoints at each CREATE DATABASE: keep the log's tail (in errors) useful.
    "log_checkpoints": "off",
}
#: How many ports to try when another process takes the free port before the server binds it.
PORT_ATTEMPTS = 5
#: `CREATE DATABASE ... STRATEGY`: measured on PostgreSQL 15 with our settings, creating a copy
#: of template0 takes a median 15-18 ms with FILE_COPY and 19-25 ms with WAL_LOG (the default).
CREATE_STRATEGY = "FILE_COPY"


class PgClusterError(RuntimeError):
    """The throwaway PostgreSQL cluster could not be created, started, used or stopped."""


def find_bindir() -> Path | None:
    """The directory holding PostgreSQL's server programs (`initdb`, `pg_ctl`, `postgres`).

    `$PG_BINDIR` if set, else `pg_config --bindir` when that directory holds `initdb` (libpq-dev's
    pg_config may name a server version that is not installed), else the newest
    /usr/lib/postgresql/<version>/bin with an `initdb`; None if there is none.
    """
    candidates: list[str] = []
    if os.environ.get("PG_BINDIR"):
        candidates.append(os.environ["PG_BINDIR"])
    pg_config = shutil.which("pg_config")
    if pg_config:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, timeout=10, check=True
            )
            candidates.append(out.stdout.strip())
    versions = glob.glob("/usr/lib/postgresql/*/bin")
    candidates += sorted(versions, key=_version_key, reverse=True)
    for candidate in candidates:
        if candidate and os.access(Path(candidate) / "initdb", os.X_OK):
            return Path(candidate)
    return None


def _version_key(bindir: str) -> tuple[int, ...]:
    """Sort key of /usr/lib/postgresql/<version>/bin by version number (15 after 9.6)."""
    version = Path(bindir).parent.name
    return tuple(int(part) if part.isdigit() else -1 for part in version.split("."))


def _free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (another process may take it before we do)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class PgCluster:
    """A PostgreSQL cluster under `base` (created there), served on 127.0.0.1:`port`.

    `start()` before use and `stop()` after; `url(dbname)` names a database of it. The superuser
    is `postgres`, trusted without a password (the server listens on loopback only).
    """

    def __init__(self, base: Path, bindir: Path | None = None) -> None:
        found = bindir or find_bindir()
        if found is None:
            raise PgClusterError(
                "PostgreSQL's server programs (initdb, pg_ctl) are not installed: run `make test`"
                " (it installs Debian's `postgresql` package), or `apt-get install postgresql`"
            )
        self.bindir = found
        self.root = Path(base) / "pg"
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.port = 0
        self._version = 0
        self._user = _server_user()

    def url(self, dbname: str = "postgres") -> str:
        """The URL of database `dbname` on this cluster, as user `postgres`."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    # Lifecycle.

    def start(self) -> None:
        """initdb a fresh cluster and start its server on a free loopback port.

        Returns once the server accepts connections.

        Raises:
            PgClusterError: initdb or the server failed or took longer than `STEP_TIMEOUT`.
        """
        self._make_root()
        self._run(
            "initdb",
            [
                "-D", str(self.data), "-U", "postgres", "-A", "trust", "--no-sync",
                "-E", "UTF8", "--locale=C", "--no-instructions",
            ],
        )  # fmt: skip
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write("\n# Throwaway test cluster (tests/pg_cluster.py).\n")
            conf.write(f"unix_socket_directories = '{self.data}'\n")
            conf.writelines(f"{name} = {value}\n" for name, value in SETTINGS.items())
        for attempt in itertools.count(1):
            self.port = _free_port()
            try:
                self._pg_ctl("start")
                return
            except PgClusterError:
                # Another process took the port between our probe and the server's bind.
                if attempt >= PORT_ATTEMPTS or not self._lost_port_race():
                    raise

    def restart(self) -> None:
        """Restart the server (fast shutdown: connected clients are cut off), same port and data.

        Raises:
            PgClusterError: the server did not come back within `STEP_TIMEOUT`.
        """
        self._pg_ctl("restart", "-m", "fast")

    @contextlib.contextmanager
    def down(self) -> Iterator[None]:
        """Stop the server for the block (fast shutdown: connected clients are cut off), then
        start it again, same port and data.

        Raises:
            PgClusterError: it did not stop or come back within `STEP_TIMEOUT`.
        """
        self._pg_ctl("stop", "-m", "fast")
        try:
            yield
        finally:
            self._pg_ctl("start")

    def stop(self) -> None:
        """Stop the server (fast shutdown), killing it if it does not stop in time; idempotent."""
        if not (self.data / "postmaster.pid").exists():
            return
        try:
            self._pg_ctl("stop", "-m", "fast")
        except PgClusterError:
            self._kill()

    # SQL.

    def create_database(self, name: str) -> str:
        """Create the empty database `name` (a copy of template0) and return its URL.

        Raises:
            PgClusterError: the statement failed.
        """
        statement = sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(name))
        if self._server_version() >= 150000:  # STRATEGY is new in PostgreSQL 15
            statement += sql.SQL(" STRATEGY {}").format(sql.SQL(CREATE_STRATEGY))
        self.execute(statement)
        return self.url(name)

    def drop_database(self, name: str) -> None:
        """Drop database `name`, disconnecting its clients first; nothing if there is none."""
        self.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )

    def _server_version(self) -> int:
        """The server's major version as a number (150000 for 15), read from `PG_VERSION`."""
        if not self._version:
            major = (self.data / "PG_VERSION").read_text().strip()
            self._version = int(major) * 10000 if "." not in major else 0
        return self._version

    def execute(self, statement: sql.Composable | str) -> None:
        """Run one statement outside a transaction in database `postgres`.

        Raises:
            PgClusterError: it failed (with the server log's tail).
        """
        try:
            with psycopg.connect(self.url(), autocommit=True, connect_timeout=10) as conn:
                conn.execute(statement)  # type: ignore[arg-type]
        except psycopg.Error as exc:
            raise PgClusterError(f"{statement!r} failed: {exc}{self._log_tail()}") from exc

    # Running PostgreSQL's programs.

    def _pg_ctl(self, action: str, *args: str) -> None:
        """`pg_ctl <action>` on our cluster, waiting (bounded) for it to finish."""
        options = f"-p {self.port}"
        self._run(
            "pg_ctl",
            [
                action, "-D", str(self.data), "-l", str(self.log), "-w",
                "-t", str(STEP_TIMEOUT), "-o", options, *args,
            ],
        )  # fmt: skip

    def _run(self, program: str, args: list[str]) -> None:
        """Run `program` of the bin dir as the server's user in `self.root`.

        Raises:
            PgClusterError: it failed or did not finish within `STEP_TIMEOUT` + 10 s.
        """
        command = [*self._as_user(), str(self.bindir / program), *args]
        try:
            done = subprocess.run(
                command,
                cwd=self.root,
                env=_clean_env(),
                capture_output=True,
                text=True,
                timeout=STEP_TIMEOUT + 10,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            message = f"`{program} {' '.join(args)}` did not finish in {exc.timeout} s"
            raise PgClusterError(message + self._log_tail()) from exc
        if done.returncode != 0:
            raise PgClusterError(
                f"`{program} {' '.join(args)}` failed (exit {done.returncode}):\n"
                f"{done.stdout}{done.stderr}{self._log_tail()}"
            )

    def _as_user(self) -> list[str]:
        """The command prefix running a program as the server's user (nothing if that is us)."""
        if self._user is None:
            return []
        return ["runuser", "-u", self._user.pw_name, "--"]

    def _make_root(self) -> None:
        """Create `self.root`, owned by the server's user, with every parent traversable by it."""
        self.root.mkdir(parents=True)
        if self._user is None:
            return
        os.chown(self.root, self._user.pw_uid, self._user.pw_gid)
        # pytest makes its temp dirs 0700: let the server's user pass through (not list) them.
        for parent in self.root.parents:
            mode = parent.stat().st_mode
            if not mode & 0o001:
                parent.chmod(mode | 0o001)

    def _lost_port_race(self) -> bool:
        """Whether the server's last start failed because its port was taken."""
        return "could not bind" in self._log_tail() or "already in use" in self._log_tail()

    def _kill(self) -> None:
        """Kill the server (its postmaster and, with it, its children) after a failed stop."""
        with contextlib.suppress(OSError, ValueError):
            pid = int((self.data / "postmaster.pid").read_text().split()[0])
            os.kill(pid, signal.SIGQUIT)  # immediate shutdown: the postmaster ends its children
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                os.kill(pid, 0)  # raises OSError once it is gone
                time.sleep(0.05)
            os.kill(pid, signal.SIGKILL)

    def _log_tail(self, lines: int = 20) -> str:
        """The last `lines` lines of the server log, as a suffix for an error message."""
        try:
            tail = self.log.read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            return ""
        return f"\n--- {self.log} (last {lines} lines) ---\n" + "\n".join(tail)


def _server_user() -> pwd.struct_passwd | None:
    """The `postgres` account when we are root (PostgreSQL refuses to run as root), else None.

    Raises:
        PgClusterError: we are root and there is no `postgres` account.
    """
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam("postgres")
    except KeyError:
        raise PgClusterError(
            "running as root needs a `postgres` account to run PostgreSQL as (Debian's"
            " `postgresql` package creates it): run `make test` or `apt-get install postgresql`"
        ) from None


def _clean_env() -> dict[str, str]:
    """Our environment without libpq's and PostgreSQL's variables (PGDATA, PGPORT, ...), which
    would otherwise override the cluster's own settings."""
    return {k: v for k, v in os.environ.items() if not k.startswith("PG")}
