"""The words SubmitWatch says in Slack that are not built from data: headlines, advice, the
notes on where a connector came from, what a Slack error means and its fix. One place to read,
review and (one day) translate them; the modules that build messages take them from here."""
from __future__ import annotations

from bot.exchange.diagnosis import BUILTIN, LEGACY_1020, NO_SUBMIT

MORE_IN_FIX = ("More did not fit in one Slack message: *Show fix* gives every command, and "
               "`/submitwatch fix` each connector's.")
MORE_PER_CONNECTOR = ("More did not fit in one Slack message: `/submitwatch fix ACCOUNT "
                      "'SERVER\\Connector'` gives one connector's commands.")
FIX_GIVES_EACH = "Show fix gives the commands for each."
SLASH_FIX_GIVES_EACH = ("/submitwatch fix with the account and 'SERVER\\Connector' gives each "
                        "one's commands.")
#: Each event kind in a few words (a storm digest's lines, which have no room for the advice).
SHORT_CAUSES = {
    NO_SUBMIT: "no Submit right (1018)",
    BUILTIN: "built-in account (1020)",
    LEGACY_1020: "not authorized (1020)",
}

#: Where the connector of a fix came from (alerts, Show fix, `/submitwatch fix` of one).
TARGET_SOURCE = {
    "event": "named by the event",
    "typed": "the connector you gave",
    "configured": "configured as this server's submission connector",
    "none": "no event named a connector",
}
#: Where a candidate connector came from (`/submitwatch fix` without a connector).
CANDIDATE_SOURCE = {
    "account": "named by this account's 1018 events",
    "configured": "configured as this server's submission connector",
    "server": "named by events of other accounts on this server",
    "guess": "not named by any event: the usual client submission connector, a guess",
}

#: What a Slack error code means and what to do, for the log, `status` and `check`:
#: errors that will not go away by waiting; each needs a person to do something.
FIXES = {
    "channel_not_found": "the channel {channel} does not exist or the bot cannot see it: set "
                         "slack.channel (or the server's channel) to a channel ID such as "
                         "C0123456789",
    "not_in_channel": "the bot is not in channel {channel}: type `/invite @SubmitWatch` there",
    "is_archived": "channel {channel} is archived: unarchive it or configure another channel",
    "invalid_auth": "Slack rejected the bot token: check SLACK_BOT_TOKEN (xoxb-...)",
    "not_authed": "no bot token was sent: set SLACK_BOT_TOKEN",
    "token_revoked": "the bot token was revoked: reinstall the app and update SLACK_BOT_TOKEN",
    "token_expired": "the bot token expired: reinstall the app and update SLACK_BOT_TOKEN",
    "account_inactive": "the app's bot user was deactivated: reinstall the app",
    "missing_scope": "the app lacks a scope: reinstall it from manifest.yml",
    "invalid_blocks": "Slack refused the message layout (a SubmitWatch bug: please report it)",
    "invalid_blocks_format": "Slack could not read the message layout (a SubmitWatch bug: "
                             "please report it)",
    "msg_too_long": "the message was too long (a SubmitWatch bug: please report it)",
    "msg_blocks_too_long": "the text in the message's blocks was too long in total for Slack "
                           "(a SubmitWatch bug: please report it)",
    "no_text": "Slack found no text in the message (a SubmitWatch bug: please report it)",
    "invalid_arguments": "Slack refused the call's arguments (a SubmitWatch bug: please "
                         "report it)",
    "message_not_found": "the alert message was deleted in Slack",
}
