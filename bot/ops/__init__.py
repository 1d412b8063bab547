"""The operations shell around the engine: the background jobs (scheduler), the watchdog over
them (watchdog), elapsed time across clock steps (clockguard), /metrics and health (metrics),
`submitwatch check` (check), the Slack app manifest (manifest) and log lines (logs).

May import the engine and everything below it (bot.engine, bot.slack, bot.sources,
bot.exchange, bot.directory, store/, bot.core); never handlers/ or the entry points: bot.app
joins the listeners to the scheduler."""
