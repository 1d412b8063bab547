"""bot.sources."""
