"""App Home: open incidents, active snoozes, server health. (Being written.)"""


def register(app, open_database, config, clock=None) -> None:
    pass
