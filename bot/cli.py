"""The `submitwatch` command. Imports stay inside the commands so `--help` starts fast."""
from __future__ import annotations

import argparse
import functools
import logging
import os
import sys

DESCRIPTION = ("SubmitWatch: watches Exchange servers for transport events 1018/1020 (an account "
               "with valid credentials that may not submit mail over SMTP) and posts one living "
               "Slack alert per account, with the exact Add-ADPermission fix.")
CONFIG_HELP = ("the config file (default: $SUBMITWATCH_CONFIG, else ./submitwatch.toml). "
               "Secrets come from the environment: SLACK_BOT_TOKEN, SLACK_APP_TOKEN, "
               "SLACK_SIGNING_SECRET and each server's password_env (or NAME_FILE)")


def _global_options(*, config: bool, defaults: bool) -> argparse.ArgumentParser:
    """-v and --config, for the top level (with defaults) or a subcommand (without them).

    A subcommand's parser would otherwise set its own default over a value given before the
    subcommand (`submitwatch --config X check` lost X): argparse.SUPPRESS leaves it alone.
    """
    unset = argparse.SUPPRESS
    options = argparse.ArgumentParser(add_help=False)
    options.add_argument("-v", "--verbose", action="store_true", help="log debug detail",
                         default=False if defaults else unset)
    options.add_argument("--log-format", choices=("text", "json"),
                         help="log lines for a person (text, the default) or one JSON object "
                              "per line for a log shipper (default: logging.format)",
                         default=None if defaults else unset)
    if config:
        options.add_argument("--config", metavar="PATH", help=CONFIG_HELP,
                             default=None if defaults else unset)
    return options


def build_parser() -> argparse.ArgumentParser:
    verbose = _global_options(config=False, defaults=False)
    common = _global_options(config=True, defaults=False)
    parser = argparse.ArgumentParser(prog="submitwatch", description=DESCRIPTION,
                                     parents=[_global_options(config=True, defaults=True)])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("run", parents=[common], help="poll every server on schedule and serve Slack",
                   description="Run the scheduler (one poll job per server, delivery to Slack) "
                               "and the Slack app (Socket Mode, or HTTP on slack.http_port). "
                               "Stops cleanly on Ctrl-C or SIGTERM.")
    sub.add_parser("poll-once", parents=[common], help="one sweep of every server plus delivery",
                   description="Poll every configured server once, deliver due Slack messages, "
                               "print a summary and exit: 0 when all went well, 1 when a server "
                               "or Slack failed, 2 when the configuration is wrong. Safe to run "
                               "from cron, even beside `submitwatch run`.")
    sub.add_parser("check", parents=[common], help="validate the config, then reach each server "
                                                   "and Slack",
                   description="Validate the configuration, then connect to each server and to "
                               "Slack and say in words what is wrong. Exit 0 when all is well.")
    backup = sub.add_parser("backup", parents=[common], help="a consistent copy of the database, "
                                                            "safe while `run` is running",
                            description="Copy the SQLite database (store.path) to PATH with "
                                        "SQLite's online backup API: consistent even while "
                                        "`submitwatch run` writes to it. PATH must not exist.")
    backup.add_argument("path", metavar="PATH", help="the new file to write")
    sub.add_parser("manifest", parents=[common], help="print the Slack app manifest for this "
                                                      "configuration",
                   description="Print, as JSON, the Slack app manifest that matches the "
                               "configuration: Socket Mode, or HTTP mode with slack.public_url "
                               "filled in as every request URL, and only the scopes it uses. "
                               "Paste it at api.slack.com/apps (Create New App -> From an app "
                               "manifest, or the app's Manifest page).")
    preview = sub.add_parser("preview", parents=[common], help="the open incidents' alerts "
                                                               "as one local HTML page",
                             description="Render every open incident's alert as SubmitWatch "
                                         "would post it now into one self-contained HTML page "
                                         "(no Slack needed, nothing sent; read-only on the "
                                         "database) and print its path.")
    preview.add_argument("path", metavar="PATH", nargs="?", default="submitwatch-preview.html",
                         help="the page to write (default: submitwatch-preview.html)")
    demo = sub.add_parser("demo", parents=[verbose], help="the full pipeline against the built-in "
                                                         "Exchange simulator and Slack stand-in",
                          description="Start the built-in Exchange simulator (WS-Management, NTLM "
                                      "with message encryption, on 127.0.0.1) and Slack stand-in, "
                                      "run the real pipeline into a SQLite file, and print every "
                                      "Slack message with a Block Kit Builder link. Needs no "
                                      "Slack and no Exchange.")
    demo.add_argument("--db", metavar="PATH", default="submitwatch-demo.db",
                      help="the SQLite file to write (replaced each run; default: %(default)s)")
    _look_up_parsers(sub, common)
    return parser


#: The slash command's read-only look-ups, answered in the terminal too (handlers.terminal):
#: (usage after the name, what it answers).
LOOK_UPS = {
    "history": ("[account|server] [--since 7d] [--limit N]",
                "incidents and event counts, newest first, with a per-day sparkline"),
    "show": ("INCIDENT", "one incident (its number, like 42): events per server and connector, "
                         "timeline, who acted"),
    "status": ("", "each server's last poll, lag, last error and cursor; outbox; open "
                   "incidents"),
    "summary": ("[--since 7d]", "new accounts, open and acknowledged incidents, top servers and "
                                "connectors, median time to acknowledge and to resolve"),
    "verify": ("ACCOUNT [SERVER\\Connector]", "what Active Directory says now, read-only: the "
                                              "account and its Submit right (needs [directory])"),
    "routes": ("ACCOUNT [SERVER] [1018|1020]", "which route an account's alert would take: its "
                                               "channel and owners"),
    "fix": ("ACCOUNT [SERVER\\Connector] [1018|1020]", "why an account is refused and the "
                                                       "commands that fix it"),
}
LOOK_UP_EPILOG = ("The same answer as `/submitwatch %s` in Slack, read from the database "
                  "(store.path) without writing to it: safe beside a running `submitwatch run`. "
                  "--json prints the data as one JSON object (docs/commands.md: Terminal). "
                  "Exit 0 when answered, 1 when the question cannot be answered (no such "
                  "incident, a bad option), 2 when the configuration or the database is wrong "
                  "(missing, older schema). Put a name with spaces or a backslash in "
                  "'single quotes'.")


def _look_up_parsers(sub, common: argparse.ArgumentParser) -> None:
    for name, (usage, summary) in LOOK_UPS.items():
        parser = sub.add_parser(name, parents=[common], help=summary,
                                description=f"{summary[0].upper()}{summary[1:]}.",
                                epilog=LOOK_UP_EPILOG % name)
        parser.add_argument("words", nargs="*", metavar="ARG",
                            help=f"as in Slack: {name} {usage}".rstrip())
        parser.add_argument("--json", action="store_true",
                            help="print the data as JSON (a stable, versioned shape) instead "
                                 "of text")
        if name in ("history", "summary"):
            parser.add_argument("--since", metavar="DURATION",
                                help="how far back: 30m, 4h, 7d (default 7d, at most 366d)")
        if name == "history":
            parser.add_argument("--limit", metavar="N", help="incidents listed (default 20, at "
                                                             "most 100)")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    # A look-up's words may come after an option (`fix ACCOUNT --json 'EX01\\Relay'`): argparse
    # leaves those over; they are the look-up's, in order. Anything else left over is an error.
    args, extra = parser.parse_known_args(argv)
    if extra and args.command not in LOOK_UPS:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.command in LOOK_UPS:
        args.words = [*args.words, *extra]
    from bot.ops.logs import TEXT_FORMAT, quiet_slack_sdk_attempts, use_format
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format=TEXT_FORMAT, stream=sys.stderr)
    use_format(args.log_format or "text")
    if not args.verbose:  # pywinrm and urllib3 are chatty about things we report ourselves
        logging.getLogger("urllib3").setLevel(logging.ERROR)
        # APScheduler says "Running job" and "executed successfully" at INFO for every poll:
        # about 20 MB a day with 50 servers polled each minute. Our own lines say what changed.
        logging.getLogger("apscheduler.executors").setLevel(logging.WARNING)
        quiet_slack_sdk_attempts()   # one line per failure, in words, is ours to log
    for handler in logging.getLogger().handlers:
        handler.addFilter(_no_auth_tokens)
    from bot.core.config import ConfigError
    from store.db import StoreError
    try:
        if args.command == "demo":
            from bot.demo import run_demo
            return run_demo(args.db)
        config = _load(args.config)
        if args.log_format is None:
            use_format(config.log_format)
        if args.command == "check":
            from bot.ops.check import run_check
            return run_check(config)
        if args.command == "poll-once":
            return _poll_once(config)
        if args.command in LOOK_UPS:
            return _look_up(config, args)
        if args.command == "manifest":
            import json

            from bot.ops.manifest import app_manifest
            print(json.dumps(app_manifest(config), indent=2))
            return 0
        if args.command == "preview":
            from handlers.preview import write_preview
            page, count = write_preview(config, args.path)
            print(f"{count} open incident(s) rendered; open it in a browser: {page}")
            return 0
        if args.command == "backup":
            from store.db import backup
            counts = backup(config.store.path, args.path)
            print(f"backed up {config.store.path} to {args.path}: " +
                  ", ".join(f"{n} {table}" for table, n in counts.items()))
            return 0
        from bot.app import run
        _require_secrets(config, config.slack.mode)
        run(config)
        _end_hung_work()
        return 0
    except ConfigError as exc:
        print(f"submitwatch: configuration error: {exc}", file=sys.stderr)
        return 2
    except StoreError as exc:
        print(f"submitwatch: database error: {exc}", file=sys.stderr)
        return 2


def _end_hung_work(grace: float = 3.0) -> None:
    """After `run` stopped: a poll or Slack call that hangs (a dead server that never answers)
    keeps a worker thread, and Python waits for it at exit, a minute or more (concurrent.futures
    joins its workers, daemon or not). Give them `grace` seconds, then exit anyway: SQLite's
    transactions make that as safe as a kill, which the crash tests prove."""
    import threading
    import time

    def blocking(thread: threading.Thread) -> bool:
        return (thread is not threading.current_thread() and thread.is_alive()
                and (not thread.daemon or thread.name.startswith("ThreadPoolExecutor")))
    deadline = time.monotonic() + grace
    for thread in [t for t in threading.enumerate() if blocking(t)]:
        thread.join(max(0.0, deadline - time.monotonic()))
    hung = [t.name for t in threading.enumerate() if blocking(t)]
    if hung:
        logging.getLogger("submitwatch").warning(
            "abandoning %d request(s) still under way (%s); they run again after the restart",
            len(hung), ", ".join(hung[:5]))
        logging.shutdown()
        sys.stdout.flush()
        os._exit(0)


def _no_auth_tokens(record: logging.LogRecord) -> bool:
    """Drop pyspnego's debug dumps of authentication tokens ("NTLM step output: <base64>", the
    same for SPNEGO, Kerberos, CredSSP): the NTLM AUTHENTICATE message holds the NTLMv2
    response, from which the WinRM password can be cracked offline. Its other lines stay."""
    if record.name.startswith("spnego") and record.levelno <= logging.DEBUG:
        text = record.getMessage()
        return not ("step input:" in text or "step output:" in text or "TSRequest" in text)
    return True


def _load(path: str | None):
    from bot.core.config import config_path, load_config
    return load_config(config_path(path, os.environ), os.environ)


def _require_secrets(config, mode) -> None:
    from bot.core.config import ConfigError, missing_secrets
    missing = missing_secrets(config, slack_mode=mode)
    if missing:
        raise ConfigError("set these environment variables first: " + "; ".join(missing))


def _look_up(config, args: argparse.Namespace) -> int:
    """`submitwatch history|show|...`: the slash command's answer, on a read-only database."""
    from handlers.terminal import ask
    from store.db import open_read_only

    words = list(args.words)
    for option in ("since", "limit"):
        if getattr(args, option, None) is not None:
            words += [f"--{option}", getattr(args, option)]
    db = open_read_only(config.store.path)
    try:
        answer = ask(args.command, words, config, db)
    finally:
        db.conn.close()
    try:
        if args.json:
            print(answer.json())
        else:
            print(answer.terminal(), file=sys.stderr if answer.error else sys.stdout)
        sys.stdout.flush()
    except BrokenPipeError:   # `| head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return answer.exit_code


def _delivery_sentence(db, delivery) -> str:
    """What this run sent, and what the outbox still holds afterwards (a failed message stays
    there and is tried again, and a message that was not due yet, or was not reached once Slack
    failed, waits there too): one sentence, counted from the database, so it never says "0
    waiting" beside a message that waits."""
    from store import db as store
    waiting = store.outbox_depth(db)
    given_up = sum(problem["given_up"] or 0 for problem in store.delivery_problems(db))
    said = f"Slack: {delivery.sent} sent, {delivery.failed} failed; "
    if waiting:
        said += (f"{waiting} message{' waits' if waiting == 1 else 's wait'} in the outbox for "
                 "the next try (by `submitwatch run` or the next `poll-once`)")
    else:
        said += "nothing waits in the outbox"
    if given_up:
        said += (f"; {given_up} given up until a message to their channel gets through "
                 "(`submitwatch status` lists them)")
    return said


def _poll_once(config) -> int:
    from bot.engine import fixloop
    from bot.engine.delivery import deliver_once
    from bot.engine.liveness import sweep_collector
    from bot.engine.poller import end_storms, poll_server_once, resolve_quiet_incidents, utc_now
    from bot.slack.sender import SlackSender
    from bot.sources.collector import CollectorSource, subscription_status
    from bot.sources.winrm import WinRMSource
    from store.db import open_db

    _require_secrets(config, None)
    db = open_db(config.store.path)
    results = [poll_server_once(db, WinRMSource(s, config.polling), config)
               for s in config.servers if s.polled]
    unheard = []
    for collector in config.collectors:   # its events, then its sources' heartbeats
        source = CollectorSource.of(collector, config.servers, config.polling)
        polled, liveness = sweep_collector(
            db, source, collector, config,
            functools.partial(subscription_status, source, collector.subscription))
        results.append(polled)
        if liveness.error and not polled.error:
            unheard.append(f"{collector.name}: heartbeats FAILED: {liveness.error}")
    resolved = resolve_quiet_incidents(db, config)
    # What `run` does between polls, so a cron-only setup ends storms and closes the loop too.
    end_storms(db, config)
    fixloop.confirm_fixes(db, config, utc_now)
    fixloop.run_checks(db, config, utc_now)
    delivery = deliver_once(db, SlackSender.from_config(config.slack), config)
    for line in [r.summary() for r in results] + unheard:
        print(line)
    print(f"incidents resolved: {resolved}; {_delivery_sentence(db, delivery)}")
    for error in delivery.errors[:5]:
        print(f"  {error}")
    return 1 if any(r.error for r in results) or unheard or delivery.failed else 0


if __name__ == "__main__":
    sys.exit(main())
