"""How events arrive: the WinRM source (winrm: wevtutil over pywinrm), the bytes of its output
as text (decode), and event XML as Events (parse). The EventSource protocol and the other
sources (a collector's ForwardedEvents, OTLP) belong here too.

May import bot.core, and bot.exchange for how Exchange names a connector (parse). Never store/:
a source returns events and its cursor; the engine stores them."""
