"""What hides in an untrusted name: invisible characters and look-alike scripts.

Account and connector names come from whoever connected over SMTP. Two tricks make such a name
mislead a person reading an alert or pasting a command:

- characters that draw nothing: Unicode's format characters (category Cf: zero-width space and
  joiners, word joiner, byte-order mark, soft hyphen, bidirectional controls, the tag characters
  U+E0000..E007F) and the Hangul fillers, letters that render as blank space. A command with one
  inside looks exactly like the right one and names another account;
- letters of one script dressed as another's (Cyrillic `а` in a Latin `аdmin`).

No Exchange name needs either. Remediation refuses invisible characters in commands; rendering
shows them as escapes; an alert warns about a word that mixes Latin with Cyrillic or Greek.
Pure: no I/O.
"""
from __future__ import annotations

import re
import unicodedata

#: Letters (category Lo) that render as empty space; not format characters, so listed by hand.
HANGUL_FILLERS = frozenset("\u115f\u1160\u3164\uffa0")

#: Scripts whose letters look like Latin ones; a word mixing Latin with one of them is suspect.
_LOOKALIKE_SCRIPTS = ("CYRILLIC", "GREEK")
#: What separates the words of an account name: domain\user, user@domain, dotted and dashed parts.
_WORD_BREAK = re.compile(r"[\\@.\-_\s]+")


def is_invisible(ch: str) -> bool:
    """True for a character that draws nothing (a format character or a Hangul filler)."""
    return unicodedata.category(ch) == "Cf" or ch in HANGUL_FILLERS


def describe_invisible(ch: str) -> str:
    """'a zero-width space (U+200B)': what the character is, for a refusal message."""
    name = unicodedata.name(ch, "").lower()
    code = f"U+{ord(ch):04X}"
    if ch in HANGUL_FILLERS:
        return f"an invisible Hangul filler ({code})"
    if 0xE0000 <= ord(ch) <= 0xE007F:
        return f"an invisible tag character ({code})"
    return f"an invisible character, {name} ({code})" if name else \
        f"an invisible character ({code})"


def script_of(ch: str) -> str | None:
    """The script of a letter as Unicode names it (LATIN, CYRILLIC, GREEK, ...); None otherwise."""
    if not ch.isalpha():
        return None
    name = unicodedata.name(ch, "")
    return name.split(" ", 1)[0] if name else None


def mixed_script_words(name: str) -> list[str]:
    """The words of *name* that mix Latin letters with Cyrillic or Greek ones.

    Checked per word, not per name: `КОНТОСО\\Сканер` or `CONTOSO\\Сканер` are honest names in
    one script per word; `CONTOSO\\аdmin` (Cyrillic а) is not.
    """
    suspects = []
    for word in _WORD_BREAK.split(name):
        scripts = {script_of(ch) for ch in word} - {None}
        if "LATIN" in scripts and scripts & set(_LOOKALIKE_SCRIPTS):
            suspects.append(word)
    return suspects


def mixed_script_warning(name: str) -> str | None:
    """One sentence (plain text, not mrkdwn) when *name* mixes look-alike scripts, else None."""
    words = mixed_script_words(name)
    if not words:
        return None
    found = {script_of(ch) for w in words for ch in w}
    scripts = sorted(s for s in found if s is not None and s != "LATIN")
    which = " and ".join(s.title() for s in scripts)
    return (f"This name mixes Latin letters with {which} letters in one word, so it may only "
            "look like the account you know. Compare it letter by letter (or by its SID) "
            "before you act on it.")
