"""Row 7, start-up: `submitwatch --help` against the floor `python -c pass`, interleaved."""
from __future__ import annotations

import statistics
import subprocess
import time
from pathlib import Path

from .common import Result, Sizes, python, spread


def _time(argv: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def run(sizes: Sizes, workdir: Path) -> Result:
    script = Path(python()).with_name("submitwatch")
    command = [str(script), "--help"] if script.exists() else [python(), "-m", "bot.cli", "--help"]
    bare, helps = [], []
    _time([python(), "-c", "pass"])  # warm the file cache for both
    _time(command)
    for _ in range(sizes.startup_runs):
        bare.append(_time([python(), "-c", "pass"]) * 1000)
        helps.append(_time(command) * 1000)
    above = statistics.median(helps) - statistics.median(bare)
    return Result(7, "start-up: `submitwatch --help`", spread(helps, "{:.0f}") + " ms",
                  spread(bare, "{:.0f}") + " ms (`python -c pass`)",
                  statistics.median(helps) / statistics.median(bare),
                  "<= 300 ms above the floor", above <= 300,
                  notes=[f"{above:.0f} ms above the floor"],
                  data={"help_ms": helps, "bare_ms": bare, "above_ms": above})
