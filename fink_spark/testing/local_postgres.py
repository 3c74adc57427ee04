"""A real PostgreSQL server on loopback, from the machine's PostgreSQL (Debian's package), for a
shared Iceberg catalog: Iceberg's JDBC catalog in Spark and pyiceberg's SQL catalog both keep
their tables there, so that several jobs, on several hosts, commit to one catalog.

    .venv/bin/python -m fink_spark.testing.local_postgres     # prints the JDBC URL; Ctrl-C stops it

The server lives in a folder of its own (a temporary one by default), listens on 127.0.0.1
only, and asks for a password (SCRAM). Run as root, as CI runs, its files belong to the
`postgres` user that the package creates: PostgreSQL refuses to run as root.
"""

from __future__ import annotations

import argparse
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import IO

from fink_spark.testing.local_broker import free_port

SERVER_OWNER = "postgres"  # the account Debian's package makes for its servers


def server_binaries() -> Path:
    """The folder of initdb and postgres: Debian keeps them out of the PATH, per major version."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("initdb")
    if on_path:
        return Path(on_path).parent
    raise FileNotFoundError("no PostgreSQL server found (initdb): install it, e.g. 'apt-get install postgresql'")


class LocalPostgres:
    """One PostgreSQL server and one database, owned by `user` with `password`."""

    def __init__(self, user: str = "fink_catalog", password: str = "catalog-password-7d2e", database: str = "iceberg",
                 workdir: Path | None = None) -> None:
        self.user, self.password, self.database = user, password, database
        self._own_workdir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="fink-postgres-"))
        self.port = free_port()
        self._server: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def jdbc_url(self) -> str:
        return f"jdbc:postgresql://127.0.0.1:{self.port}/{self.database}"

    @property
    def sqlalchemy_url(self) -> str:
        """The same database for pyiceberg's SQL catalog (SQLAlchemy, psycopg2)."""
        return f"postgresql+psycopg2://{self.user}:{self.password}@127.0.0.1:{self.port}/{self.database}"

    def spark_catalog_options(self, name: str, warehouse: Path) -> list[str]:
        """spark-submit's `--conf` options of an Iceberg catalog `name` on this server, with its
        data under `warehouse` (README "The table on a cluster")."""
        settings = {
            f"spark.sql.catalog.{name}": "org.apache.iceberg.spark.SparkCatalog",
            f"spark.sql.catalog.{name}.type": "jdbc",
            f"spark.sql.catalog.{name}.uri": self.jdbc_url,
            f"spark.sql.catalog.{name}.jdbc.user": self.user,
            f"spark.sql.catalog.{name}.jdbc.password": self.password,
            f"spark.sql.catalog.{name}.warehouse": warehouse.as_uri(),
            # Iceberg's newer catalog tables (with views): without it, looking a table up fails
            f"spark.sql.catalog.{name}.jdbc.schema-version": "V1",
        }
        return [item for key, value in settings.items() for item in ("--conf", f"{key}={value}")]

    def _as_owner(self) -> list[str]:
        return ["runuser", "-u", SERVER_OWNER, "--"] if os.geteuid() == 0 else []

    def start(self, timeout: float = 60.0) -> LocalPostgres:
        binaries = server_binaries()
        data = self.workdir / "data"
        password_file = self.workdir / "password"
        self.workdir.mkdir(parents=True, exist_ok=True)
        password_file.write_text(self.password + "\n")
        if os.geteuid() == 0:
            shutil.chown(self.workdir, SERVER_OWNER)
            shutil.chown(password_file, SERVER_OWNER)
        subprocess.run([*self._as_owner(), str(binaries / "initdb"), "-D", str(data), "-U", self.user,
                        f"--pwfile={password_file}", "--auth=scram-sha-256", "-E", "UTF8", "--no-sync"],
                       check=True, capture_output=True)
        password_file.unlink()
        self._log = open(self.workdir / "server.log", "wb")  # noqa: SIM115 (the server's, for as long as it runs)
        self._server = subprocess.Popen(
            [*self._as_owner(), str(binaries / "postgres"), "-D", str(data), "-p", str(self.port),
             "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={self.workdir}", "-c", "fsync=off"],
            stdout=self._log, stderr=subprocess.STDOUT)
        self._wait_for_server(timeout)
        subprocess.run([str(binaries / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", self.user, self.database],
                       check=True, capture_output=True, env={**os.environ, "PGPASSWORD": self.password})
        return self

    def _wait_for_server(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._server is not None and self._server.poll() is not None:
                raise RuntimeError(f"PostgreSQL stopped at start:\n{(self.workdir / 'server.log').read_text()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                time.sleep(0.2)
        raise TimeoutError(f"PostgreSQL did not listen on 127.0.0.1:{self.port} within {timeout:.0f} s")

    def stop(self) -> None:
        if self._server is not None and self._server.poll() is None:
            self._server.terminate()  # a 'smart' shutdown: sessions end, then the server
            try:
                self._server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._server.kill()
                self._server.wait()
        if self._log is not None:
            self._log.close()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> LocalPostgres:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description="Run a PostgreSQL server on loopback for a shared Iceberg catalog.")
    parser.parse_args()
    with LocalPostgres() as server:
        print(f"{server.jdbc_url} (user {server.user}); Ctrl-C stops it", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
