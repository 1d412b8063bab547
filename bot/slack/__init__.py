"""Everything Slack sees: building blocks and escaping (blocks, richtext), the words (text),
alert messages (alerts), answers to commands and the Home tab (replies), and the Web API sender
(sender). Nothing here reads the database: what it renders comes in as bot.core.model types."""
