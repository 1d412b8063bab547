"""Windows security descriptors as Active Directory returns them (`nTSecurityDescriptor`), read
from their self-relative binary form (MS-DTYP 2.4.6), and the AuthZ rule for one extended right.

Parsed here rather than with a library: ldap3 returns the bytes only, impacket is far too heavy
for ~150 lines, and what we need (SIDs, ACE types 0/1/5/6, object GUIDs) is small and fixed.
Everything is pure: bytes in, frozen dataclasses out; malformed input raises
SecurityDescriptorError, never IndexError or struct.error.
"""
from __future__ import annotations

import struct
import uuid
from collections.abc import Collection
from dataclasses import dataclass

# ACE types (MS-DTYP 2.4.4.1). Others (audit, callback, conditional) are kept as "other": they
# neither grant nor deny here, as AuthZ ignores audit ACEs for access and we evaluate no
# conditional expressions (Exchange sets none on connectors).
ACCESS_ALLOWED = 0x00
ACCESS_DENIED = 0x01
ACCESS_ALLOWED_OBJECT = 0x05
ACCESS_DENIED_OBJECT = 0x06

# ACE flags.
OBJECT_INHERIT = 0x01
CONTAINER_INHERIT = 0x02
NO_PROPAGATE_INHERIT = 0x04
INHERIT_ONLY = 0x08
INHERITED = 0x10

# Object ACE flags: which GUIDs follow the mask.
_OBJECT_TYPE_PRESENT = 0x1
_INHERITED_OBJECT_TYPE_PRESENT = 0x2

# Access mask bits that matter for an extended right (MS-ADTS 5.1.3.2): the control-access bit
# itself, and GENERIC_ALL (stored generic bits are rare, as AD maps them on write, but a
# descriptor written raw may hold one).
DS_CONTROL_ACCESS = 0x00000100
GENERIC_ALL = 0x10000000
READ_CONTROL = 0x00020000

# Security descriptor control bits.
SE_DACL_PRESENT = 0x0004
SE_SELF_RELATIVE = 0x8000

_RIGHT_LETTERS = (  # SDDL's letters for the directory-service bits, in SDDL's usual order
    (GENERIC_ALL, "GA"), (0x00000001, "CC"), (0x00000002, "DC"), (0x00000004, "LC"),
    (0x00000008, "SW"), (0x00000010, "RP"), (0x00000020, "WP"), (0x00000040, "DT"),
    (0x00000080, "LO"), (DS_CONTROL_ACCESS, "CR"), (0x00010000, "SD"), (READ_CONTROL, "RC"),
    (0x00040000, "WD"), (0x00080000, "WO"))


class SecurityDescriptorError(ValueError):
    """The bytes are not a self-relative security descriptor (says where it broke)."""


@dataclass(frozen=True)
class Ace:
    type: int
    flags: int
    mask: int
    sid: str
    object_type: uuid.UUID | None = None
    inherited_object_type: uuid.UUID | None = None

    @property
    def is_allow(self) -> bool:
        return self.type in (ACCESS_ALLOWED, ACCESS_ALLOWED_OBJECT)

    @property
    def is_deny(self) -> bool:
        return self.type in (ACCESS_DENIED, ACCESS_DENIED_OBJECT)

    @property
    def inherited(self) -> bool:
        return bool(self.flags & INHERITED)

    @property
    def inherit_only(self) -> bool:
        return bool(self.flags & INHERIT_ONLY)

    def sddl(self) -> str:
        """The ACE in SDDL, with SIDs written out (no aliases) and rights as letters where
        SDDL has them (else the mask in hex): for messages a person can paste into dsacls."""
        kind = {ACCESS_ALLOWED: "A", ACCESS_DENIED: "D", ACCESS_ALLOWED_OBJECT: "OA",
                ACCESS_DENIED_OBJECT: "OD"}.get(self.type, f"0x{self.type:02x}")
        flags = "".join(letters for bit, letters in ((OBJECT_INHERIT, "OI"),
                                                     (CONTAINER_INHERIT, "CI"),
                                                     (NO_PROPAGATE_INHERIT, "NP"),
                                                     (INHERIT_ONLY, "IO"), (INHERITED, "ID"))
                        if self.flags & bit)
        rest = self.mask
        rights = ""
        for bit, letters in _RIGHT_LETTERS:
            if rest & bit:
                rights += letters
                rest &= ~bit
        if rest:
            rights = f"0x{self.mask:08x}"
        object_type = str(self.object_type) if self.object_type else ""
        inherited_type = str(self.inherited_object_type) if self.inherited_object_type else ""
        return f"({kind};{flags};{rights};{object_type};{inherited_type};{self.sid})"


@dataclass(frozen=True)
class SecurityDescriptor:
    control: int
    owner: str | None
    group: str | None
    #: None with `dacl_present`: a NULL DACL (everyone may do anything); None without it: the
    #: DACL was not part of what was read.
    dacl: tuple[Ace, ...] | None

    @property
    def dacl_present(self) -> bool:
        return bool(self.control & SE_DACL_PRESENT)


@dataclass(frozen=True)
class Decision:
    """What AuthZ decides for one extended right: allowed (True/False), or None when no ACE
    speaks for any SID in the token (not granted); `ace` is the ACE that decided."""
    allowed: bool | None
    ace: Ace | None
    index: int | None = None  # the ACE's position in the DACL, from 0


def sid_from_bytes(data: bytes, offset: int = 0) -> tuple[str, int]:
    """A binary SID at `offset` as 'S-1-5-21-...', and the offset just past it."""
    if len(data) < offset + 8:
        raise SecurityDescriptorError(f"SID at byte {offset} is cut short")
    revision, count = data[offset], data[offset + 1]
    if revision != 1 or count > 15:
        raise SecurityDescriptorError(f"SID at byte {offset}: revision {revision} with {count} "
                                      "sub-authorities is not a SID")
    end = offset + 8 + 4 * count
    if len(data) < end:
        raise SecurityDescriptorError(f"SID at byte {offset} is cut short")
    authority = int.from_bytes(data[offset + 2:offset + 8], "big")
    subs = struct.unpack_from(f"<{count}I", data, offset + 8)
    return "-".join(["S", "1", str(authority), *map(str, subs)]), end


def sid_to_bytes(sid: str) -> bytes:
    """'S-1-5-21-...' in binary, as LDAP filters and comparisons need it."""
    parts = sid.split("-")
    if len(parts) < 3 or parts[0] != "S" or parts[1] != "1" or not all(
            p.isdigit() for p in parts[2:]) or len(parts) - 3 > 15:
        raise SecurityDescriptorError(f"{sid!r} is not a SID such as 'S-1-5-11'")
    subs = [int(p) for p in parts[3:]]
    if int(parts[2]) >= 1 << 48 or any(sub >= 1 << 32 for sub in subs):
        raise SecurityDescriptorError(f"{sid!r} is not a SID: a part is out of range")
    return (bytes([1, len(subs)]) + int(parts[2]).to_bytes(6, "big")
            + struct.pack(f"<{len(subs)}I", *subs))


def parse_security_descriptor(data: bytes) -> SecurityDescriptor:
    """A self-relative security descriptor (what `nTSecurityDescriptor` holds)."""
    if len(data) < 20:
        raise SecurityDescriptorError(f"{len(data)} bytes are too few for a security descriptor")
    revision, _, control, owner_at, group_at, _sacl_at, dacl_at = struct.unpack_from(
        "<BBHIIII", data)
    if revision != 1:
        raise SecurityDescriptorError(f"security descriptor revision {revision}, expected 1")
    if not control & SE_SELF_RELATIVE:
        raise SecurityDescriptorError("security descriptor is not self-relative")
    owner = sid_from_bytes(data, owner_at)[0] if owner_at else None
    group = sid_from_bytes(data, group_at)[0] if group_at else None
    dacl = _acl(data, dacl_at) if control & SE_DACL_PRESENT and dacl_at else None
    return SecurityDescriptor(control=control, owner=owner, group=group, dacl=dacl)


def _acl(data: bytes, at: int) -> tuple[Ace, ...]:
    if len(data) < at + 8:
        raise SecurityDescriptorError(f"ACL at byte {at} is cut short")
    revision, _, size, count, _ = struct.unpack_from("<BBHHH", data, at)
    if revision not in (2, 4) or len(data) < at + size:
        raise SecurityDescriptorError(f"ACL at byte {at}: revision {revision}, {size} bytes "
                                      f"of {len(data) - at} left")
    aces, offset = [], at + 8
    for n in range(count):
        if offset + 4 > at + size:
            raise SecurityDescriptorError(f"ACE {n} lies past the end of its ACL")
        ace_type, flags, ace_size = struct.unpack_from("<BBH", data, offset)
        if ace_size < 8 or offset + ace_size > at + size:
            raise SecurityDescriptorError(f"ACE {n} claims {ace_size} bytes")
        aces.append(_ace(data[offset:offset + ace_size], ace_type, flags, n))
        offset += ace_size
    return tuple(aces)


def _ace(body: bytes, ace_type: int, flags: int, n: int) -> Ace:
    mask = struct.unpack_from("<I", body, 4)[0]
    if ace_type not in (ACCESS_ALLOWED_OBJECT, ACCESS_DENIED_OBJECT, 0x07, 0x0B, 0x0C, 0x0F):
        # Basic layout: header, mask, SID (audit and callback ACEs share it).
        return Ace(ace_type, flags, mask, sid_from_bytes(body, 8)[0])
    if len(body) < 12:
        raise SecurityDescriptorError(f"object ACE {n} is cut short")
    present = struct.unpack_from("<I", body, 8)[0]
    offset = 12
    guids: list[uuid.UUID | None] = []
    for bit in (_OBJECT_TYPE_PRESENT, _INHERITED_OBJECT_TYPE_PRESENT):
        if present & bit:
            if len(body) < offset + 16:
                raise SecurityDescriptorError(f"object ACE {n}: GUID cut short")
            guids.append(uuid.UUID(bytes_le=body[offset:offset + 16]))  # GUIDs are mixed-endian
            offset += 16
        else:
            guids.append(None)
    return Ace(ace_type, flags, mask, sid_from_bytes(body, offset)[0], guids[0], guids[1])


def check_extended_right(sd: SecurityDescriptor, token: Collection[str],
                         right: uuid.UUID) -> Decision:
    """AuthZ's answer for one control-access right (MS-DTYP 2.5.3.2, MS-ADTS 5.1.3.3.3):

    walk the DACL in its stored order; skip inherit-only ACEs (they are for children) and ACEs
    for SIDs not in the token; an ACE speaks for the right when it carries the control-access bit
    (or GENERIC_ALL) and is either a plain ACE or an object ACE whose object type is the right's
    GUID. The first such ACE decides: a Deny that comes first wins, an Allow that comes first
    grants (a canonical DACL puts explicit Denies before explicit Allows before inherited ones).
    Object ACEs for a property set or the object's class are not counted: connectors carry none
    for this right, and the class GUID would need the schema.
    A NULL DACL (present, but no ACL) grants everything; an empty DACL grants nothing.
    """
    if not sd.dacl_present:
        raise SecurityDescriptorError("the descriptor holds no DACL (it was read without asking "
                                      "for one), so it cannot decide a right")
    if sd.dacl is None:
        return Decision(True, None)
    for index, ace in enumerate(sd.dacl):
        if ace.sid in token and speaks_for(ace, right):
            return Decision(ace.is_allow, ace, index)
    return Decision(None, None)


def speaks_for(ace: Ace, right: uuid.UUID) -> bool:
    """Whether the ACE allows or denies the control-access right on the object itself, whoever
    it names (check_extended_right's rule, without the token): not inherit-only, an allow or a
    deny, carrying the control-access bit or GENERIC_ALL, and plain or for the right's GUID."""
    if ace.inherit_only or not (ace.is_allow or ace.is_deny):
        return False
    if not ace.mask & (DS_CONTROL_ACCESS | GENERIC_ALL):
        return False
    return not (ace.type in (ACCESS_ALLOWED_OBJECT, ACCESS_DENIED_OBJECT)
                and ace.object_type is not None and ace.object_type != right)
