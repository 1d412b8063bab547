"""`submitwatch run` as a user starts it: its own process, a TOML file, secrets in the environment."""
from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from .common import environ, to_toml


def submitwatch_command() -> list[str]:
    script = Path(sys.executable).with_name("submitwatch")
    return [str(script)] if script.exists() else [sys.executable, "-m", "bot.cli"]


class RunProcess:
    def __init__(self, raw_config: dict, workdir: Path, name: str):
        self.config_path = workdir / f"{name}.toml"
        self.config_path.write_text(to_toml(raw_config))
        self.log_path = workdir / f"{name}.log"
        self.db_path = raw_config["store"]["path"]
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> RunProcess:
        env = {**os.environ, **environ()}
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen([*submitwatch_command(), "run", "--config",
                                      str(self.config_path)], env=env, stdout=self._log,
                                     stderr=subprocess.STDOUT)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # a clean stop, as systemd would
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def polled(self) -> int:
        """How many servers have had a good poll so far (read from its database)."""
        try:
            db = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=5)
            try:
                return db.execute("SELECT count(*) FROM server_state WHERE last_success_at IS "
                                  "NOT NULL").fetchone()[0]
            finally:
                db.close()
        except sqlite3.Error:  # not created yet
            return 0

    def wait_polled(self, servers: int, timeout: float) -> float:
        """Wait until every server was polled once; returns when (time.monotonic())."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"submitwatch run exited ({self.proc.returncode}); see "
                                   f"{self.log_path}:\n{self.log_path.read_text()[-2000:]}")
            if self.polled() >= servers:
                return time.monotonic()
            time.sleep(0.2)
        raise RuntimeError(f"only {self.polled()} of {servers} servers polled within {timeout}s;"
                           f" see {self.log_path}")
