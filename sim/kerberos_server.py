"""The server side of Kerberos for the WinRM simulator: the Negotiate handshake with a real KDC's
tickets, and MS-WSMV message encryption with the Kerberos session.

:mod:`sim.winrm_server` uses :class:`KerberosConnection` in place of an NTLM one when it serves
``auth="kerberos"`` (Kerberos only, as a server whose domain refuses NTLM) or, per connection,
when a ``auth="negotiate"`` server receives a Kerberos token (both, as Windows does by default).

* The acceptor is pyspnego's, keyed by the keytab that ``KRB5_KTNAME`` names: the service's
  keys (``HTTP/ex01.<realm>``), exported from the KDC that issued the client's ticket (Samba AD
  in the tests). The variable is process-global, like ``NTLM_USER_FILE``: every Kerberos
  simulator in a process shares one keytab, which may hold many services' keys.
* Kerberos authenticates in one leg: the client's AP-REQ (a raw Kerberos token, which pywinrm
  sends, or SPNEGO around it, which Windows sends) is accepted at once, and the AP-REP goes back
  in ``WWW-Authenticate: Negotiate <token>`` on the 200 answer (mutual authentication: pywinrm
  refuses an answer without it).
* A token that is NTLM, or a SPNEGO exchange that would end in NTLM, is refused: this class
  speaks Kerberos only.
* Sealing (MS-WSMV 2.2.9.1.1): each part is a 4-byte little-endian header length, the GSS wrap
  header, then the sealed data (``gss_wrap_iov``; AES has no padding). pywinrm labels Kerberos
  bodies with the SPNEGO protocol string; the Kerberos one (2.2.9.1.2) is accepted too.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from typing import Any

from sim.ntlm_server import SPNEGO_ENCRYPTED_PROTOCOL, HandshakeStep, sealed_body, sealed_parts

__all__ = ["KERBEROS_ENCRYPTED_PROTOCOL", "KerberosConnection", "is_ntlm_token"]

#: MS-WSMV 2.2.9.1.2's protocol string for a Kerberos-sealed body.
KERBEROS_ENCRYPTED_PROTOCOL = "application/HTTP-Kerberos-session-encrypted"


def is_ntlm_token(authorization: str) -> bool:
    """An ``Authorization: Negotiate|NTLM <token>`` whose token is raw NTLMSSP."""
    _scheme, _, blob = authorization.partition(" ")
    try:
        return base64.b64decode(blob.strip(), validate=True)[:8] == b"NTLMSSP\x00"
    except binascii.Error:
        return False


class KerberosConnection:
    """The Kerberos side of one TCP connection: authenticated once, then sealing and unsealing
    bodies (the same surface as :class:`sim.ntlm_server.NtlmConnection`).

    ``hostname`` is the service's host as its principal names it (``ex01.corp.test`` for
    ``HTTP/ex01.corp.test``). After a successful handshake, :attr:`mutual` holds the
    ``WWW-Authenticate`` value the next answer must carry, once.
    """

    protocols = (SPNEGO_ENCRYPTED_PROTOCOL, KERBEROS_ENCRYPTED_PROTOCOL)

    def __init__(self, hostname: str) -> None:
        self.hostname = hostname
        self._context: Any = None
        self.principal: str | None = None
        self.mutual: str | None = None
        self.protocol = SPNEGO_ENCRYPTED_PROTOCOL
        #: Why the last handshake failed, in the acceptor's words (for the tests' asserts).
        self.last_error = ""

    @property
    def authenticated(self) -> bool:
        return self._context is not None

    def forget(self) -> None:
        self._context = None

    def authenticate(self, authorization: str, knows_user: Callable[[str], bool]) -> HandshakeStep:
        import spnego

        scheme, _, blob = authorization.partition(" ")
        if scheme.lower() not in ("negotiate", "kerberos"):
            return HandshakeStep("established" if self._context is not None else "offer")
        try:
            token = base64.b64decode(blob.strip(), validate=True)
        except binascii.Error:
            token = b""
        if not token:
            return HandshakeStep("offer")
        if token[:8] == b"NTLMSSP\x00":
            self.last_error = "an NTLM token, and this server takes Kerberos only"
            return HandshakeStep("failed")
        context = None
        try:
            context = spnego.server(hostname=self.hostname, service="HTTP", protocol="negotiate")
            answer = context.step(token)
        except Exception as exc:  # a ticket the keytab cannot decrypt, a skewed clock...
            self.last_error = _acceptor_error(context, exc)
            return HandshakeStep("failed")
        if not context.complete or context.negotiated_protocol != "kerberos":
            self.last_error = f"the handshake did not end in Kerberos ({context.negotiated_protocol})"
            return HandshakeStep("failed")
        principal = context.client_principal
        if not principal or not knows_user(principal):
            self.last_error = f"{principal!r} is not a user of this server"
            return HandshakeStep("failed")
        self._context, self.principal = context, principal
        self.mutual = f"{scheme} {base64.b64encode(answer).decode('ascii')}" if answer else None
        return HandshakeStep("authenticated")

    def unseal(self, body: bytes, content_type: str = "") -> bytes:
        from spnego.iov import BufferType

        if KERBEROS_ENCRYPTED_PROTOCOL.lower() in content_type.lower():
            self.protocol = KERBEROS_ENCRYPTED_PROTOCOL
        plain = b""
        for length, header, sealed in sealed_parts(body, self.protocols):
            # unwrap_iov, not unwrap_winrm: the latter asks the context for its mechanism first,
            # which fails once the ticket has expired, on a connection still in use.
            message = self._context.unwrap_iov([(BufferType.header, header), sealed,
                                                BufferType.data]).buffers[1].data or b""
            if len(message) != length:
                raise ValueError("decrypted length does not match OriginalContent")
            plain += message
        return plain

    def seal(self, message: bytes) -> bytes:
        wrapped = self._context.wrap_winrm(message)
        return sealed_body(self.protocol, len(message), wrapped.header, wrapped.data)

    @property
    def content_type(self) -> str:
        return f'multipart/encrypted;protocol="{self.protocol}";boundary="Encrypted Boundary"'


def _acceptor_error(context: Any, exc: Exception) -> str:
    """The acceptor's real error. python-gssapi keeps a failed step's GSSError on the context
    (returning the KRB-ERROR token to send), and pyspnego then fails on something else: dig it
    out, so a test or a log says "Clock skew too great", not "Cannot read flags"."""
    found = None
    inner = getattr(context, "_context", None)
    for candidate in (inner, getattr(inner, "_context", None)):
        found = found or getattr(candidate, "_last_err", None)
    for entry in (getattr(context, "_context_list", None) or {}).values():
        found = found or getattr(getattr(entry[0], "_context", None), "_last_err", None)
    return str(found or f"{type(exc).__name__}: {exc}")
