"""Send alert messages through slack_sdk, and say in words what went wrong when Slack refuses.

Retries of 429 (honouring Retry-After) and 500/503 are slack_sdk's own retry handlers; what is
left after them becomes a DeliveryError that says whether waiting can help. Alert delivery does
not let slack_sdk retry connection errors: a connection reset after Slack took a post would post
it twice. The outbox retries instead, and first looks for the message in Slack (`find_sent`).
"""
from __future__ import annotations

import socket
import ssl
from dataclasses import dataclass
from typing import NamedTuple
from urllib.parse import SplitResult, urlsplit

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_handlers import (
    ConnectionErrorRetryHandler,
    RateLimitErrorRetryHandler,
    ServerErrorRetryHandler,
)

from bot.core import counters
from bot.core.config import SlackConfig
from bot.core.inert import inert
from bot.slack.blocks import fallback
from bot.slack.text import FIXES


class Posted(NamedTuple):
    """A message Slack took: its ts, and the channel ID Slack answered with (the config may
    name the channel, `#alerts`; chat.update and conversations.* need the ID)."""

    ts: str
    channel: str


#: Slack refused the message itself: sent again unchanged it is refused again, whatever a
#: person does meanwhile (DOMAIN.md section 10). Rendered smaller once, else given up.
REFUSED_AS_SENT = frozenset({"msg_blocks_too_long", "invalid_blocks", "invalid_blocks_format",
                             "no_text", "invalid_arguments", "msg_too_long"})


class DeliveryError(Exception):
    """A send failed. `permanent` means waiting alone will not fix it; `refused`, that the
    message as it is will never be taken (retrying it unchanged is pointless)."""

    def __init__(self, message: str, *, code: str, permanent: bool):
        super().__init__(message)
        self.code = code
        self.permanent = permanent

    @property
    def refused(self) -> bool:
        return self.code in REFUSED_AS_SENT


@dataclass
class SlackSender:
    client: WebClient

    @classmethod
    def from_config(cls, slack: SlackConfig, *, timeout: int = 15, retries: int = 2) -> SlackSender:
        return cls(make_client(slack.api_url, slack.bot_token.reveal() if slack.bot_token else None,
                               timeout=timeout, retries=retries, connection_retries=False))

    def find_sent(self, channel: str, marker: dict, *, thread_ts: str | None = None) -> str | None:
        """The ts of a message we sent with metadata payload `marker`, among the newest 200.

        Used before sending again a post or reply whose earlier attempt may have reached Slack.
        No time window: Slack's clock and ours need not agree.
        """
        found = self.find_all_sent(channel, marker, thread_ts=thread_ts)
        return found[0] if found else None

    def find_all_sent(self, channel: str, marker: dict, *,
                      thread_ts: str | None = None) -> list[str]:
        """The ts of every message (newest 200) whose metadata payload holds `marker`."""
        method, params = "conversations.history", {"channel": channel, "limit": 200,
                                                   "include_all_metadata": True}
        if thread_ts:
            method, params = "conversations.replies", {**params, "ts": thread_ts}
        response = self._call(method, channel, **params)
        found = []
        for message in response.get("messages", []):
            payload = (message.get("metadata") or {}).get("event_payload") or {}
            if all(payload.get(k) == v for k, v in marker.items()):
                found.append(message["ts"])
        return found

    def delete(self, channel: str, ts: str) -> None:
        self._call("chat.delete", channel, channel=channel, ts=ts)

    def post(self, channel: str, text: str, blocks: list[dict], *, thread_ts: str | None = None,
             metadata: dict | None = None) -> Posted:
        """Post a message; return its ts and the channel's ID. The fallback text is kept within
        Slack's recommended 4,000 characters whatever the caller built."""
        response = self._call("chat.postMessage", channel, channel=channel,
                              text=fallback(text),
                              blocks=blocks, thread_ts=thread_ts, metadata=metadata,
                              unfurl_links=False, unfurl_media=False)
        return Posted(response["ts"], response.get("channel") or channel)

    def update(self, channel: str, ts: str, text: str, blocks: list[dict]) -> None:
        self._call("chat.update", channel, channel=channel, ts=ts, text=fallback(text),
                   blocks=blocks)

    def _call(self, method: str, where: str, **kwargs):
        kwargs = {k: v for k, v in kwargs.items() if v is not None}
        try:
            if method.startswith("conversations."):  # read methods take form parameters
                response = self.client.api_call(method, params=kwargs)
            else:
                response = self.client.api_call(method, json=kwargs)
            counters.record_slack_call(method)
            return response
        except SlackApiError as exc:
            status = exc.response.status_code
            # A non-200 answer (429 after retries, 5xx) may not even be JSON: name it by status.
            code = (exc.response.get("error") if status == 200 else None) or f"http_{status}"
            counters.record_slack_call(method, code)
            fix = FIXES.get(code)
            if fix:
                raise DeliveryError(f"Slack {method} failed ({code}): " + fix.format(channel=where),
                                    code=code, permanent=True) from None
            raise DeliveryError(f"Slack {method} failed ({code}, HTTP {status}); will retry",
                                code=code, permanent=False) from None
        except OSError as exc:  # URLError, timeouts, resets left after the retry handlers
            counters.record_slack_call(method, "unreachable")
            raise DeliveryError(f"Slack is unreachable at {self.client.base_url} "
                                f"({unreachable_words(exc, self.client)}); "
                                "alerts wait in the outbox", code="unreachable",
                                permanent=False) from None


def unreachable_words(exc: BaseException, client: WebClient) -> str:
    """Why a call got no answer from Slack, in words, as bot.sources.winrm says it for WinRM:
    the host name does not resolve, the connection was refused, the TLS certificate is not
    trusted, a proxy refused, no answer within the timeout. Through a proxy (slack_sdk takes
    HTTPS_PROXY and the like from the environment) the connection is the proxy's; its
    user name and password are never shown."""
    reason = getattr(exc, "reason", None)
    if not isinstance(reason, BaseException):
        reason = exc    # URLError wraps the socket's error; a timeout while reading comes bare
    url = urlsplit(client.base_url)
    host = inert(url.hostname or client.base_url)
    proxy = urlsplit(client.proxy) if client.proxy else None
    peer = f"the proxy {_host_port(proxy)}" if proxy else _host_port(url)
    text = inert(str(reason))
    if isinstance(reason, socket.gaierror):
        named = (f"the proxy's host name {inert(proxy.hostname or '')}" if proxy
                 else f"the host name {host}")
        return f"{named} does not resolve (DNS): check it, and this machine's DNS server"
    if isinstance(reason, ConnectionRefusedError):
        return f"{peer} refused the connection: nothing listens there, or a firewall rejects it"
    if isinstance(reason, ssl.SSLCertVerificationError):
        why = inert(reason.verify_message or text)
        if reason.verify_code in (62, 64):   # X509_V_ERR_HOSTNAME_ / IP_ADDRESS_MISMATCH
            return f"the TLS certificate {host} presented does not name {host} ({why})"
        return (f"the TLS certificate {host} presented is not trusted ({why}): when a proxy or "
                "firewall inspects TLS, trust its CA (SSL_CERT_FILE names a CA bundle)")
    if isinstance(reason, ssl.SSLError):
        why = inert(reason.reason.replace("_", " ").lower()) if reason.reason else text
        return f"TLS with {host} failed ({why}): does {peer} speak TLS?"
    if isinstance(reason, TimeoutError):
        return f"no answer from {peer} within {client.timeout} s"
    if text.startswith("Tunnel connection failed"):    # http.client's words for CONNECT
        return (f"{peer} refused to connect to {host} "
                f"({text.partition(': ')[2] or text})")
    if isinstance(reason, ConnectionError):   # reset, aborted, closed without an answer
        return f"{peer} closed the connection without answering ({text})"
    return f"cannot reach {peer}: {text}"


def _host_port(parts: SplitResult) -> str:
    """host:port of a split URL (the scheme's port when it names none), never its user name and
    password."""
    try:
        port = parts.port
    except ValueError:   # not a number: say the host alone
        port = None
    port = port or {"https": 443, "http": 80}.get(parts.scheme)
    return inert(f"{parts.hostname or '(no host)'}" + (f":{port}" if port else ""))


def error_code(exc: Exception) -> str | None:
    """Slack's error code (`invalid_auth` ...) of a failed slack_sdk call; None for others."""
    return getattr(getattr(exc, "response", None), "get", lambda _key: None)("error")


def make_client(api_url: str, token: str | None, *, timeout: int = 15, retries: int = 2,
                connection_retries: bool = True) -> WebClient:
    handlers = [RateLimitErrorRetryHandler(max_retry_count=retries),
                ServerErrorRetryHandler(max_retry_count=retries)]
    if connection_retries:
        handlers.append(ConnectionErrorRetryHandler(max_retry_count=retries))
    return WebClient(token=token, base_url=api_url, timeout=timeout, retry_handlers=handlers)
