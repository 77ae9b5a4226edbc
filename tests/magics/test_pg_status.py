"""`%convex status` of a kernel on a PostgreSQL store: the database named, its password masked,
and no claim that the kernel owns it (other processes may open it at once)."""

from __future__ import annotations

#: The test cluster trusts loopback connections: the password is sent and ignored.
PASSWORD = "s3cret"


def test_status_of_a_postgresql_store_names_the_database(pg_url, ip, capsys):
    url = pg_url.replace("postgresql://postgres@", f"postgresql://postgres:{PASSWORD}@", 1)
    ip.run_line_magic("convex", f"connect {url}")
    capsys.readouterr()
    ip.run_line_magic("convex", "status")
    out = capsys.readouterr().out
    masked = pg_url.replace("postgresql://postgres@", "postgresql://postgres:***@", 1)
    assert f"store in database {masked}" in out, out
    assert "other processes open the same database at once" in out
    assert "this kernel owns it" not in out
    assert PASSWORD not in out
