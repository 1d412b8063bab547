"""Which process is sending an outbox row, and whether a claim belongs to a process that died.

Each process has one identity, "host:pid:start". A claim by another process on the same host
whose pid is gone (killed, crashed, reaped) is dead at once; a claim from another host, or on
Windows where asking about a pid is not safe, is dead only after the claim timeout.
"""
from __future__ import annotations

import os
import socket
import time
from datetime import datetime, timedelta
from pathlib import Path

HOST = socket.gethostname()
OWNER = f"{HOST}:{os.getpid()}:{time.time_ns()}"


def claim_is_dead(claimed_by: str | None, claimed_at: datetime | None, now: datetime,
                  timeout: timedelta) -> bool:
    if claimed_at is None or claimed_at < now - timeout:
        return True
    if not claimed_by or claimed_by == OWNER:
        return False      # ours (in flight in this process), or from a version without owners
    parts = claimed_by.rsplit(":", 2)
    if len(parts) != 3 or parts[0] != HOST or not parts[1].isdigit():
        return False
    pid = int(parts[1])
    if pid == os.getpid():
        return True       # an earlier process that had our pid (a restarted container)
    return not _alive(pid)


def _alive(pid: int) -> bool:
    if os.name != "posix":
        return True       # os.kill(pid, 0) would signal the process on Windows: wait instead
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True       # exists, under another user
    stat = Path(f"/proc/{pid}/stat")
    try:  # a killed process its parent has not reaped yet is a zombie: dead for our purpose
        return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True
