"""bot.exchange."""
