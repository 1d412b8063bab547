"""bot.exchange.remediation: the exact commands, and that untrusted names cannot escape their quotes."""

from __future__ import annotations

import dataclasses
import ipaddress
import unicodedata

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.exchange.remediation import (
    MAX_VALUE_LENGTH,
    Fix,
    UnsafeValueError,
    connector_identity,
    default_receive_connectors,
    fix_for,
    is_legacy_version,
    likely_submission_connector,
    ps_quote,
    short_server_name,
)
from tests.pwsh_parse import (
    PwshParseError,
    assert_quotes_doubled,
    parse_pipeline,
    ps_scan_single_quoted,
)

SMART_QUOTES = ["\u2018", "\u2019", "\u201a", "\u201b"]
ALL_QUOTES = ["'"] + SMART_QUOTES
WHERE = "{ $_.ExtendedRights -like '*SMTP-Submit*' }"


# --- exact text ---------------------------------------------------------------------------------


def test_exact_commands_for_a_1018_event():
    fix = fix_for("CONTOSO\\svc-scanner", "EX01.contoso.local", connector="Client Frontend EX01")
    assert fix.connector == "EX01\\Client Frontend EX01"
    assert fix.connector_source == "event"
    assert fix.server == "EX01"
    assert fix.account == "CONTOSO\\svc-scanner"
    assert not fix.is_guess
    assert fix.grant == (
        "Get-ReceiveConnector -Identity 'EX01\\Client Frontend EX01' | Add-ADPermission"
        " -User 'CONTOSO\\svc-scanner' -ExtendedRights 'ms-Exch-SMTP-Submit'"
    )
    assert fix.whatif == fix.grant + " -WhatIf"
    assert fix.verify == (
        "Get-ReceiveConnector -Identity 'EX01\\Client Frontend EX01' | Get-ADPermission"
        " -User 'CONTOSO\\svc-scanner' | Where-Object { $_.ExtendedRights -like '*SMTP-Submit*' }"
        " | Format-Table User,Deny,IsInherited,ExtendedRights"
    )
    assert fix.undo == (
        "Get-ReceiveConnector -Identity 'EX01\\Client Frontend EX01' | Remove-ADPermission"
        " -User 'CONTOSO\\svc-scanner' -ExtendedRights 'ms-Exch-SMTP-Submit' -Confirm:$false"
    )
    assert fix.list_connectors == (
        "Get-ReceiveConnector -Server 'EX01'"
        " | Format-Table Identity,Bindings,AuthMechanism,PermissionGroups,TransportRole"
    )


def test_event_connector_that_is_already_an_identity_is_used_as_is():
    fix = fix_for("CONTOSO\\svc", "EX01", connector="EX02\\Relay Scanners")
    assert fix.connector == "EX02\\Relay Scanners"
    assert fix.grant.startswith("Get-ReceiveConnector -Identity 'EX02\\Relay Scanners' | ")


def test_configured_connector():
    fix = fix_for("svc-mfp@contoso.com", "ex01.contoso.local", configured_connector="Scanners 587")
    assert fix.connector_source == "configured"
    assert fix.connector == "ex01\\Scanners 587"
    assert fix.grant == (
        "Get-ReceiveConnector -Identity 'ex01\\Scanners 587' | Add-ADPermission"
        " -User 'svc-mfp@contoso.com' -ExtendedRights 'ms-Exch-SMTP-Submit'"
    )


def test_event_connector_wins_over_configured():
    fix = fix_for("a", "EX01", connector="Client Frontend EX01", configured_connector="Other")
    assert (fix.connector, fix.connector_source) == ("EX01\\Client Frontend EX01", "event")


def test_empty_event_connector_falls_back():
    assert fix_for("a", "EX01", connector="", configured_connector="X").connector == "EX01\\X"
    assert fix_for("a", "EX01", connector=None).connector_source == "guess"


@pytest.mark.parametrize(
    "version",
    [None, "", "2013", "2016", "2019", "Exchange Server 2019 CU14", "SE", "Subscription Edition",
     "15.2.1544.4", "Version 15.1 (Build 2507.6)", "something else"],
)
def test_guess_for_2013_and_later_or_unknown(version):
    fix = fix_for("CONTOSO\\svc-scanner", "EX01.contoso.local", version=version)
    assert fix.connector_source == "guess"
    assert fix.is_guess
    assert fix.connector == "EX01\\Client Frontend EX01"
    assert fix.grant == (
        "Get-ReceiveConnector -Identity 'EX01\\Client Frontend EX01' | Add-ADPermission"
        " -User 'CONTOSO\\svc-scanner' -ExtendedRights 'ms-Exch-SMTP-Submit'"
    )
    assert fix.list_connectors.startswith("Get-ReceiveConnector -Server 'EX01' | ")


@pytest.mark.parametrize(
    "version", ["2010", "2007", "Exchange 2010 SP3", "14.3.123.4", "Version 14.3 (Build 123.4)",
                "Version 8.3 (Build 83.6)", "8.3.83.6"],
)
def test_guess_for_2007_and_2010(version):
    assert is_legacy_version(version)
    fix = fix_for("CONTOSO\\svc-scanner", "EX01.contoso.local", version=version)
    assert fix.connector == "EX01\\Client EX01"
    assert fix.grant == (
        "Get-ReceiveConnector -Identity 'EX01\\Client EX01' | Add-ADPermission"
        " -User 'CONTOSO\\svc-scanner' -ExtendedRights 'ms-Exch-SMTP-Submit'"
    )


def test_version_numbers_are_not_read_from_inside_other_numbers():
    assert not is_legacy_version("15.2.1480.14")
    assert not is_legacy_version("2020")


def test_likely_submission_connector():
    assert likely_submission_connector("EX01") == "EX01\\Client Frontend EX01"
    assert likely_submission_connector("EX01.contoso.local", "2010") == "EX01\\Client EX01"


def test_connector_identity():
    assert connector_identity("EX01.contoso.local", "Default Frontend EX01") == "EX01\\Default Frontend EX01"
    assert connector_identity("EX01", "EX09\\Relay") == "EX09\\Relay"
    with pytest.raises(UnsafeValueError, match="connector name is empty"):
        connector_identity("EX01", "")


def test_default_receive_connectors():
    modern = default_receive_connectors("EX01.contoso.local")
    assert [(c.identity, c.port) for c in modern] == [
        ("EX01\\Default Frontend EX01", 25),
        ("EX01\\Client Frontend EX01", 587),
        ("EX01\\Outbound Proxy Frontend EX01", 717),
        ("EX01\\Default EX01", 2525),
        ("EX01\\Client Proxy EX01", 465),
    ]
    legacy = default_receive_connectors("EX01", "2010")
    assert [(c.identity, c.port) for c in legacy] == [("EX01\\Default EX01", 25), ("EX01\\Client EX01", 587)]


def test_upn_account():
    fix = fix_for("scanner@contoso.com", "EX01", connector="Client Frontend EX01")
    assert "-User 'scanner@contoso.com' " in fix.grant
    check_fix(fix, "scanner@contoso.com", "EX01\\Client Frontend EX01", "EX01")


@pytest.mark.parametrize(
    "given, short",
    [("EX01.contoso.local", "EX01"), ("EX01", "EX01"), ("ex01.contoso.local.", "ex01"),
     ("  EX01.contoso.local ", "EX01"), ("10.0.0.5", "10.0.0.5"), ("fe80::1", "fe80::1")],
)
def test_short_server_name(given, short):
    assert short_server_name(given) == short


@pytest.mark.parametrize("bad", ["", "   ", ".", ".contoso.local"])
def test_short_server_name_refuses_empty(bad):
    with pytest.raises(UnsafeValueError, match="server name"):
        short_server_name(bad)


def test_fix_is_frozen():
    fix = fix_for("a", "EX01")
    assert isinstance(fix, Fix)
    with pytest.raises(dataclasses.FrozenInstanceError):
        fix.grant = "Remove-Item C:\\"  # type: ignore[misc]


# --- ps_quote -----------------------------------------------------------------------------------


@pytest.mark.parametrize("q", ALL_QUOTES)
def test_each_quote_character_is_doubled_with_itself(q):
    assert ps_quote(f"a{q}b") == f"'a{q}{q}b'"
    assert ps_quote(q) == f"'{q}{q}'"


def test_mixed_quote_runs():
    assert ps_quote("'\u2019\u2018") == "'''\u2019\u2019\u2018\u2018'"
    assert ps_quote("O'Brien") == "'O''Brien'"


def test_nothing_else_is_escaped():
    value = "$(x) `n \"y\" @(1) ${env:PATH} \u201cz\u201d \u2013dash"
    assert ps_quote(value) == f"'{value}'"


def test_ps_quote_rejects_non_strings():
    with pytest.raises(TypeError):
        ps_quote(None)  # type: ignore[arg-type]


# --- hostile names ------------------------------------------------------------------------------

HOSTILE = [
    "O'Brien",
    *SMART_QUOTES,
    *(f"a{q}b" for q in SMART_QUOTES),
    *(f"{q}start" for q in ALL_QUOTES),
    *(f"end{q}" for q in ALL_QUOTES),
    "'\u2019\u2018",
    "\u201b\u201a'\u2019\u2018'",
    "x' -User 'Everyone",
    "x\u2019 ; Remove-Item C:\\ -Recurse ; \u2019",
    "$(Remove-Item C:\\ -Recurse)",
    "`whoami`",
    '"; Stop-Service x; "',
    "@(1)",
    "${env:PATH}",
    "$env:USERNAME",
    "<!channel>",
    "<@U123>",
    "&",
    "|",
    ";",
    "#comment",
    "<#",
    "'@",
    "@'",
    "\u201c\u201dsmart double\u201e",
    "\u2013WhatIf",
    "-Confirm:$false",
    "jürgen.müller",
    "CONTOSO\\jürgen.müller",
    "张伟",
    "山田太郎@contoso.co.jp",
    "svc 📠 scanner",
    "\u00a0nbsp\u00a0",
    "\\",
    "a\\",
    "'",
    "''",
    "'" * 7,
]


def check_fix(fix: Fix, account: str, identity: str, server: str) -> None:
    """Every command parses cleanly, has exactly the expected commands and parameters, and each
    untrusted argument is one verbatim literal that PowerShell decodes to the input."""

    def literal(arg, expected):
        assert arg is not None and arg.is_verbatim_literal, arg
        assert arg.value == expected
        assert_quotes_doubled(arg.text[1:-1])

    def get_connector(cmd):
        assert cmd.name == "Get-ReceiveConnector"
        assert cmd.param_names == ("-Identity",) and cmd.positional == ()
        literal(cmd.arg("-Identity"), identity)

    for text, last in ((fix.grant, ()), (fix.whatif, ("-WhatIf",))):
        p = parse_pipeline(text)
        assert p.names == ("Get-ReceiveConnector", "Add-ADPermission")
        get_connector(p.commands[0])
        add = p.commands[1]
        assert add.param_names == ("-User", "-ExtendedRights", *last) and add.positional == ()
        literal(add.arg("-User"), account)
        literal(add.arg("-ExtendedRights"), "ms-Exch-SMTP-Submit")
        if last:
            assert add.arg("-WhatIf") is None

    p = parse_pipeline(fix.verify)
    assert p.names == ("Get-ReceiveConnector", "Get-ADPermission", "Where-Object", "Format-Table")
    get_connector(p.commands[0])
    assert p.commands[1].param_names == ("-User",) and p.commands[1].positional == ()
    literal(p.commands[1].arg("-User"), account)
    (block,) = p.commands[2].positional
    assert (block.node_type, block.text) == ("script_block_expression", WHERE)
    assert p.commands[2].params == ()
    (cols,) = p.commands[3].positional
    assert cols.node_type == "bareword_list"
    assert cols.items == ("User", "Deny", "IsInherited", "ExtendedRights")

    p = parse_pipeline(fix.undo)
    assert p.names == ("Get-ReceiveConnector", "Remove-ADPermission")
    get_connector(p.commands[0])
    rm = p.commands[1]
    assert rm.param_names == ("-User", "-ExtendedRights", "-Confirm") and rm.positional == ()
    literal(rm.arg("-User"), account)
    literal(rm.arg("-ExtendedRights"), "ms-Exch-SMTP-Submit")
    assert (rm.arg("-Confirm").node_type, rm.arg("-Confirm").text) == ("variable", "$false")

    p = parse_pipeline(fix.list_connectors)
    assert p.names == ("Get-ReceiveConnector", "Format-Table")
    assert p.commands[0].param_names == ("-Server",) and p.commands[0].positional == ()
    literal(p.commands[0].arg("-Server"), server)
    (cols,) = p.commands[1].positional
    assert cols.items == ("Identity", "Bindings", "AuthMechanism", "PermissionGroups", "TransportRole")


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_account(name):
    fix = fix_for(name, "EX01.contoso.local", connector="Client Frontend EX01")
    assert fix.account == name
    check_fix(fix, name, "EX01\\Client Frontend EX01", "EX01")


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_connector_from_event(name):
    fix = fix_for("CONTOSO\\svc-scanner", "EX01", connector=name)
    identity = name if "\\" in name else f"EX01\\{name}"
    assert fix.connector == identity
    check_fix(fix, "CONTOSO\\svc-scanner", identity, "EX01")


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_configured_connector(name):
    fix = fix_for(name, "EX01", configured_connector=name)
    identity = name if "\\" in name else f"EX01\\{name}"
    check_fix(fix, name, identity, "EX01")


@pytest.mark.parametrize("name", [n for n in HOSTILE if "." not in n and "\\" not in n and n.strip() == n])
def test_hostile_server(name):
    fix = fix_for("CONTOSO\\svc-scanner", name)
    assert fix.server == name
    check_fix(fix, "CONTOSO\\svc-scanner", f"{name}\\Client Frontend {name}", name)


def test_server_with_backslash_is_refused():
    with pytest.raises(UnsafeValueError, match="server name contains a backslash"):
        fix_for("a", "CONTOSO\\EX01")


@pytest.mark.parametrize("q", ALL_QUOTES)
def test_long_names_at_the_limit(q):
    account = ("x" + q) * (MAX_VALUE_LENGTH // 2)
    assert len(account) == MAX_VALUE_LENGTH
    name = "c" * (MAX_VALUE_LENGTH - len("EX01\\") - 1) + q
    fix = fix_for(account, "EX01", connector=name)
    check_fix(fix, account, "EX01\\" + name, "EX01")
    all_quotes = q * MAX_VALUE_LENGTH
    assert ps_quote(all_quotes) == "'" + q * (2 * MAX_VALUE_LENGTH) + "'"
    check_fix(fix_for(all_quotes, "EX01"), all_quotes, "EX01\\Client Frontend EX01", "EX01")


# --- refusals -----------------------------------------------------------------------------------

REFUSED_CHARS = [
    ("\n", "a line break (U+000A)"),
    ("\r", "a carriage return (U+000D)"),
    ("\x00", "a NUL character (U+0000)"),
    ("\t", "a tab (U+0009)"),
    ("\x0b", "a vertical tab (U+000B)"),
    ("\x1b", "an escape character (U+001B)"),
    ("\x7f", "a delete character (U+007F)"),
    ("\x85", "a next-line character (a line break to PowerShell) (U+0085)"),
    ("\x9b", "a control character (U+009B)"),
    ("\u2028", "a line separator (U+2028)"),
    ("\u2029", "a paragraph separator (U+2029)"),
    ("\u202e", "a bidirectional text control (U+202E)"),
    ("\u2066", "a bidirectional text control (U+2066)"),
    ("\ud800", "an unpaired surrogate (U+D800)"),
    # Characters that draw nothing: format characters (Cf) and the Hangul fillers.
    ("\u200b", "an invisible character, zero width space (U+200B)"),
    ("\u200d", "an invisible character, zero width joiner (U+200D)"),
    ("\u2060", "an invisible character, word joiner (U+2060)"),
    ("\ufeff", "an invisible character, zero width no-break space (U+FEFF)"),
    ("\u00ad", "an invisible character, soft hyphen (U+00AD)"),
    ("\U000e0041", "an invisible tag character (U+E0041)"),
    ("\U000e007f", "an invisible tag character (U+E007F)"),
    ("\u115f", "an invisible Hangul filler (U+115F)"),
    ("\u1160", "an invisible Hangul filler (U+1160)"),
    ("\u3164", "an invisible Hangul filler (U+3164)"),
    ("\uffa0", "an invisible Hangul filler (U+FFA0)"),
]


@pytest.mark.parametrize("ch, description", REFUSED_CHARS)
def test_refused_characters_in_account(ch, description):
    with pytest.raises(UnsafeValueError) as err:
        fix_for(f"CONTOSO\\svc{ch}x", "EX01")
    msg = str(err.value)
    assert msg.startswith(f"account name contains {description} at position 12;"), msg
    assert msg.endswith("so SubmitWatch will not put it in a command")
    assert err.value.what == "account"
    assert err.value.value == f"CONTOSO\\svc{ch}x"


def test_refusal_message_reads_well():
    with pytest.raises(UnsafeValueError) as err:
        ps_quote("svc\nscanner", "account")
    assert str(err.value) == (
        "account name contains a line break (U+000A) at position 4; Exchange account names never "
        "contain control characters or line breaks, so SubmitWatch will not put it in a command"
    )


@pytest.mark.parametrize("ch, description", REFUSED_CHARS)
def test_refused_characters_in_connector_and_server(ch, description):
    with pytest.raises(UnsafeValueError, match=r"^connector name contains "):
        fix_for("a", "EX01", connector=f"Client{ch}Frontend")
    with pytest.raises(UnsafeValueError, match=r"^connector name contains "):
        fix_for("a", "EX01", configured_connector=f"Client{ch}Frontend")
    with pytest.raises(UnsafeValueError, match=r"^server name contains "):
        fix_for("a", f"EX{ch}01")


def test_refusal_message_does_not_echo_the_value():
    with pytest.raises(UnsafeValueError) as err:
        fix_for("<!channel> $(Remove-Item C:\\)\n", "EX01")
    assert "channel" not in str(err.value) and "Remove-Item" not in str(err.value)


def test_empty_values_are_refused():
    with pytest.raises(UnsafeValueError, match="^account name is empty"):
        fix_for("", "EX01")
    with pytest.raises(UnsafeValueError, match="^server name is empty"):
        fix_for("a", "")
    with pytest.raises(UnsafeValueError, match="^value is empty"):
        ps_quote("")


def test_over_the_limit_is_refused():
    assert ps_quote("x" * MAX_VALUE_LENGTH)
    with pytest.raises(UnsafeValueError) as err:
        fix_for("x" * (MAX_VALUE_LENGTH + 1), "EX01")
    assert str(err.value).startswith("account name is 1,025 characters long;")
    assert "1,024" in str(err.value)
    with pytest.raises(UnsafeValueError, match="^connector name is 1,025 characters long"):
        fix_for("a", "EX01", connector="c" * (MAX_VALUE_LENGTH + 1 - len("EX01\\")))


def test_unsafe_value_error_is_a_value_error():
    assert issubclass(UnsafeValueError, ValueError)


# --- the oracle itself has teeth ----------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "Get-X -User 'O'Brien'",                        # unescaped ASCII quote: tree-sitter ERROR
        "Get-X -User 'a\u2019b'",                       # unescaped smart quote: only our scanner sees it
        "Get-X -User 'a\u2019\u2018b'",                 # PowerShell-legal, but not doubled with itself
        "Get-X -User \u2019a\u2019",                    # smart quotes outside any ASCII literal
        "Get-X -User 'a'; Stop-Service x",              # second statement
        "Get-X -User 'a'\nStop-Service x",              # second statement via a line break
        "Get-X -User 'a",                               # unterminated
    ],
)
def test_parse_pipeline_rejects(text):
    with pytest.raises(PwshParseError):
        parse_pipeline(text)


def test_parse_pipeline_exposes_non_literal_arguments():
    p = parse_pipeline("Get-X -User $(Remove-Item x) -Identity \"a$b\" -Server x")
    (cmd,) = p.commands
    assert cmd.arg("-User").node_type == "sub_expression"
    assert cmd.arg("-Identity").node_type == "expandable_string_literal"
    assert cmd.arg("-Server").node_type == "generic_token"
    assert not any(cmd.arg(n).is_verbatim_literal for n in ("-User", "-Identity", "-Server"))


def test_ps_scanner_follows_powershell_rule():
    assert ps_scan_single_quoted("'O''Brien' rest") == ("O'Brien", 10)
    assert ps_scan_single_quoted("'a\u2019\u2019b'") == ("a\u2019b", 6)
    # PowerShell accepts any quote after any quote and keeps the second one
    assert ps_scan_single_quoted("'a\u2019\u2018b'") == ("a\u2018b", 6)
    assert ps_scan_single_quoted("\u2018x\u2019") == ("x", 3)
    with pytest.raises(PwshParseError):
        ps_scan_single_quoted("'abc")


def test_grammar_value_differs_from_powershell_value_for_smart_quotes():
    arg = parse_pipeline(f"Get-X -User {ps_quote('a’b')}").commands[0].arg("-User")
    assert arg.value == "a\u2019b"
    assert arg.grammar_value == "a\u2019\u2019b"


# --- property -----------------------------------------------------------------------------------

_BIDI = set("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def should_refuse(value: str) -> bool:
    """Independent statement of the refusal rule."""
    return (
        value == ""
        or len(value) > MAX_VALUE_LENGTH
        or any(unicodedata.category(c) in ("Cc", "Cs", "Cf") or c in "\u2028\u2029" or c in _BIDI
               or c in "\u115f\u1160\u3164\uffa0" for c in value)
    )


_quotes = st.sampled_from(ALL_QUOTES)
_special = st.sampled_from(
    list("$`\"@(){}[];|&#<>\\ -:,.=+*?!%^~") + ["\u201c", "\u201d", "\u2013", "\u00a0", "ü", "张", "📠"]
)
_refused = st.sampled_from(["\n", "\r", "\t", "\x00", "\u2028", "\u0085", "\u202e", "\u200b",
                           "\u3164", "\U000e0041", "\u00ad"])


def _text(*alphabets):
    # st.lists(...).map(join) rather than st.text(alphabet=one_of(...)): the latter almost never
    # picks the sampled_from branches, so quotes would be rare.
    return st.lists(st.one_of(*alphabets), max_size=40).map("".join)


_safe_names = _text(_quotes, _quotes, _special, st.characters(exclude_categories=("Cc", "Cs")))
_risky_names = _text(_quotes, _special, _refused, st.characters())
names = st.one_of(_safe_names, _safe_names, _risky_names)
PROP = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROP
@given(account=names, connector=names)
def test_property_account_and_connector(account, connector):
    identity = None
    if connector:
        identity = connector if "\\" in connector else f"EX01\\{connector}"
    try:
        fix = fix_for(account, "EX01.contoso.local", connector=connector or None)
    except UnsafeValueError:
        assert should_refuse(account) or (connector and (should_refuse(connector) or should_refuse(identity)))
        return
    assert not should_refuse(account)
    check_fix(fix, account, identity or "EX01\\Client Frontend EX01", "EX01")


@PROP
@given(server=names, account=names)
def test_property_server(server, account):
    account = account or "a"
    trimmed = server.strip().rstrip(".")
    try:
        ipaddress.ip_address(trimmed)
        short = trimmed
    except ValueError:
        short = trimmed.split(".")[0]
    try:
        fix = fix_for(account, server)
    except UnsafeValueError:
        assert should_refuse(account) or short == "" or "\\" in short or should_refuse(short)
        return
    assert fix.server == short
    check_fix(fix, account, f"{short}\\Client Frontend {short}", short)
