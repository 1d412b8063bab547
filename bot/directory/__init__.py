"""What Active Directory shows, read-only: the LDAP reader (reader), security descriptors and
their access checks (secdesc), and an account's Submit right per connector as findings
(adcheck).

May import bot.core only (findings are bot.core.findings, shared with the rooms that show
them). The fix loop that acts on findings is the engine's (bot.engine.fixloop)."""
