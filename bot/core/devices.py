"""The devices behind an incident's account, as plain data: what the SMTP Receive protocol log
look-up (bot.engine.devices) found, kept by store.devices and shown on the alert's device line,
in `show`, the digest and history (bot.slack).

Every address and name here came from the network (the log, reverse DNS): untrusted text.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

#: The look-up's states, as the device line says them.
FOUND = "found"              # at least one device joined to the incident's events
NO_MATCH = "no_match"        # the log was read, nothing in it joined the events
NOT_LOGGING = "not_logging"  # nothing joined, and the connector does not log by default
FAILED = "failed"            # the last look-up could not read the log: `problem` says why
PENDING = "pending"          # not looked up yet
STATES = (FOUND, NO_MATCH, NOT_LOGGING, FAILED, PENDING)


@dataclass(frozen=True)
class DeviceSeen:
    """One client address seen failing with the incident's account."""

    address: str                 # the client's IP address, from the log (untrusted)
    name: str | None             # what reverse DNS gave for it (untrusted); None: nothing
    sessions: int                # SMTP sessions that failed
    first: datetime
    last: datetime
    account_shown: bool          # every joined line named the account (False: it was hidden)


@dataclass(frozen=True)
class DeviceLookup:
    """What the look-up says for one incident, newest first in `devices` (most sessions)."""

    state: str                                   # one of STATES
    devices: tuple[DeviceSeen, ...] = ()
    problem: str | None = None                   # FAILED (and a FOUND whose last read failed)
    quiet_connectors: tuple[str, ...] = ()       # NOT_LOGGING: SRV\Name of connectors that
    #                                              do not log by default
    unmatched_events: int = 0                    # events no log line explained
    checked_at: datetime | None = None
