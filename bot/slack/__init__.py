"""Everything Slack sees: building blocks and escaping (blocks, richtext), the words (text),
alert messages (alerts), a storm's digest (digests), answers to commands and the Home tab
(replies, verify_view), and the Web API sender (sender).

May import bot.core and bot.exchange (a diagnosis and its commands, to render). Nothing here
reads the database: what it renders comes in as bot.core types."""
