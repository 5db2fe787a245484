"""A throwaway PostgreSQL server for tests: its own cluster in a temporary directory, listening on
127.0.0.1 and a free port only, stopped and deleted on exit. No Docker: Debian's `postgresql`
package (`initdb` and `pg_ctl` under /usr/lib/postgresql/VERSION/bin) is enough."""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

from bench.loadgen import free_port

DATABASE = "mlflow"
USER = "mlflow"


class PostgresUnavailable(RuntimeError):
    """PostgreSQL cannot be started here; the message says what to install."""


def postgres_bin() -> Path:
    """The directory holding `initdb` and `pg_ctl`: the newest installed version, else PATH."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=_version)
    if found:
        return Path(found[-1]).parent
    if initdb := shutil.which("initdb"):
        return Path(initdb).parent
    raise PostgresUnavailable(
        "PostgreSQL's initdb/pg_ctl were not found: `apt-get install postgresql` (.ci/run does)."
    )


def _version(initdb: str) -> int:
    return int(Path(initdb).parents[1].name.split(".")[0])


def _as_server_user(directory: Path) -> list[str]:
    """The prefix that runs a command as a non-root user: PostgreSQL refuses to run as root."""
    if os.geteuid() != 0:
        return []
    try:
        account = pwd.getpwnam("postgres")
    except KeyError:
        raise PostgresUnavailable(
            "PostgreSQL refuses to run as root and there is no `postgres` user to run it as."
        ) from None
    os.chown(directory, account.pw_uid, account.pw_gid)
    return ["runuser", "-u", "postgres", "--"]


@contextlib.contextmanager
def running_postgresql(timeout: float = 60) -> Iterator[str]:
    """Start a fresh cluster with an empty `mlflow` database; yield its SQLAlchemy URI
    (`postgresql://mlflow@127.0.0.1:PORT/mlflow`, trust authentication on loopback)."""
    try:
        import psycopg
    except ImportError:
        raise PostgresUnavailable("psycopg is missing: `pip install -e '.[dev]'`.") from None
    binaries = postgres_bin()
    root = Path(tempfile.mkdtemp(prefix="mnist-postgres-"))
    try:
        prefix = _as_server_user(root)
        data, log, port = root / "data", root / "server.log", free_port()

        def run(*command: str) -> None:
            # cwd: the server user may not enter the test's working directory.
            result = subprocess.run(
                [*prefix, *command], cwd=root, capture_output=True, text=True, timeout=timeout
            )
            if result.returncode != 0:
                server_log = log.read_text() if log.exists() else ""
                raise RuntimeError(
                    f"{' '.join(command)} failed:\n{result.stdout}{result.stderr}{server_log}"
                )

        run(str(binaries / "initdb"), "-D", str(data), "-U", USER, "--auth=trust",
            "--encoding=UTF8", "--no-sync")  # fmt: skip
        options = f"-c listen_addresses=127.0.0.1 -p {port} -k {root} -c fsync=off"
        run(str(binaries / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", options,
            "-w", "-t", str(int(timeout)), "start")  # fmt: skip
        try:
            # autocommit: CREATE DATABASE cannot run inside a transaction.
            with psycopg.connect(
                host="127.0.0.1", port=port, user=USER, dbname="postgres", autocommit=True
            ) as admin:
                admin.execute(f"CREATE DATABASE {DATABASE}")
            yield f"postgresql://{USER}@127.0.0.1:{port}/{DATABASE}"
        finally:
            run(str(binaries / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop")
    finally:
        shutil.rmtree(root, ignore_errors=True)
