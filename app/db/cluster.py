"""The embedded PostgreSQL cluster that `waybill dev` and the tests use.

It lives under `.waybill/` in the project (or `$WAYBILL_HOME`), listens on
127.0.0.1:`WAYBILL_PG_PORT` (54329) and a private socket directory, and preloads
pg_cron (`cron.database_name = postgres`, so pg_cron reaches the Waybill
databases through `cron.schedule_in_database`, as on many managed servers).
PostgreSQL refuses to run as root, so when started by root the server runs as
the `postgres` user.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parents[2]
DEFAULT_PORT = 54329
DATABASE = "waybill"

# Settings for a small single-machine server. Durability stays on: a 2xx on
# ingestion means the event is on disk.
SERVER_SETTINGS = {
    "listen_addresses": "'127.0.0.1'",
    "shared_preload_libraries": "'pg_cron'",
    "cron.database_name": "'postgres'",
    "max_connections": "200",
    "shared_buffers": "2GB",
    "work_mem": "64MB",
    "maintenance_work_mem": "512MB",
    "max_wal_size": "8GB",
    "checkpoint_timeout": "15min",
    # The first change to a page after a checkpoint logs the whole page; an
    # hourly rollup touches a few thousand index pages, each the first time
    # since the last checkpoint. pglz ("on") spent ~110 ms compressing them
    # in each run; lz4 a tenth of that, for about the same WAL.
    "wal_compression": "lz4",
    "synchronous_commit": "on",
    "fsync": "on",
    "commit_delay": "0",
    "timezone": "'UTC'",
    "log_min_messages": "warning",
    "logging_collector": "off",
}


class ClusterError(RuntimeError):
    """The embedded cluster could not be created or started."""


def _server_bin_dir() -> Path:
    """The newest installed PostgreSQL whose pg_cron library is present."""
    override = os.environ.get("WAYBILL_PG_BINDIR")
    if override:
        return Path(override)
    root = Path("/usr/lib/postgresql")
    majors = sorted((p for p in root.glob("*") if p.name.isdigit()), key=lambda p: -int(p.name))
    for major in majors:
        if (major / "lib" / "pg_cron.so").exists() and (major / "bin" / "postgres").exists():
            return major / "bin"
    raise ClusterError(
        "no PostgreSQL server with pg_cron found under /usr/lib/postgresql; "
        "run `bash scripts/setup-system.sh` as root (make run/test do it for you)"
    )


def _is_root() -> bool:
    return os.geteuid() == 0


def _reachable_by_postgres(path: Path) -> bool:
    probe = path if path.exists() else path.parent
    result = subprocess.run(
        ["runuser", "-u", "postgres", "--", "test", "-x", str(probe)], check=False
    )
    return result.returncode == 0


@dataclass(frozen=True)
class Cluster:
    home: Path
    port: int

    @classmethod
    def default(cls) -> Cluster:
        home = Path(os.environ.get("WAYBILL_HOME", PROJECT_DIR / ".waybill"))
        port = int(os.environ.get("WAYBILL_PG_PORT", DEFAULT_PORT))
        return cls(home=home, port=port)

    @property
    def data_dir(self) -> Path:
        return self._server_home() / "pgdata"

    @property
    def socket_dir(self) -> Path:
        return self._server_home() / "run"

    @property
    def log_file(self) -> Path:
        return self._server_home() / "postgres.log"

    def _server_home(self) -> Path:
        """Where the server's files go; outside the project if `postgres` cannot reach it."""
        pointer = self.home / "server-home"
        if pointer.exists():
            return Path(pointer.read_text().strip())
        return self.home

    def url(self, database: str = DATABASE) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        command = [str(_server_bin_dir() / args[0]), *args[1:]]
        if _is_root():
            command = ["runuser", "-u", "postgres", "--", *command]
        return subprocess.run(command, check=check, text=True, capture_output=True)

    def _prepare_home(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        if not _is_root():
            return
        if not _reachable_by_postgres(self.home) and not (self.home / "server-home").exists():
            # The project sits where the postgres user cannot write (a home directory
            # with mode 700, say): keep the server's files in a directory of its own.
            digest = hashlib.sha256(str(self.home.resolve()).encode()).hexdigest()[:16]
            outside = Path("/var/lib/waybill") / digest
            outside.mkdir(parents=True, exist_ok=True)
            (self.home / "server-home").write_text(str(outside))
        server_home = self._server_home()
        server_home.mkdir(parents=True, exist_ok=True)
        shutil.chown(server_home, "postgres", "postgres")
        (server_home / "run").mkdir(exist_ok=True)
        shutil.chown(server_home / "run", "postgres", "postgres")

    def is_running(self) -> bool:
        if not (self.data_dir / "PG_VERSION").exists():
            return False
        return self._run("pg_ctl", "status", "-D", str(self.data_dir), check=False).returncode == 0

    def up(self) -> str:
        """Create (once) and start the cluster; return the Waybill database URL."""
        self._prepare_home()
        self.socket_dir.mkdir(parents=True, exist_ok=True)
        if not (self.data_dir / "PG_VERSION").exists():
            self._init()
        if not self.is_running():
            started = self._run(
                "pg_ctl", "start", "-w", "-t", "60", "-D", str(self.data_dir),
                "-l", str(self.log_file), "-o", f"-p {self.port} -k {self.socket_dir}",
                check=False,
            )
            if started.returncode != 0:
                tail = self.log_file.read_text()[-2000:] if self.log_file.exists() else ""
                raise ClusterError(f"PostgreSQL did not start: {started.stderr}\n{tail}")
        self._wait_ready()
        self._bootstrap()
        return self.url()

    def down(self) -> None:
        if self.is_running():
            self._run("pg_ctl", "stop", "-w", "-m", "fast", "-D", str(self.data_dir))

    def _init(self) -> None:
        if _is_root():
            shutil.chown(self.socket_dir, "postgres", "postgres")
        self._run(
            "initdb", "-D", str(self.data_dir), "-U", "postgres", "--auth=trust",
            "-E", "UTF8", "--locale=C.UTF-8",
        )
        with (self.data_dir / "postgresql.conf").open("a") as conf:
            conf.write("\n# Waybill embedded cluster\n")
            for name, value in SERVER_SETTINGS.items():
                conf.write(f"{name} = {value}\n")
            conf.write(f"port = {self.port}\n")
            conf.write(f"unix_socket_directories = '{self.socket_dir}'\n")
            # pg_cron connects to the databases it runs jobs in over this socket.
            conf.write(f"cron.host = '{self.socket_dir}'\n")

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            ready = self._run(
                "pg_isready", "-h", "127.0.0.1", "-p", str(self.port), check=False
            )
            if ready.returncode == 0:
                return
            time.sleep(0.2)
        raise ClusterError("PostgreSQL did not become ready within 60 s")

    def _bootstrap(self) -> None:
        import psycopg

        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS pg_cron")
            exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)
            ).fetchone()
            if not exists:
                conn.execute(f'CREATE DATABASE "{DATABASE}"')

