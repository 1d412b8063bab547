"""Test helper: parse a one-line PowerShell pipeline and check how its arguments are quoted.

Built on tree-sitter-powershell (``tree_sitter.Language(tree_sitter_powershell.language())``).
The node names this relies on, found by printing trees of the installed grammar (0.26.4)::

    program > statement_list > pipeline > pipeline_chain > command ('|' between commands)
    command > command_name, command_elements
    command_elements > command_parameter ('-User'), command_argument_sep (' ' or ':'),
                       argument (array_literal_expression > unary_expression > ...)
    'x'   -> string_literal > verbatim_string_characters   (node text keeps the outer quotes)
    "x"   -> string_literal > expandable_string_literal
    @'..'@ -> string_literal > verbatim_here_string_characters
    $x    -> variable;  { .. } -> script_block_expression;  @( .. ) -> array_expression
    bare words (User) -> generic_token

Two things the grammar gets wrong, handled here:

* It does not treat U+2018..U+201B as single quotes (real PowerShell does: CharTraits.cs
  ``IsSingleQuote``), so ``'a\u2019b'`` parses clean although PowerShell ends the string at the
  ``\u2019``.  :func:`ps_scan_single_quoted` is an independent scanner that follows PowerShell's
  rule, and :func:`parse_pipeline` checks every verbatim literal with it.
* It cannot parse a comma-separated list of bare words as one argument (``Format-Table
  User,Deny``, valid PowerShell): it inserts a MISSING ``command_argument_sep`` before each
  ``,Word``.  Exactly that pattern (identifier words only) is tolerated and reported as one
  argument of type ``bareword_list``; any other ERROR or MISSING node fails the parse.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import tree_sitter
import tree_sitter_powershell

#: Every character PowerShell treats as a single quote.
PS_SINGLE_QUOTES = frozenset("'\u2018\u2019\u201a\u201b")

#: Parameters that take an argument only in the ``-Name:value`` form.
DEFAULT_SWITCHES = frozenset({"-whatif", "-confirm", "-verbose", "-debug", "-force"})

_LANGUAGE = tree_sitter.Language(tree_sitter_powershell.language())
_PARSER = tree_sitter.Parser(_LANGUAGE)

_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_LIST_ITEM = re.compile(r",[A-Za-z_][A-Za-z0-9_]*\Z")
# Wrapper nodes with a single child that covers the same text; unwrapped when naming an argument.
_WRAPPERS = frozenset({"array_literal_expression", "unary_expression"})


class PwshParseError(AssertionError):
    """The text is not the clean one-pipeline PowerShell command the test expected."""


@dataclass(frozen=True)
class Arg:
    """One command argument.

    ``node_type``: the grammar's node type after unwrapping single-child wrappers:
    ``verbatim_string_characters`` for a single-quoted literal, ``expandable_string_literal``,
    ``variable``, ``script_block_expression``, ``generic_token``, ... or ``bareword_list``.
    ``value``: for a verbatim literal, the string PowerShell gets: outer quotes removed and every
    doubled quote character un-doubled, all five of them (:func:`ps_scan_single_quoted`);
    for a bareword list, the words joined by ','; otherwise None.
    ``grammar_value``: the grammar's view of a verbatim literal (only ``''`` un-doubled); it
    differs from ``value`` exactly when the literal holds smart quotes.
    """

    node_type: str
    text: str
    value: str | None = None
    items: tuple[str, ...] = ()
    grammar_value: str | None = None

    @property
    def is_verbatim_literal(self) -> bool:
        return self.node_type == "verbatim_string_characters"


@dataclass(frozen=True)
class Command:
    name: str
    #: (parameter as written, its argument or None for a switch), in order
    params: tuple[tuple[str, Arg | None], ...] = ()
    positional: tuple[Arg, ...] = ()

    @property
    def param_names(self) -> tuple[str, ...]:
        return tuple(p for p, _ in self.params)

    def arg(self, param: str) -> Arg | None:
        """The argument of *param* (case-insensitive); KeyError if the parameter is absent."""
        hits = [a for p, a in self.params if p.lower() == param.lower()]
        if len(hits) != 1:
            raise KeyError(f"{self.name}: parameter {param} appears {len(hits)} times")
        return hits[0]


@dataclass(frozen=True)
class Pipeline:
    source: str
    commands: tuple[Command, ...]
    #: (start, end) character offsets of every verbatim literal, outer quotes included
    literal_spans: tuple[tuple[int, int], ...] = field(default=())

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.commands)


# --- PowerShell's single-quote rule, independent of tree-sitter --------------------------------


def ps_scan_single_quoted(text: str, start: int = 0) -> tuple[str, int]:
    """Scan a single-quoted literal beginning at ``text[start]`` the way PowerShell does.

    Any of the five quote characters opens and closes it; inside, a quote character followed by
    another quote character stands for the second one (tokenizer.cs ScanStringLiteral).
    Returns (value, end) where ``text[start:end]`` is the literal.  Raises PwshParseError if
    ``text[start]`` is not a quote or the literal is not terminated.
    """
    if start >= len(text) or text[start] not in PS_SINGLE_QUOTES:
        raise PwshParseError(f"no single quote at offset {start} of {text!r}")
    out: list[str] = []
    i = start + 1
    while i < len(text):
        ch = text[i]
        if ch in PS_SINGLE_QUOTES:
            if i + 1 < len(text) and text[i + 1] in PS_SINGLE_QUOTES:
                out.append(text[i + 1])
                i += 2
                continue
            return "".join(out), i + 1
        out.append(ch)
        i += 1
    raise PwshParseError(f"unterminated single-quoted string at offset {start} of {text!r}")


def assert_quotes_doubled(inner: str) -> None:
    """Every quote character in a literal's inner text comes as a pair of that same character."""
    i = 0
    while i < len(inner):
        ch = inner[i]
        if ch in PS_SINGLE_QUOTES:
            if i + 1 >= len(inner) or inner[i + 1] != ch:
                raise PwshParseError(
                    f"quote U+{ord(ch):04X} at offset {i} of {inner!r} is not doubled "
                    "with itself (PowerShell's EscapeSingleQuotedStringContent doubles each)"
                )
            i += 2
        else:
            i += 1


def decode_verbatim(literal: str) -> str:
    """The grammar's view of a verbatim literal: strip the outer ``'`` and un-double ``''``."""
    if len(literal) < 2 or literal[0] != "'" or literal[-1] != "'":
        raise PwshParseError(f"not a single-quoted literal: {literal!r}")
    return literal[1:-1].replace("''", "'")


# --- tree-sitter ------------------------------------------------------------------------------


def parse_tree(source: str) -> tree_sitter.Tree:
    return _PARSER.parse(source.encode("utf-8"))


def dump(node: tree_sitter.Node, depth: int = 0) -> str:
    """An indented outline of a tree (for failure messages and exploring the grammar)."""
    flag = " ERROR" if node.is_error else " MISSING" if node.is_missing else ""
    name = node.type if node.is_named else repr(node.type)
    lines = [f"{'  ' * depth}{name}{flag} {node.text.decode('utf-8', 'replace')!r}"]
    lines += [dump(c, depth + 1) for c in node.children]
    return "\n".join(lines)


def _text(node: tree_sitter.Node) -> str:
    return node.text.decode("utf-8")


def _is_tolerated_missing(node: tree_sitter.Node) -> bool:
    """The grammar gap for bare-word lists: a MISSING sep between ``Word`` and ``,Word``."""
    sep = node if node.type == "command_argument_sep" else node.parent
    if sep is None or sep.type != "command_argument_sep" or sep.end_byte != sep.start_byte:
        return False
    prev, nxt = sep.prev_sibling, sep.next_sibling
    return (
        prev is not None and nxt is not None
        and prev.type == "generic_token" and nxt.type == "generic_token"
        and bool(_WORD.match(_text(prev)) or _LIST_ITEM.match(_text(prev)))
        and bool(_LIST_ITEM.match(_text(nxt)))
    )


def _problems(node: tree_sitter.Node) -> list[tree_sitter.Node]:
    found = []
    if node.is_error or node.type == "ERROR":
        found.append(node)
    elif node.is_missing and not _is_tolerated_missing(node):
        found.append(node)
    for child in node.children:
        found.extend(_problems(child))
    return found


def _single_named(node: tree_sitter.Node, type_: str) -> tree_sitter.Node:
    kids = node.named_children
    if len(kids) != 1 or kids[0].type != type_:
        raise PwshParseError(f"expected one {type_} under {node.type}, got "
                             f"{[k.type for k in kids]}")
    return kids[0]


def _unwrap(node: tree_sitter.Node) -> tree_sitter.Node:
    while node.type in _WRAPPERS and node.named_child_count == 1 \
            and node.named_children[0].byte_range == node.byte_range:
        node = node.named_children[0]
    if node.type == "string_literal" and node.named_child_count == 1 \
            and node.named_children[0].byte_range == node.byte_range:
        node = node.named_children[0]
    return node


def _arg(node: tree_sitter.Node) -> Arg:
    inner = _unwrap(node)
    text = _text(node)
    if inner.type == "verbatim_string_characters":
        literal = _text(inner)
        ps_value, ps_end = ps_scan_single_quoted(literal)
        if ps_end != len(literal):
            raise PwshParseError(
                f"PowerShell would end {literal!r} after {ps_end} characters (unescaped quote)")
        return Arg(inner.type, text, ps_value, grammar_value=decode_verbatim(literal))
    return Arg(inner.type, text)


def _command(node: tree_sitter.Node, switches: frozenset[str]) -> Command:
    name_node = node.child_by_field_name("command_name") or next(
        (c for c in node.named_children if c.type == "command_name"), None)
    if name_node is None:
        raise PwshParseError(f"command without a name: {_text(node)!r}")
    elems = next((c for c in node.named_children if c.type == "command_elements"), None)
    items: list[tuple[str, object]] = []  # ("param", text) | ("colon", None) | ("arg", Arg)
    if elems is not None:
        for child in elems.named_children:
            if child.type == "command_argument_sep":
                if _text(child) == ":":
                    items.append(("colon", None))
                continue
            if child.type == "command_parameter":
                items.append(("param", _text(child)))
                continue
            if child.type == "generic_token" and _LIST_ITEM.match(_text(child)) \
                    and items and items[-1][0] == "arg":
                prev: Arg = items[-1][1]  # type: ignore[assignment]
                if prev.node_type in ("generic_token", "bareword_list"):
                    words = (prev.items or (prev.text,)) + (_text(child)[1:],)
                    items[-1] = ("arg", Arg("bareword_list", ",".join(words), ",".join(words),
                                            words))
                    continue
            items.append(("arg", _arg(child)))
    params: list[tuple[str, Arg | None]] = []
    positional: list[Arg] = []
    i = 0
    while i < len(items):
        kind, val = items[i]
        if kind == "param":
            colon = i + 1 < len(items) and items[i + 1][0] == "colon"
            j = i + 2 if colon else i + 1
            takes = colon or str(val).lower() not in switches
            if takes and j < len(items) and items[j][0] == "arg":
                params.append((str(val), items[j][1]))  # type: ignore[arg-type]
                i = j + 1
                continue
            if colon:
                raise PwshParseError(f"{val}: without an argument")
            params.append((str(val), None))
        elif kind == "arg":
            positional.append(val)  # type: ignore[arg-type]
        i += 1
    return Command(_text(name_node), tuple(params), tuple(positional))


def _verbatim_spans(node: tree_sitter.Node, src_bytes: bytes) -> list[tuple[int, int]]:
    spans = []
    if node.type == "verbatim_string_characters":
        start = len(src_bytes[: node.start_byte].decode("utf-8"))
        end = len(src_bytes[: node.end_byte].decode("utf-8"))
        spans.append((start, end))
    for child in node.children:
        spans.extend(_verbatim_spans(child, src_bytes))
    return spans


def parse_pipeline(source: str, switches: frozenset[str] = DEFAULT_SWITCHES) -> Pipeline:
    """Parse *source* as exactly one pipeline and return its commands and their arguments.

    Fails (PwshParseError, an AssertionError) when the grammar reports ERROR or MISSING
    (except the bare-word list gap), when the text is not one statement holding one pipeline,
    or when PowerShell's own single-quote rule disagrees with the grammar: every verbatim
    literal must end exactly where tree-sitter says it ends, with the same value and every
    quote character doubled, and no quote character may appear outside a literal.
    """
    src_bytes = source.encode("utf-8")
    tree = _PARSER.parse(src_bytes)
    root = tree.root_node
    bad = _problems(root)
    if bad:
        where = ", ".join(f"{n.type or 'MISSING'}@{n.start_byte}" for n in bad[:5])
        raise PwshParseError(f"parse problems ({where}) in {source!r}:\n{dump(root)}")
    if root.type != "program":
        raise PwshParseError(f"root is {root.type}:\n{dump(root)}")
    stmts = _single_named(root, "statement_list")
    pipeline = _single_named(stmts, "pipeline")
    chain = _single_named(pipeline, "pipeline_chain")
    commands = []
    for child in chain.children:
        if child.type == "command":
            commands.append(_command(child, switches))
        elif child.type != "|":
            raise PwshParseError(f"unexpected {child.type!r} in the pipeline:\n{dump(root)}")
    if _text(chain).strip() != source.strip():
        raise PwshParseError(f"pipeline does not cover the whole text:\n{dump(root)}")

    spans = _verbatim_spans(root, src_bytes)
    covered = set()
    for start, end in spans:
        literal = source[start:end]
        _, ps_end = ps_scan_single_quoted(source, start)
        if ps_end != end:
            raise PwshParseError(
                f"PowerShell would end the literal at offset {ps_end}, tree-sitter at {end}: "
                f"{literal!r}")
        assert_quotes_doubled(literal[1:-1])
        covered.update(range(start, end))
    stray = [i for i, ch in enumerate(source) if ch in PS_SINGLE_QUOTES and i not in covered]
    if stray:
        raise PwshParseError(f"quote character outside any literal at {stray} in {source!r}")
    return Pipeline(source, tuple(commands), tuple(spans))
