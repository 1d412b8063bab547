"""Acknowledge and snooze, from slash commands and alert buttons. (Being written.)"""
from __future__ import annotations

from .common import CommandError, Reply, Request


def _todo(req: Request, args: list[str]) -> Reply:
    raise CommandError("not written yet")


ack_command = unack_command = snooze_command = unsnooze_command = _todo


def register(app, open_database, config, clock=None) -> None:
    pass
