"""What Exchange itself does: why a 1018/1020 happened (diagnosis), the fix by cause (advice),
the Exchange Management Shell commands with their quoting and the default connectors per
version (remediation), and the SMTP protocol log that names the device (protocollog).
Pure: it builds commands and reads their output, but runs nothing.

May import bot.core only: a directory finding comes in as bot.core.findings, not from
bot.directory."""
