"""bot.directory.reader."""
