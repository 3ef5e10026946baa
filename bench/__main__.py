"""Run the benchmarks: `python -m bench` runs all, `python -m bench ingest` one."""

from __future__ import annotations

import importlib
import sys

# Each module has `run() -> None`, which measures and calls bench.common.record.
BENCHMARKS = ["ingest", "metering", "billing", "growth"]


def main(argv: list[str]) -> int:
    names = argv or BENCHMARKS
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}; known: {', '.join(BENCHMARKS)}")
        return 2
    for name in names:
        importlib.import_module(f"bench.{name}").run()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
