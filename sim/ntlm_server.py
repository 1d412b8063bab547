"""The server side of NTLM for the WinRM simulator: credentials, handshake, message encryption.

:mod:`sim.winrm_server` uses three things from here:

* :func:`register_users` / :func:`unregister_users` keep the credential file
  that pyspnego's NTLM acceptor reads.  pyspnego finds it through the
  ``NTLM_USER_FILE`` environment variable, which is process-global, so all
  running simulators share one generated file (see :class:`_NtlmUserFile`);
  each simulator still only accepts its own users, by checking the
  authenticated principal itself.  The variable is restored when the last
  simulator unregisters.  Do not run an NTLM simulator in a process that
  needs its own ``NTLM_USER_FILE``.
* :class:`NtlmConnection` runs the HTTP Negotiate handshake for one TCP
  connection (NTLM authenticates connections, not requests) and keeps the
  resulting security context.
* :meth:`NtlmConnection.seal` / :meth:`NtlmConnection.unseal` implement the
  MS-WSMV 2.2.9.1.1 ``multipart/encrypted`` framing, byte for byte what
  pywinrm's ``winrm/encryption.py`` produces and parses.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import os
import re
import shutil
import struct
import tempfile
import threading
from collections.abc import Callable, Mapping
from typing import Any, Literal

import spnego

__all__ = [
    "ENCRYPTED_CONTENT_TYPE",
    "SPNEGO_ENCRYPTED_PROTOCOL",
    "HandshakeStep",
    "NtlmConnection",
    "register_users",
    "unregister_users",
]

#: The ``protocol`` of a ``multipart/encrypted`` body sealed with an NTLM (SPNEGO) session.
SPNEGO_ENCRYPTED_PROTOCOL = "application/HTTP-SPNEGO-session-encrypted"
#: Content-Type of a sealed response.
ENCRYPTED_CONTENT_TYPE = f'multipart/encrypted;protocol="{SPNEGO_ENCRYPTED_PROTOCOL}";boundary="Encrypted Boundary"'

# MS-WSMV 2.2.9.1.1 framing pieces, as winrm/encryption.py writes them.
_BOUNDARY = b"--Encrypted Boundary"
_OCTET_STREAM = b"\tContent-Type: application/octet-stream\r\n"


# --------------------------------------------------------------------------------------------------
# Credential file (process-global, shared by all running simulators)
# --------------------------------------------------------------------------------------------------


class _NtlmUserFile:
    """Owns the ``NTLM_USER_FILE`` that pyspnego's NTLM acceptor reads.

    The variable is process-global and pyspnego re-reads the file on every
    authentication, so concurrently running simulators share one file holding
    the union of their users (rewritten atomically).  The same user with two
    different passwords cannot be represented and is refused.
    """

    _UNSET = object()

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._owners: dict[int, dict[str, str]] = {}
        self._dir: str | None = None
        self._saved: Any = self._UNSET

    def register(self, owner: int, users: Mapping[str, str]) -> None:
        with self._lock:
            for other, theirs in self._owners.items():
                if other == owner:
                    continue
                for name, pw in users.items():
                    for their_name, their_pw in theirs.items():
                        if name.lower() == their_name.lower() and pw != their_pw:
                            raise ValueError(f"user {name!r} is already served by another running simulator with a different password")
            self._owners[owner] = dict(users)
            self._write()

    def unregister(self, owner: int) -> None:
        with self._lock:
            if self._owners.pop(owner, None) is None:
                return
            if self._owners:
                self._write()
                return
            if self._saved is self._UNSET or self._saved is None:
                os.environ.pop("NTLM_USER_FILE", None)
            else:
                os.environ["NTLM_USER_FILE"] = self._saved
            self._saved = self._UNSET
            if self._dir:
                shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def _write(self) -> None:
        if self._dir is None:
            self._dir = tempfile.mkdtemp(prefix="submitwatch-ntlm-")
            self._saved = os.environ.get("NTLM_USER_FILE")
        lines = [_user_file_line(name, pw) for users in self._owners.values() for name, pw in users.items()]
        path = os.path.join(self._dir, "ntlm_users")
        tmp = path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write("\n".join(lines) + "\n")
        os.replace(tmp, path)  # atomic: an authentication in flight never sees half a file
        os.environ["NTLM_USER_FILE"] = path


def _user_file_line(name: str, password: str) -> str:
    """One credential line for pyspnego.

    The smbpasswd form (``NAME:UID:LM:NT:FLAGS:LCT``) with precomputed hashes
    is preferred: with the plain ``DOMAIN:user:password`` form pyspnego
    derives the LM hash with pure-Python DES on every authentication, a few
    milliseconds each, which shows up in benchmarks.  The hash helpers are
    private to pyspnego, hence the fallback.
    """
    try:
        from spnego._ntlm_raw.crypto import lmowfv1, ntowfv1
    except ImportError:  # pragma: no cover - pyspnego moved its internals
        domain, _, user = name.rpartition("\\")
        return f"{domain}:{user}:{password}"
    lm, nt = base64.b16encode(lmowfv1(password)).decode(), base64.b16encode(ntowfv1(password)).decode()
    return f"{name}:1000:{lm}:{nt}:[U]:LCT-00000000"


_USER_FILE = _NtlmUserFile()


def register_users(owner: int, users: Mapping[str, str]) -> None:
    """Add ``owner``'s ``users`` (name -> password) to the shared ``NTLM_USER_FILE``.

    ``owner`` is any id unique among running simulators (they use ``id(self)``).
    Raises ValueError if another owner already serves one of the names with a
    different password.
    """
    _USER_FILE.register(owner, users)


def unregister_users(owner: int) -> None:
    """Drop ``owner``'s users; the last owner out deletes the file and restores ``NTLM_USER_FILE``."""
    _USER_FILE.unregister(owner)


# --------------------------------------------------------------------------------------------------
# One connection: Negotiate handshake and message encryption
# --------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class HandshakeStep:
    """What :meth:`NtlmConnection.authenticate` made of one request's Authorization header.

    ``outcome`` is one of:

    * ``"established"``: the connection authenticated earlier; serve the request.
    * ``"authenticated"``: the AUTHENTICATE_MESSAGE was accepted just now; serve the request.
    * ``"offer"``: no Negotiate token; answer 401 ``Negotiate`` so the client starts the handshake.
    * ``"challenge"``: answer 401 ``Negotiate <token>`` carrying the CHALLENGE_MESSAGE.
    * ``"failed"``: wrong password, unknown user or a broken token; answer 401 ``Negotiate``.
    """

    outcome: Literal["established", "authenticated", "offer", "challenge", "failed"]
    token: bytes | None = None  # the CHALLENGE_MESSAGE, for "challenge"

    @property
    def may_proceed(self) -> bool:
        return self.outcome in ("established", "authenticated")


class NtlmConnection:
    """The NTLM side of one TCP connection: the Negotiate handshake, then sealing and unsealing bodies.

    NTLM authenticates connections, not requests: once the handshake is done,
    later requests on the connection carry no Authorization header and are
    served, and their bodies are sealed with this connection's context.
    """

    #: The ``protocol`` strings of the sealed bodies it takes, and of those it answers.
    protocols = (SPNEGO_ENCRYPTED_PROTOCOL,)
    content_type = ENCRYPTED_CONTENT_TYPE

    def __init__(self) -> None:
        self._context: Any = None  # established security context
        self._pending: Any = None  # context between CHALLENGE and AUTHENTICATE
        self.principal: str | None = None  # who authenticated this connection

    @property
    def authenticated(self) -> bool:
        return self._context is not None

    def forget(self) -> None:
        """Drop the established context, so the client has to authenticate again."""
        self._context = None

    def authenticate(self, authorization: str, knows_user: Callable[[str], bool]) -> HandshakeStep:
        """Run one leg of the Negotiate handshake for a request's ``Authorization`` header.

        Legs: no token -> offer ``Negotiate``; NEGOTIATE_MESSAGE -> the
        CHALLENGE; AUTHENTICATE_MESSAGE -> authenticated if pyspnego accepts it
        and ``knows_user(principal)`` (pyspnego's user file holds the users of
        every running simulator, so each one vets its own).  Only raw NTLM
        inside Negotiate is understood (what requests_ntlm sends), not
        SPNEGO-wrapped Kerberos.
        """
        scheme, _, blob = authorization.partition(" ")
        if scheme.lower() not in ("negotiate", "ntlm"):
            return HandshakeStep("established" if self._context is not None else "offer")
        try:
            token = base64.b64decode(blob.strip(), validate=True)
        except binascii.Error:
            token = b""
        msg_type = struct.unpack("<I", token[8:12])[0] if token[:8] == b"NTLMSSP\x00" and len(token) >= 12 else 0

        if msg_type == 1:
            self._context = None
            try:
                ctx = spnego.server(protocol="ntlm", options=spnego.NegotiateOptions.use_ntlm)
                challenge = ctx.step(token)
            except Exception:
                challenge = None
            if challenge:
                self._pending = ctx
                return HandshakeStep("challenge", challenge)
        elif msg_type == 3 and self._pending is not None:
            ctx, self._pending = self._pending, None
            try:
                ctx.step(token)
                principal = ctx.client_principal if ctx.complete else None
            except Exception:  # wrong password, bad MIC, unknown user...
                principal = None
            if principal and knows_user(principal):
                self._context = ctx
                self.principal = principal
                return HandshakeStep("authenticated")
        self._pending = None
        return HandshakeStep("failed")

    def unseal(self, body: bytes, content_type: str = "") -> bytes:
        """Decrypt a pywinrm ``multipart/encrypted`` body with this connection's context
        (``content_type``: the request's, which names the protocol; NTLM has one).

        Raises on bad framing, a wrong signature or an out-of-sequence message.
        """
        plain = b""
        for length, signature, sealed in sealed_parts(body, self.protocols):
            message = self._context.unwrap(signature + sealed).data
            if len(message) != length:
                raise ValueError("decrypted length does not match OriginalContent")
            plain += message
        return plain

    def seal(self, message: bytes) -> bytes:
        """Encrypt a response exactly as winrm/encryption.py expects to parse it."""
        wrapped = self._context.wrap(message, encrypt=True).data
        return sealed_body(SPNEGO_ENCRYPTED_PROTOCOL, len(message), wrapped[:16], wrapped[16:])


def sealed_parts(body: bytes, protocols: tuple[str, ...]) -> list[tuple[int, bytes, bytes]]:
    """The parts of an MS-WSMV ``multipart/encrypted`` body (2.2.9.1.1): each one's
    OriginalContent length, its signature (the GSS header), its sealed data. ValueError for
    framing that is not what winrm/encryption.py writes, or a protocol not in ``protocols``."""
    parts = [p for p in body.split(_BOUNDARY + b"\r\n") if p]
    if not parts or len(parts) % 2:
        raise ValueError("malformed multipart/encrypted body")
    found = []
    for header, payload in zip(parts[0::2], parts[1::2], strict=True):
        m = re.search(rb"Length=(\d+)", header)
        if not m or not any(p.encode() in header for p in protocols):
            raise ValueError("missing OriginalContent length")
        if payload.endswith(_BOUNDARY + b"--\r\n"):
            payload = payload[: -len(_BOUNDARY + b"--\r\n")]
        if not payload.startswith(_OCTET_STREAM):
            raise ValueError("missing octet-stream part")
        data = payload[len(_OCTET_STREAM) :]
        (sig_len,) = struct.unpack("<I", data[:4])
        found.append((int(m.group(1)), data[4 : 4 + sig_len], data[4 + sig_len :]))
    return found


def sealed_body(protocol: str, length: int, signature: bytes, sealed: bytes) -> bytes:
    """One sealed message framed as winrm/encryption.py parses it."""
    return (
        _BOUNDARY + b"\r\n"
        b"\tContent-Type: " + protocol.encode() + b"\r\n"
        b"\tOriginalContent: type=application/soap+xml;charset=UTF-8;Length=" + str(length).encode() + b"\r\n"
        + _BOUNDARY + b"\r\n" + _OCTET_STREAM
        + struct.pack("<I", len(signature)) + signature + sealed
        + _BOUNDARY + b"--\r\n"
    )
