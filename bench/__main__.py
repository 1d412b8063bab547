"""`python -m bench [--quick] [--rows 1,2,...]`: run the rows, print a markdown table."""
from __future__ import annotations

import argparse
import importlib
import logging
import sys
import tempfile
import time
import traceback
from pathlib import Path

from .common import FULL, QUICK, Result, machine, table

ROWS = {1: "ingest", 2: "sweep", 3: "latency", 4: "chat", 5: "storm", 6: "footprint",
        7: "startup", 8: "accounts", 9: "history", 10: "devices", 11: "otlp",
        12: "collector"}


def run_rows(rows, sizes, workdir: Path, out=print) -> list[Result]:
    results = []
    for number in rows:
        name = ROWS[number]
        started = time.monotonic()
        out(f"row {number} ({name}) ...", file=sys.stderr)
        try:
            result = importlib.import_module(f"bench.{name}").run(sizes, workdir)
        except Exception as exc:  # one broken row must not hide the others' figures
            traceback.print_exc()
            result = Result(number, name, f"FAILED: {type(exc).__name__}: {exc}"[:200])
        out(f"row {number} done in {time.monotonic() - started:.0f} s", file=sys.stderr)
        results.append(result)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny sizes (seconds), for tests")
    parser.add_argument("--rows", default=",".join(map(str, ROWS)),
                        help="comma-separated row numbers (default: all)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)  # polls that fail say so in the row, not the log
    rows = [int(r) for r in args.rows.split(",") if r.strip()]
    sizes = QUICK if args.quick else FULL
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="submitwatch-bench-") as tmp:
        results = run_rows(rows, sizes, Path(tmp))
    info = machine()
    print(f"\nMachine: {info['cores']} cores, {info['cpu']}, Python {info['python']}, "
          f"SQLite {info['sqlite']}, {info['os']}; {'quick' if args.quick else 'full'} sizes; "
          f"{time.monotonic() - started:.0f} s in all.\n")
    print(table(results))
    return 0 if all(not r.figure.startswith("FAILED") for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
