"""SubmitWatch's benchmark suite (`make bench`, or `python -m bench`; docs/benchmarks.md).

Every row measures one job of the bot and, where the issue defines one, the physical floor of
that job in the same run, so a figure is read as a ratio that holds on a noisy machine. The
rows use the real components: pywinrm against the WS-Management simulator (in its own process,
so it does not compete for the bot's GIL), slack_sdk against the Slack stand-in, SQLite files.
"""
