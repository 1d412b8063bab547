"""The WS-Management simulator in a child process, driven over a pipe.

The simulator answers with NTLM handshakes and message encryption in Python; in the bot's own
process it would compete with the bot for the GIL and make every figure look worse than the
bot is. A real Exchange server does that work on its own CPUs, so here it gets its own process.
"""
from __future__ import annotations

import multiprocessing
from collections.abc import Sequence
from typing import Any

from .common import WINRM_PASSWORD, WINRM_USER

FE = "MSExchangeFrontEndTransport"


def _serve(conn, names: Sequence[str], delay: float) -> None:
    """The child: one WinRMSimulator serving every name; commands come over `conn`."""
    from sim.eventlog import EventLog, EventRate
    from sim.winrm_server import WinRMSimulator

    logs = {name: EventLog(f"{name}.contoso.local", first_record=1000) for name in names}
    sim = WinRMSimulator(logs, users={WINRM_USER: WINRM_PASSWORD}, request_delay=delay).start()
    rates: list[EventRate] = []

    def append(server: str, account: str, count: int = 1, event_id: int = 1020,
               connector: str | None = None) -> int:
        data = (account, connector) if connector else (account,)
        log = logs[server]
        for _ in range(count):
            log.append(FE, event_id, data)
        return log.newest_record

    def append_accounts(server: str, accounts: Sequence[str], count: int, event_id: int,
                        connector: str | None) -> int:
        """`count` events for each of many accounts, in one command (row 8's storm)."""
        for account in accounts:
            append(server, account, count, event_id, connector)
        return logs[server].newest_record

    def append_each(count: int, account: str) -> None:
        for name in names:
            append(name, account.format(server=name), count)

    def rate(per_second: float, count: int, seed: int = 1020) -> None:
        rates.append(EventRate(list(logs.values()), per_second, count, seed=seed).start())

    def rate_result(timeout: float) -> list:
        for r in rates:
            r.join(timeout)
        return [row for r in rates for row in r.appended]

    def forward(server: str, origins: int, count: int) -> int:
        """Make `server` a collector: `count` forwarded events of `origins` origins, one account
        each, whose record ids collide across origins as real forwarded ones do (row 12)."""
        log = logs[server]
        log.channel = "ForwardedEvents"
        for n in range(count):
            origin = f"EX{n % origins:04d}"
            log.append_forwarded(f"{origin}.contoso.local", 1000 + n // origins, 1018,
                                 f"CONTOSO\\svc-{origin.lower()}")
        return log.newest_record

    def stats() -> dict[str, int]:
        total: dict[str, int] = {}
        for s in sim.all_stats().values():
            for key in ("http_requests", "soap_requests", "auth_successes", "shells_created",
                        "shells_open"):
                total[key] = total.get(key, 0) + getattr(s, key)
        return total

    commands = {"append": append, "append_each": append_each, "append_accounts": append_accounts,
                "forward": forward, "rate": rate,
                "rate_result": rate_result, "stats": stats,
                "delay": lambda seconds: setattr(sim, "request_delay", float(seconds))}
    def stop() -> None:
        for r in rates:
            r.stop()
        sim.stop()

    answer_commands(conn, sim.base_url, commands, stop)


def answer_commands(conn, base_url: str, commands: dict, stop) -> None:
    """The simulator process's side of the pipe: send its URL, then run each command the
    parent sends until "stop" (an error is reported to the parent, and serving goes on)."""
    conn.send(base_url)
    try:
        while True:
            command, args = conn.recv()
            if command == "stop":
                break
            try:
                conn.send(("ok", commands[command](*args)))
            except Exception as exc:  # report it in the parent, keep serving
                conn.send(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        stop()
        conn.close()


class SimProcess:
    """`with SimProcess(["EX001", ...], delay=0.05) as sim: sim.url_for("EX001")`."""

    def __init__(self, names: Sequence[str], *, delay: float = 0.0):
        self.names = list(names)
        self.delay = delay
        # spawn, not fork: the parent runs threads (Slack stand-in, pools) a fork would copy.
        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_serve, args=(child, self.names, delay),
                                 name="winrm-simulator", daemon=True)
        self.base_url = ""

    def __enter__(self) -> SimProcess:
        self._proc.start()
        if not self._conn.poll(60):
            self._proc.kill()
            raise RuntimeError("the simulator process did not start within 60 s")
        self.base_url = self._conn.recv()
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self._conn.send(("stop", ()))
        except OSError:
            pass
        self._proc.join(10)
        if self._proc.is_alive():
            self._proc.kill()
            self._proc.join(5)

    @property
    def pid(self) -> int:
        return self._proc.pid

    def url_for(self, name: str) -> str:
        return f"{self.base_url}/{name}/wsman"

    def servers(self) -> list[tuple[str, str]]:
        return [(name, self.url_for(name)) for name in self.names]

    def call(self, command: str, *args: Any) -> Any:
        self._conn.send((command, args))
        status, value = self._conn.recv()
        if status != "ok":
            raise RuntimeError(f"simulator {command}: {value}")
        return value
