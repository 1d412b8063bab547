"""Reliability, round 2 (docs/reliability.md): durations in range, quiet logs, private files,
racing first starts."""
from __future__ import annotations

import pytest

from handlers.commands import answer
from handlers.common import Request
from tests.test_lookups import NOW, make_config


@pytest.mark.parametrize("text", ["snooze CONTOSO\\x 99999999999d why",
                                  "history --since 99999999999999d",
                                  "snooze CONTOSO\\x " + "9" * 400 + "d why"])
def test_huge_durations_get_the_allowed_range_not_a_traceback(db, text):
    reply = answer(Request(db=db, config=make_config(), now=NOW, user_id="U0ALICE",
                           channel_id="C0ALERTS"), text)
    assert "too long: durations go up to `3650d` (ten years)" in reply.text, reply.text
    assert "Sorry" not in reply.text


# --- files readable by their owner only; a backup never follows a planted link ------------------

def mode(path):
    return path.stat().st_mode & 0o777


def test_the_database_and_its_wal_are_created_for_the_owner_only(tmp_path):
    from store.db import open_db, write_transaction
    path = tmp_path / "sw.db"
    db = open_db(path)
    with write_transaction(db):
        db.execute("INSERT INTO problems (server, at, kind, detail) VALUES ('x', 'y', 'z', 'w')")
    assert mode(path) == 0o600
    assert mode(tmp_path / "sw.db-wal") == 0o600 and mode(tmp_path / "sw.db-shm") == 0o600
    db.conn.close()


def test_a_backup_is_private_and_never_writes_through_a_planted_symlink(tmp_path):
    from store.db import StoreError, backup, open_db
    source = tmp_path / "sw.db"
    open_db(source).conn.close()
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me", encoding="utf-8")
    target = tmp_path / "copy.db"
    (tmp_path / "copy.db.partial").symlink_to(victim)       # what the old code wrote through
    backup(source, target)
    assert victim.read_text(encoding="utf-8") == "keep me"
    assert mode(target) == 0o600 and not target.is_symlink()
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".partial")] == [
        "copy.db.partial"]                                     # no copy left behind
    linked = tmp_path / "linked.db"
    linked.symlink_to(tmp_path / "nowhere.db")                 # a dangling link as the target
    with pytest.raises(StoreError, match="already exists"):
        backup(source, linked)
    assert not (tmp_path / "nowhere.db").exists()


# --- two processes creating the same new database at the same moment -----------------------------

def _open_when_released(path, barrier, results):
    from store.db import open_db
    barrier.wait()
    try:
        open_db(path).conn.close()
        results.put("ok")
    except Exception as exc:  # reported to the test, which shows it
        results.put(f"{type(exc).__name__}: {exc}")


def test_processes_racing_to_create_a_new_database_all_succeed(tmp_path):
    import multiprocessing

    from store.db import open_db
    context = multiprocessing.get_context("fork")
    outcomes = []
    for round_ in range(6):
        path = tmp_path / f"race{round_}.db"
        barrier, results = context.Barrier(4), context.Queue()
        workers = [context.Process(target=_open_when_released, args=(path, barrier, results))
                   for _ in range(4)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(timeout=60)
        outcomes += [results.get(timeout=5) for _ in workers]
        applied = open_db(path).execute("SELECT count(*), count(DISTINCT name) FROM "
                                        "_sqlite_migrations").fetchone()
        assert applied[0] == applied[1] >= 8     # each migration applied exactly once
    assert outcomes == ["ok"] * len(outcomes), [o for o in outcomes if o != "ok"]
