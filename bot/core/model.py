"""Plain data passed between the steps of the pipeline.

Nothing here does I/O. Times are timezone-aware UTC datetimes.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

#: The two providers that log the event; 2013+ front ends use the second one.
PROVIDERS = ("MSExchangeTransport", "MSExchangeFrontEndTransport")
#: Both mean "valid credentials, and still refused", for different reasons
#: (bot/exchange/diagnosis.py):
#: 1018 = no ms-Exch-SMTP-Submit on the connector; 1020 = a built-in identity (2013 and later).
EVENT_IDS = (1018, 1020)


@dataclass(frozen=True)
class Event:
    """One 1018/1020 event as read from a server's Application log."""

    server: str          # the configured server name the event was read from
    record_id: int       # EventRecordID: the per-log cursor
    provider: str
    event_id: int
    time: datetime       # TimeCreated/@SystemTime, UTC
    account: str         # %1: whatever the SMTP client authenticated as (untrusted)
    connector: str | None  # %2, the Receive connector's name as SRV\Name (untrusted); None
    #                        when the event carried none (1020's template prints only %1)
    computer: str        # the Exchange server's own name, e.g. EX01.contoso.local
    #: The configured name of the Exchange server that logged the event: what decides its
    #: channel and which server's fix applies. `server` (the endpoint polled) owns the cursor.
    #: The same for a direct source; a collector's log holds many origins. (The connector's
    #: server prefix comes from <Computer>, the host that logged it.)
    origin: str = ""

    def __post_init__(self) -> None:
        if not self.origin:
            object.__setattr__(self, "origin", self.server)

    @property
    def incident_key(self) -> str:
        """Events group into one incident per account, case-insensitively."""
        return incident_key(self.account)


def incident_key(account: str) -> str:
    return account.casefold()


@dataclass(frozen=True)
class Problem:
    """Something read from a server that could not be used, kept so nobody is blind to it."""

    server: str
    kind: str        # e.g. "malformed_event", "truncated_output", "invalid_utf8", "log_cleared"
    detail: str      # a sentence a person can act on
    excerpt: str = ""  # a bounded piece of the offending input, for diagnosis


@dataclass(frozen=True)
class Sighting:
    """Where an incident's account failed and how: one event ID, server and connector.

    An account can fail with 1018 on one server and 1020 on another; the diagnosis and the fix
    depend on which event named which connector, so an incident keeps each combination once.
    """

    event_id: int
    server: str              # the configured server name
    connector: str | None    # as the event named it, SRV\Name; None when it named none


@dataclass(frozen=True)
class Incident:
    """One problem: an account that keeps failing to submit, on any server or connector."""

    id: int | None                    # None until stored
    key: str                          # incident_key(account)
    account: str                      # as first seen (untrusted)
    status: str                       # "open" or "resolved"
    channel: str                      # where its message lives
    first_seen: datetime
    last_seen: datetime
    event_count: int
    servers: tuple[tuple[str, str], ...]  # (configured name, Exchange host), first-seen order
    connectors: tuple[str, ...]           # connector identities named by its events (untrusted)
    event_ids: tuple[int, ...]
    opened_at: datetime
    message_ts: str | None = None
    resolved_at: datetime | None = None
    last_message_at: datetime | None = None
    acked_by: str | None = None       # Slack user ID of who acknowledged it
    acked_at: datetime | None = None
    ack_note: str | None = None       # free text from the responder (untrusted)
    sightings: tuple[Sighting, ...] = ()  # each (event ID, server, connector) once, in order
    last_stored_at: datetime | None = None  # the bot's time when its newest event was stored
    last_reminded_at: datetime | None = None  # its owners' last thread reminder (delivery's)
    digest_id: int | None = None      # the storm digest that lists it (then it has no post)
    # The closed loop (bot.engine.fixloop), owned by store.fixes: someone marked it fixed, then
    # "waiting" (for the directory to show the right), "watching" (the events), "confirmed"
    # or "failing" (it failed again after the directory showed the right).
    fix_state: str | None = None
    fixed_by: str | None = None       # a Slack user ID
    fixed_at: datetime | None = None
    fix_note: str | None = None       # the responder's words (untrusted)
    fix_seen_at: datetime | None = None   # since when the right shows (or it was marked, alone)
    fix_failed_at: datetime | None = None

    @property
    def stored_id(self) -> int:
        """The id of an incident read from the database (`id` is None only before it is saved)."""
        if self.id is None:
            raise ValueError(f"incident {self.key} was never stored")
        return self.id

    def quiet_since(self) -> datetime:
        """Since when nothing new was seen, by the bot's clock as well as Exchange's: an
        Exchange clock behind the bot's must not make a live incident look quiet."""
        return max(self.last_seen, self.last_stored_at or self.last_seen)

    @property
    def server_names(self) -> tuple[str, ...]:
        return tuple(name for name, _host in self.servers)


@dataclass(frozen=True)
class Digest:
    """A storm's one message in a channel, listing the incidents that opened beyond the
    threshold (bot.engine.outbox.joins_digest); live until none joined for a storm window."""

    id: int
    channel: str                      # as configured: what the threshold counts in
    opened_at: datetime
    last_joined_at: datetime
    channel_id: str | None = None     # the ID Slack answered the post with
    ended_at: datetime | None = None
    message_ts: str | None = None
    last_message_at: datetime | None = None
    detailed_through: int = 0         # the highest incident id its thread has detailed

    @property
    def where(self) -> str:
        return self.channel_id or self.channel


@dataclass(frozen=True)
class DigestLines:
    """What a digest shows: its incidents (newest first, as many as are shown) and totals."""

    digest: Digest
    incidents: tuple[Incident, ...]
    total: int
    open: int
    acknowledged: int
    resolved: int
    events: int
    by_event: tuple[tuple[int, int], ...]    # (1018 or 1020, incidents)


@dataclass(frozen=True)
class Snooze:
    """Silence for one incident, or for every incident of an account, until a time.

    While snoozed, events are still stored and counted; the alert is updated in place, but no new
    message or thread reply is posted (an account snoozed before its incident opened gets its
    first post only when the snooze ends).
    """

    id: int
    kind: str            # "incident" or "account"
    target: str          # the incident id, or the incident key (casefolded account)
    account: str         # as the responder typed it or as the incident shows it (untrusted)
    until: datetime
    reason: str          # free text (untrusted)
    created_by: str      # Slack user ID
    created_at: datetime
    ended_at: datetime | None = None
    ended_by: str | None = None     # a Slack user ID, or None when it simply expired

    def covers(self, incident: Incident) -> bool:
        if self.kind == "incident":
            return self.target == str(incident.id)
        return self.target == incident.key


# --- what the store reads back for status and the chat lookups (rendered by bot.slack) --------

@dataclass(frozen=True)
class ServerState:
    server: str
    generation: int = 0
    cursor: int | None = None          # highest EventRecordID examined; None: never polled
    oldest_record: int | None = None   # the log's oldest record at the last good poll
    last_poll_at: datetime | None = None
    last_success_at: datetime | None = None
    last_error: str | None = None
    last_error_at: datetime | None = None
    consecutive_failures: int = 0
    events_stored: int = 0
    down_since: datetime | None = None  # the "not being watched" alert was raised then
    first_poll_at: datetime | None = None  # SubmitWatch's first poll of it, good or not
    clock_skew: float | None = None      # seconds its event times were ahead (+) or behind (-)
    clock_skew_at: datetime | None = None
    log: str | None = None                # the event log the cursor counts in (None: before m010)


@dataclass(frozen=True)
class Heartbeat:
    """What a Windows Event Collector last said of one of its event sources (store.origins)."""

    origin: str              # the configured server it is (bot.sources.origins)
    collector: str
    computer: str            # as the collector names it
    status: str              # RunTimeStatus: Active, Inactive, Trying...
    last_heartbeat: datetime | None   # None: none yet
    read_at: datetime
    #: "configured" (a [[servers]] entry), "own_name" (no entry: taken under its own short
    #: name) or "ignored" (no entry, and left out: `origin` is then the computer's name)
    taken: str = "configured"


@dataclass(frozen=True)
class OriginEvents:
    """One origin's own events, whichever endpoint read them (store.origins)."""

    origin: str
    last_day: int                 # events stored in the last 24 hours (whole hours)
    last_event: datetime | None   # the newest kept


@dataclass(frozen=True)
class History:
    """Incidents active in a window (last event at or after `since`), newest first."""

    incidents: list[Incident]              # at most `limit`
    total: int                             # incidents in the window, all of them
    open: int                              # of which still open
    per_day: list[tuple[str, int]]         # every UTC day of the window, oldest first:
                                           # ('YYYY-MM-DD', events in the window that day)

    @property
    def events(self) -> int:
        return sum(count for _day, count in self.per_day)


@dataclass(frozen=True)
class EventGroup:
    """An incident's events from one server on one connector (None: event 1020 names none)."""

    server: str          # the events' origin: the configured server that logged them
    connector: str | None
    event_ids: tuple[int, ...]
    count: int
    first: datetime
    last: datetime


@dataclass(frozen=True)
class Moment:
    """One line of an incident's timeline. `detail` is untrusted text (a note, a reason)."""

    at: datetime
    what: str
    user: str | None = None        # a Slack user ID
    detail: str | None = None
    until: datetime | None = None  # for a snooze: when it was set to end


@dataclass(frozen=True)
class IncidentDetail:
    incident: Incident
    groups: list[EventGroup]
    group_count: int
    timeline: list[Moment]
    audit: list[dict[str, Any]]        # store.chat.audit_trail rows, oldest first
    snoozed_until: datetime | None     # when the snooze in force ends, if one is


@dataclass(frozen=True)
class ConnectorSeen:
    server: str          # the events' origin: the configured server that logged them
    connector: str
    count: int
    last: datetime


@dataclass(frozen=True)
class Summary:
    """A period at a glance (`/submitwatch summary`): what is new, what is open, where it
    comes from, and how fast people answer."""

    since: datetime
    until: datetime
    new_accounts: int                          # accounts whose first incident opened in it
    opened: int                                # incidents opened in it
    events: int                                # events logged in it
    open_now: int
    acknowledged_now: int                      # of the open ones
    top_servers: list[tuple[str, int]]         # (server, events in the period), most first
    top_connectors: list[tuple[str, int]]
    median_to_ack: float | None                # seconds, over incidents acknowledged in it
    median_to_resolve: float | None            # seconds, over incidents resolved in it
