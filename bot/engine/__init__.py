"""The incident engine: events grouped into incidents (incidents), which Slack messages a change
calls for (outbox, notify), one poll as read -> decide -> write (poller reads and writes through
store/, decision decides, pure), sending the outbox (delivery, workers), what responders do from
chat (chatops, permissions), the summary post (summary) and the fix loop (fixloop).

May import bot.core, bot.sources, bot.exchange, bot.directory, bot.slack and store/; never
bot.ops, handlers/ or the entry points (bot.cli, bot.app, bot.demo)."""
