"""Shared pieces of the benchmarks: a scratch database, the real API process, results.

Each benchmark measures the thing and its floor in one run on this machine and
reports ratios, so the numbers mean something on other hardware too. Results go
to bench/results/<name>.json (machine-readable) and <name>.md (what the README
quotes), both committed.
"""

from __future__ import annotations

import http.client
import json
import os
import platform
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg.conninfo import make_conninfo

from app.db.cluster import Cluster
from app.db.migrate import migrate

RESULTS = Path(__file__).resolve().parent / "results"
PROJECT_DIR = Path(__file__).resolve().parents[1]


def server_url() -> str:
    """Admin URL of the server to measure on: BENCH_DATABASE_URL or the embedded cluster."""
    explicit = os.environ.get("BENCH_DATABASE_URL")
    if explicit:
        return explicit
    cluster = Cluster.default()
    cluster.up()
    return cluster.url("postgres")


def fresh_database(name: str) -> str:
    """Drop and re-create database `name` with the whole schema; return its URL."""
    admin = server_url()
    with psycopg.connect(make_conninfo(admin, dbname="postgres"), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    url = make_conninfo(admin, dbname=name)
    migrate(url, schedule=False)
    return url


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_api(database_url: str, port: int, **env: str) -> subprocess.Popen[bytes]:
    """Start `waybill serve` on `port` and wait until it accepts connections."""
    environ = {**os.environ, "DATABASE_URL": database_url, "API_PORT": str(port),
               "LOG_LEVEL": "WARNING", **env}
    process = subprocess.Popen([sys.executable, "-m", "app", "serve"], env=environ,
                               cwd=PROJECT_DIR, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and process.poll() is None:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return process
        except OSError:
            time.sleep(0.05)
    process.kill()
    raise RuntimeError(f"the API did not start on port {port}")


def stop_api(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextmanager
def api_process(database_url: str, **env: str) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """The real `waybill serve` in its own process; yields (process, base URL)."""
    port = free_port()
    process = start_api(database_url, port, **env)
    try:
        yield process, f"http://127.0.0.1:{port}"
    finally:
        stop_api(process)


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        found.extend(int(child) for child in text)
    return found


def peak_rss_mb(pid: int) -> float:
    """High-water resident memory (VmHWM) of a process and all its children, in MB.

    With API_WORKERS > 1 the API is several processes; their peaks are summed,
    an upper bound of what they held at once.
    """
    total = 0.0
    for process in [pid, *_children(pid)]:
        for line in Path(f"/proc/{process}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                total += int(line.split()[1]) / 1024
    return total


def run_wrk(url: str, script: str, *, connections: int, seconds: int) -> dict[str, float]:
    """Load `url` with wrk and the given Lua script; requests/s, p50/p99 (ms), non-2xx."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as handle:
        handle.write(script)
    try:
        output = subprocess.run(
            ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", handle.name,
             url], capture_output=True, text=True, check=True).stdout
    finally:
        Path(handle.name).unlink()

    def latency(label: str) -> float:
        match = re.search(rf"^\s*{label}%\s+([\d.]+)(us|ms|s)\s*$", output, re.M)
        assert match, output
        value, unit = float(match.group(1)), match.group(2)
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value

    rps = re.search(r"Requests/sec:\s+([\d.]+)", output)
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    return {"requests_per_s": float(rps.group(1)) if rps else 0.0, "p50_ms": latency("50"),
            "p99_ms": latency("99"), "non_2xx": float(non2xx.group(1)) if non2xx else 0.0}


def sequential_latency(base: str, method: str, path: Callable[[int], str], count: int,
                       headers: dict[str, str], body: bytes | None = None) -> dict[str, float]:
    """`count` requests one after another on one keep-alive connection (after 200
    to warm up); p50/p99/max (ms) and how many were not 200. `path(i)` names the
    i-th request's path, so a run can vary what it reads."""
    host, port = base.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    for i in range(200):
        conn.request(method, path(count + i), body, headers)
        conn.getresponse().read()
    samples, failures = [], 0
    for i in range(count):
        started = time.perf_counter()
        conn.request(method, path(i), body, headers)
        response = conn.getresponse()
        response.read()
        samples.append((time.perf_counter() - started) * 1000)
        failures += response.status != 200
    conn.close()
    samples.sort()
    return {"requests": float(count), "p50_ms": statistics.median(samples),
            "p99_ms": samples[int(len(samples) * 0.99)], "max_ms": samples[-1],
            "failures": float(failures)}


def cpu_check_seconds() -> float:
    """The best of three timings of a fixed CPU-bound loop. A shared machine's speed
    drifts (on the 2-core machines here by up to 60 % within minutes); results
    carry this next to them, so a slow run can be told from a slow change."""
    timings = []
    for _ in range(3):
        started = time.perf_counter()
        sum(i * i for i in range(3_000_000))
        timings.append(time.perf_counter() - started)
    return round(min(timings), 3)


def record(name: str, results: dict[str, Any], summary: str) -> None:
    """Write bench/results/<name>.json and .md and print the summary."""
    RESULTS.mkdir(exist_ok=True)
    meta = {"name": name, "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.system()}",
            "command": f"make bench (python -m bench {name})",
            "cpu_check_seconds": cpu_check_seconds()}
    (RESULTS / f"{name}.json").write_text(json.dumps({**meta, **results}, indent=2, default=str))
    text = (f"# {name}\n\nMeasured {meta['measured_at']} on {meta['machine']} with "
            f"`{meta['command']}`; CPU check (a fixed loop, best of three, timed as the "
            f"results were written): {meta['cpu_check_seconds']} s.\n\n{summary}\n")
    (RESULTS / f"{name}.md").write_text(text)
    print(text)


def rollup_shards(url: str, until: datetime, *, keep: bool = True,
                  days: bool = False) -> tuple[float, list[Any]]:
    """rollup_hourly for every shard, each in a session of its own, all at once, as the
    scheduled jobs run them (days=True: then each shard's rollup_daily, in the same
    transaction, as `waybill aggregate` runs them); return the wall time of the calls
    and each shard's hourly summary. keep=False rolls every shard's transaction back,
    so the same run can be repeated."""
    with psycopg.connect(url) as conn:
        shards = [row[0] for row in conn.execute(
            "SELECT shard FROM waybill.rollup_shards ORDER BY shard")]
    ready, done = threading.Barrier(len(shards)), threading.Barrier(len(shards))
    spans: dict[int, tuple[float, float, Any]] = {}

    def run(shard: int) -> None:
        try:
            with psycopg.connect(url) as conn:
                conn.execute("SET work_mem = '1GB'")
                ready.wait()
                started = time.perf_counter()
                summary = conn.execute("SELECT waybill.rollup_hourly(%s, p_shard => %s)",
                                       (until, shard)).fetchone()[0]
                if days:
                    conn.execute("SELECT waybill.rollup_daily(%s, p_shard => %s)",
                                 (until.date(), shard))
                spans[shard] = (started, time.perf_counter(), summary)
                done.wait()  # nobody commits before all have run: one point in time
                if not keep:
                    conn.rollback()
        except BaseException:
            ready.abort()  # the others stop waiting for this shard
            done.abort()
            raise

    threads = [threading.Thread(target=run, args=(shard,)) for shard in shards]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if len(spans) != len(shards):
        raise RuntimeError("a shard's rollup failed; see the traceback above")
    wall = max(s[1] for s in spans.values()) - min(s[0] for s in spans.values())
    return wall, [spans[shard][2] for shard in shards]
