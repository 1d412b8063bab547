"""bot.exchange.remediation: the exact commands, and that untrusted names cannot escape their quotes."""

from __future__ import annotations

import ipaddress
import unicodedata

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.exchange.remediation import (
    MAX_VALUE_LENGTH,
    UnsafeValueError,
    check_value,
    connector_identity,
    default_receive_connectors,
    grant_command,
    inspect_connector_command,
    is_legacy_version,
    likely_submission_connector,
    list_connectors_command,
    ps_quote,
    short_server_name,
    sid_command,
    undo_command,
    whatif_command,
)
from tests.pwsh_parse import (
    PwshParseError,
    assert_quotes_doubled,
    parse_pipeline,
    ps_scan_single_quoted,
)

SMART_QUOTES = ["\u2018", "\u2019", "\u201a", "\u201b"]
ALL_QUOTES = ["'"] + SMART_QUOTES
SID_BLOCK = "{ $_.Translate([System.Security.Principal.SecurityIdentifier]).Value }"
INSPECT_COLUMNS = ("Identity", "Enabled", "Bindings", "RemoteIPRanges", "PermissionGroups",
                   "AuthMechanism", "TransportRole")


# --- exact text ---------------------------------------------------------------------------------


def test_exact_commands_for_one_account_on_one_connector():
    identity = connector_identity("EX01.contoso.local", "Client Frontend EX01")
    assert identity == "EX01\\Client Frontend EX01"
    account = "CONTOSO\\svc-scanner"
    grant = grant_command(account, identity)
    assert grant == (
        "Get-ReceiveConnector -Identity 'EX01\\Client Frontend EX01' | Add-ADPermission"
        " -User 'CONTOSO\\svc-scanner' -ExtendedRights 'ms-Exch-SMTP-Submit'"
    )
    assert whatif_command(account, identity) == grant + " -WhatIf"
    assert undo_command(account, identity) == (
        "Get-ReceiveConnector -Identity 'EX01\\Client Frontend EX01' | Remove-ADPermission"
        " -User 'CONTOSO\\svc-scanner' -ExtendedRights 'ms-Exch-SMTP-Submit' -Confirm:$false"
    )
    assert list_connectors_command("EX01.contoso.local") == (
        "Get-ReceiveConnector -Server 'EX01'"
        " | Format-Table Identity,Bindings,AuthMechanism,PermissionGroups,TransportRole"
    )
    assert inspect_connector_command(identity) == (
        "Get-ReceiveConnector -Identity 'EX01\\Client Frontend EX01'"
        " | Format-List Identity,Enabled,Bindings,RemoteIPRanges,PermissionGroups,AuthMechanism,"
        "TransportRole"
    )
    assert sid_command(account) == (
        "New-Object -TypeName System.Security.Principal.NTAccount -ArgumentList"
        " 'CONTOSO\\svc-scanner' | ForEach-Object"
        " { $_.Translate([System.Security.Principal.SecurityIdentifier]).Value }"
    )


def test_connector_that_is_already_an_identity_is_used_as_is():
    identity = connector_identity("EX01", "EX02\\Relay Scanners")
    assert identity == "EX02\\Relay Scanners"
    assert grant_command("CONTOSO\\svc", identity).startswith(
        "Get-ReceiveConnector -Identity 'EX02\\Relay Scanners' | ")


def test_configured_connector_on_a_lowercase_fqdn_for_a_upn():
    # A bare connector name from configuration, prefixed with the short server name as given
    # (case kept).
    identity = connector_identity("ex01.contoso.local", "Scanners 587")
    assert identity == "ex01\\Scanners 587"
    assert grant_command("svc-mfp@contoso.com", identity) == (
        "Get-ReceiveConnector -Identity 'ex01\\Scanners 587' | Add-ADPermission"
        " -User 'svc-mfp@contoso.com' -ExtendedRights 'ms-Exch-SMTP-Submit'"
    )


@pytest.mark.parametrize(
    "version",
    [None, "", "2013", "2016", "2019", "Exchange Server 2019 CU14", "SE", "Subscription Edition",
     "15.2.1544.4", "Version 15.1 (Build 2507.6)", "something else"],
)
def test_submission_connector_for_2013_and_later_or_unknown(version):
    assert not is_legacy_version(version)
    identity = likely_submission_connector("EX01.contoso.local", version)
    assert identity == "EX01\\Client Frontend EX01"
    assert grant_command("CONTOSO\\svc-scanner", identity) == (
        "Get-ReceiveConnector -Identity 'EX01\\Client Frontend EX01' | Add-ADPermission"
        " -User 'CONTOSO\\svc-scanner' -ExtendedRights 'ms-Exch-SMTP-Submit'"
    )
    assert ("EX01\\Client Frontend EX01", 587) in [
        (c.identity, c.port) for c in default_receive_connectors("EX01.contoso.local", version)]


@pytest.mark.parametrize(
    "version", ["2010", "2007", "Exchange 2010 SP3", "14.3.123.4", "Version 14.3 (Build 123.4)",
                "Version 8.3 (Build 83.6)", "8.3.83.6"],
)
def test_submission_connector_for_2007_and_2010(version):
    assert is_legacy_version(version)
    identity = likely_submission_connector("EX01.contoso.local", version)
    assert identity == "EX01\\Client EX01"
    assert grant_command("CONTOSO\\svc-scanner", identity) == (
        "Get-ReceiveConnector -Identity 'EX01\\Client EX01' | Add-ADPermission"
        " -User 'CONTOSO\\svc-scanner' -ExtendedRights 'ms-Exch-SMTP-Submit'"
    )
    assert [(c.identity, c.port) for c in default_receive_connectors("EX01", version)] == [
        ("EX01\\Default EX01", 25), ("EX01\\Client EX01", 587)]


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
    assert "-User 'scanner@contoso.com' " in grant_command("scanner@contoso.com",
                                                           "EX01\\Client Frontend EX01")
    check_commands("scanner@contoso.com", "EX01\\Client Frontend EX01", "EX01")


@pytest.mark.parametrize(
    "given, short",
    [("EX01.contoso.local", "EX01"), ("EX01", "EX01"), ("ex01.contoso.local.", "ex01"),
     ("  EX01.contoso.local ", "EX01"), ("10.0.0.5", "10.0.0.5"), ("fe80::1", "fe80::1")],
)
def test_short_server_name(given, short):
    assert short_server_name(given) == short
    # and every command that names a server uses that short name
    assert list_connectors_command(given).startswith(f"Get-ReceiveConnector -Server '{short}' | ")
    assert connector_identity(given, "Relay") == f"{short}\\Relay"
    assert likely_submission_connector(given) == f"{short}\\Client Frontend {short}"
    assert default_receive_connectors(given)[0].identity == f"{short}\\Default Frontend {short}"


@pytest.mark.parametrize("bad", ["", "   ", ".", ".contoso.local"])
def test_short_server_name_refuses_empty(bad):
    with pytest.raises(UnsafeValueError, match="server name"):
        short_server_name(bad)
    with pytest.raises(UnsafeValueError, match="^server name "):
        list_connectors_command(bad)


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


def check_commands(account: str, identity: str, server: str) -> None:
    """Every command built from these values parses cleanly, has exactly the expected commands
    and parameters, and each untrusted argument is one verbatim literal that PowerShell decodes
    to the input."""

    def literal(arg, expected):
        assert arg is not None and arg.is_verbatim_literal, arg
        assert arg.value == expected
        assert_quotes_doubled(arg.text[1:-1])

    def get_connector(cmd):
        assert cmd.name == "Get-ReceiveConnector"
        assert cmd.param_names == ("-Identity",) and cmd.positional == ()
        literal(cmd.arg("-Identity"), identity)

    for text, last in ((grant_command(account, identity), ()),
                       (whatif_command(account, identity), ("-WhatIf",))):
        p = parse_pipeline(text)
        assert p.names == ("Get-ReceiveConnector", "Add-ADPermission")
        get_connector(p.commands[0])
        add = p.commands[1]
        assert add.param_names == ("-User", "-ExtendedRights", *last) and add.positional == ()
        literal(add.arg("-User"), account)
        literal(add.arg("-ExtendedRights"), "ms-Exch-SMTP-Submit")
        if last:
            assert add.arg("-WhatIf") is None

    p = parse_pipeline(undo_command(account, identity))
    assert p.names == ("Get-ReceiveConnector", "Remove-ADPermission")
    get_connector(p.commands[0])
    rm = p.commands[1]
    assert rm.param_names == ("-User", "-ExtendedRights", "-Confirm") and rm.positional == ()
    literal(rm.arg("-User"), account)
    literal(rm.arg("-ExtendedRights"), "ms-Exch-SMTP-Submit")
    assert (rm.arg("-Confirm").node_type, rm.arg("-Confirm").text) == ("variable", "$false")

    p = parse_pipeline(inspect_connector_command(identity))
    assert p.names == ("Get-ReceiveConnector", "Format-List")
    get_connector(p.commands[0])
    (cols,) = p.commands[1].positional
    assert p.commands[1].params == ()
    assert (cols.node_type, cols.items) == ("bareword_list", INSPECT_COLUMNS)

    p = parse_pipeline(sid_command(account))
    assert p.names == ("New-Object", "ForEach-Object")
    new = p.commands[0]
    assert new.param_names == ("-TypeName", "-ArgumentList") and new.positional == ()
    assert new.arg("-TypeName").text == "System.Security.Principal.NTAccount"
    literal(new.arg("-ArgumentList"), account)
    (block,) = p.commands[1].positional
    assert (block.node_type, block.text) == ("script_block_expression", SID_BLOCK)
    assert p.commands[1].params == ()

    p = parse_pipeline(list_connectors_command(server))
    assert p.names == ("Get-ReceiveConnector", "Format-Table")
    assert p.commands[0].param_names == ("-Server",) and p.commands[0].positional == ()
    literal(p.commands[0].arg("-Server"), server)
    (cols,) = p.commands[1].positional
    assert cols.items == ("Identity", "Bindings", "AuthMechanism", "PermissionGroups", "TransportRole")


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_account(name):
    check_value(name, "account")
    check_commands(name, "EX01\\Client Frontend EX01", "EX01")


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_connector(name):
    identity = connector_identity("EX01", name)
    assert identity == (name if "\\" in name else f"EX01\\{name}")
    check_commands("CONTOSO\\svc-scanner", identity, "EX01")


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_account_on_a_hostile_connector(name):
    identity = connector_identity("EX01.contoso.local", name)
    assert identity == (name if "\\" in name else f"EX01\\{name}")
    check_commands(name, identity, "EX01")


@pytest.mark.parametrize("name", [n for n in HOSTILE if "." not in n and "\\" not in n and n.strip() == n])
def test_hostile_server(name):
    assert short_server_name(name) == name
    identity = likely_submission_connector(name)
    assert identity == f"{name}\\Client Frontend {name}"
    assert connector_identity(name, "Relay") == f"{name}\\Relay"
    assert [c.identity for c in default_receive_connectors(name, "2010")] == [
        f"{name}\\Default {name}", f"{name}\\Client {name}"]
    check_commands("CONTOSO\\svc-scanner", identity, name)


def test_server_with_backslash_is_refused():
    message = "^server name contains a backslash"
    with pytest.raises(UnsafeValueError, match=message):
        list_connectors_command("CONTOSO\\EX01")
    with pytest.raises(UnsafeValueError, match=message):
        likely_submission_connector("CONTOSO\\EX01")
    with pytest.raises(UnsafeValueError, match=message):
        connector_identity("CONTOSO\\EX01", "Relay")
    with pytest.raises(UnsafeValueError, match=message):
        default_receive_connectors("CONTOSO\\EX01", "2019")


@pytest.mark.parametrize("q", ALL_QUOTES)
def test_long_names_at_the_limit(q):
    account = ("x" + q) * (MAX_VALUE_LENGTH // 2)
    assert len(account) == MAX_VALUE_LENGTH
    name = "c" * (MAX_VALUE_LENGTH - len("EX01\\") - 1) + q
    identity = connector_identity("EX01", name)
    assert len(identity) == MAX_VALUE_LENGTH
    check_commands(account, identity, "EX01")
    all_quotes = q * MAX_VALUE_LENGTH
    assert ps_quote(all_quotes) == "'" + q * (2 * MAX_VALUE_LENGTH) + "'"
    check_commands(all_quotes, "EX01\\Client Frontend EX01", "EX01")
    check_commands("a", all_quotes, "EX01")         # a connector of nothing but quotes, too


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

CONNECTOR = "EX01\\Client Frontend EX01"
# Every function that puts an account, a connector or a server into a command.
ACCOUNT_COMMANDS = {
    "grant": lambda account: grant_command(account, CONNECTOR),
    "whatif": lambda account: whatif_command(account, CONNECTOR),
    "undo": lambda account: undo_command(account, CONNECTOR),
    "sid": sid_command,
    "check_value": lambda account: check_value(account, "account"),
}
CONNECTOR_COMMANDS = {
    "identity": lambda connector: connector_identity("EX01", connector),
    "grant": lambda connector: grant_command("a", connector),
    "whatif": lambda connector: whatif_command("a", connector),
    "undo": lambda connector: undo_command("a", connector),
    "inspect": inspect_connector_command,
}
SERVER_COMMANDS = {
    "list": list_connectors_command,
    "identity": lambda server: connector_identity(server, "Relay"),
    "likely": likely_submission_connector,
    "defaults": default_receive_connectors,
}


@pytest.mark.parametrize("ch, description", REFUSED_CHARS)
@pytest.mark.parametrize("command", list(ACCOUNT_COMMANDS))
def test_refused_characters_in_account(ch, description, command):
    with pytest.raises(UnsafeValueError) as err:
        ACCOUNT_COMMANDS[command](f"CONTOSO\\svc{ch}x")
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
    for name, build in CONNECTOR_COMMANDS.items():
        for connector in (f"EX01\\Client{ch}Frontend", f"Client{ch}Frontend"):
            with pytest.raises(UnsafeValueError, match=r"^connector name contains ") as err:
                build(connector)
            assert description in str(err.value), name
    for name, build in SERVER_COMMANDS.items():
        with pytest.raises(UnsafeValueError, match=r"^server name contains ") as err:
            build(f"EX{ch}01")
        assert description in str(err.value), name


def test_refusal_message_does_not_echo_the_value():
    hostile = "<!channel> $(Remove-Item C:\\)\n"
    for build in (*ACCOUNT_COMMANDS.values(), *CONNECTOR_COMMANDS.values()):
        with pytest.raises(UnsafeValueError) as err:
            build(hostile)
        assert "channel" not in str(err.value) and "Remove-Item" not in str(err.value)


def test_empty_values_are_refused():
    for build in ACCOUNT_COMMANDS.values():
        with pytest.raises(UnsafeValueError, match="^account name is empty"):
            build("")
    for build in CONNECTOR_COMMANDS.values():
        with pytest.raises(UnsafeValueError, match="^connector name is empty"):
            build("")
    for build in SERVER_COMMANDS.values():
        with pytest.raises(UnsafeValueError, match="^server name is empty"):
            build("")
    with pytest.raises(UnsafeValueError, match="^value is empty"):
        ps_quote("")


def test_over_the_limit_is_refused():
    assert ps_quote("x" * MAX_VALUE_LENGTH)
    for build in ACCOUNT_COMMANDS.values():
        with pytest.raises(UnsafeValueError) as err:
            build("x" * (MAX_VALUE_LENGTH + 1))
        assert str(err.value).startswith("account name is 1,025 characters long;")
        assert "1,024" in str(err.value)
    for build in CONNECTOR_COMMANDS.values():
        with pytest.raises(UnsafeValueError, match="^connector name is 1,025 characters long"):
            build("EX01\\" + "c" * (MAX_VALUE_LENGTH + 1 - len("EX01\\")))
    # a bare name within the limit that is too long once the server is put in front of it
    name = "c" * (MAX_VALUE_LENGTH + 1 - len("EX01\\"))
    check_value(name, "connector")
    with pytest.raises(UnsafeValueError, match="^connector name is 1,025 characters long"):
        connector_identity("EX01", name)


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
@given(value=names)
def test_property_check_value(value):
    try:
        check_value(value, "account")
    except UnsafeValueError as err:
        assert should_refuse(value)
        assert err.what == "account" and err.value == value
        return
    assert not should_refuse(value)
    assert parse_pipeline(f"Get-X -User {ps_quote(value)}").commands[0].arg("-User").value == value


@PROP
@given(account=names, connector=names)
def test_property_account_and_connector(account, connector):
    identity = None
    if connector:
        identity = connector if "\\" in connector else f"EX01\\{connector}"
    try:
        got = connector_identity("EX01.contoso.local", connector) if connector else None
        check_value(account, "account")
    except UnsafeValueError:
        assert should_refuse(account) or (connector and (should_refuse(connector) or should_refuse(identity)))
        return
    assert got == identity
    assert not should_refuse(account)
    check_commands(account, identity or "EX01\\Client Frontend EX01", "EX01")


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
        listing = list_connectors_command(server)
        identity = likely_submission_connector(server)
        check_value(account, "account")
    except UnsafeValueError:
        assert should_refuse(account) or short == "" or "\\" in short or should_refuse(short)
        return
    assert not (short == "" or "\\" in short or should_refuse(short))
    assert short_server_name(server) == short
    assert listing == list_connectors_command(short)
    assert identity == f"{short}\\Client Frontend {short}"
    check_commands(account, identity, short)
