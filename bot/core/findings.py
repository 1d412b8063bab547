"""What Active Directory said about an account's Submit right, as plain data: a `Finding` per
check, a `ConnectorFact` per connector. bot.directory.adcheck makes them; store/ keeps them as
JSON; the alert, `show` and `verify` render them; the fix loop compares them.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class ConnectorFact:
    """One Receive connector as the directory has it, and the account's Submit right there."""

    server: str
    name: str
    found: bool
    right: str = "unknown"          # granted, denied, not granted, unknown
    why: str = ""                   # the finding in one sentence (bot.directory.reader.Right.text)
    enabled: bool | None = None
    bindings: tuple[str, ...] = ()
    remote_ip_ranges: tuple[str, ...] = ()
    role: str | None = None
    auth: tuple[str, ...] = ()
    permission_groups: tuple[str, ...] | None = None
    named: bool = False             # the account's events named this connector
    # The entry that decided (granted or denied), as the directory names it: its trustee and
    # SID, whether it names the account itself, whether it is inherited, and what it covers:
    # "submit" (ms-Exch-SMTP-Submit), "extended" (every extended right) or "all" (GenericAll).
    trustee: str | None = None
    trustee_sid: str | None = None
    explicit: bool = False
    inherited: bool | None = None
    scope: str = "submit"

    @property
    def place(self) -> str:
        return f"{self.server}\\{self.name}"

    def brief(self) -> str:
        """The connector's verdict in a few words."""
        if not self.found:
            return self.why or "no such connector in the directory"
        state = "" if self.enabled is not False else " (the connector is disabled)"
        if self.right == "granted":
            return f"Submit granted{self._entry()}{state}"
        if self.right == "denied":
            return f"Submit denied by a Deny entry{self._entry(denied=True)}{state}"
        if self.right == "not granted":
            return f"Submit not granted{state}"
        return f"Submit right unknown: {self.why}"

    def _entry(self, denied: bool = False) -> str:
        """Whose entry decided, in a few words ("" when the directory did not say)."""
        who = self.trustee or self.trustee_sid
        if who is None:
            return ""
        inherited = ", inherited" if self.inherited else ""
        if self.explicit:
            return f" ({'for' if denied else 'to'} the account itself{inherited})"
        return f" ({'for' if denied else 'through'} {who}{inherited})"


@dataclass(frozen=True)
class Finding:
    """One check of an account: who it is, and its right on each connector asked about."""

    account: str                       # the name asked about (untrusted, as the event had it)
    checked_at: datetime
    error: str | None = None           # the directory could not answer: why, in words
    fix: tuple[str, ...] = ()          # read-only delegation commands, when that would help
    found: bool = False                # the account exists in the directory
    sid: str | None = None
    rid: int | None = None
    builtin: str | None = None         # "Administrator" (RID 500) or "Guest" (RID 501)
    disabled: bool = False
    groups: int = 0                    # token groups
    connectors: tuple[ConnectorFact, ...] = field(default_factory=tuple)
    #: The account's name as the directory has it (DOMAIN\\sAMAccountName): shown when Exchange
    #: logged a SID string instead of a name.
    name: str | None = None

    @property
    def granted(self) -> bool:
        """The right shows on every connector asked about that the directory has (and it has
        at least one): a connector renamed or gone, or a server the directory does not know,
        is shown, but cannot hold the loop up forever."""
        found = [c for c in self.connectors if c.found]
        return bool(found) and not self.error and all(
            c.right == "granted" and c.enabled is not False for c in found)

    @property
    def denied(self) -> tuple[ConnectorFact, ...]:
        return tuple(c for c in self.connectors if c.right == "denied")

    def summary(self) -> str:
        """The alert's Directory line (plain words; the caller escapes what it shows)."""
        if self.error:
            return f"could not be read: {self.error}"
        if not self.found and self.account.upper().startswith("S-1-"):
            return (f"no account has the SID {self.account} in the directory (Exchange logs a "
                    "SID when it cannot resolve the name)")
        if not self.found:
            return f"no account {self.account} in the directory"
        if self.builtin:
            return (f"{self.account} is the domain's built-in {self.builtin} (RID {self.rid}): "
                    "Exchange refuses it whatever its rights")
        parts = [f"{c.place}: {c.brief()}" for c in self.connectors]
        if not parts:
            return (f"{self.account} is not the built-in Administrator or Guest (RID "
                    f"{self.rid}, {self.groups} group(s)); its events named no connector to "
                    "check")
        return "; ".join(parts) + (" (the account is disabled)" if self.disabled else "")

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["checked_at"] = self.checked_at.isoformat()
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Finding:
        connectors = tuple(ConnectorFact(**{**c, "bindings": tuple(c["bindings"]),
                                            "remote_ip_ranges": tuple(c["remote_ip_ranges"]),
                                            "auth": tuple(c["auth"]),
                                            "permission_groups": None
                                            if c["permission_groups"] is None
                                            else tuple(c["permission_groups"])})
                           for c in data.get("connectors", ()))
        return cls(**{**data, "checked_at": datetime.fromisoformat(data["checked_at"]),
                      "fix": tuple(data.get("fix", ())), "connectors": connectors})
