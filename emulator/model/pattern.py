"""Strings that match a regular expression, built from the pattern's parse tree (as guided decoding
would), for JSON Schema `pattern` and `patternProperties`."""

from __future__ import annotations

import random
import string

try:  # Python 3.11+
    from re import _constants as C  # type: ignore[attr-defined]
    from re import _parser as sre_parse  # type: ignore[attr-defined]
except ImportError:  # Python 3.10
    import sre_constants as C  # type: ignore[no-redef]
    import sre_parse  # type: ignore[no-redef]

LETTERS = string.ascii_lowercase
WORD = string.ascii_letters + string.digits + "_"
PRINTABLE = string.ascii_letters + string.digits + " -_.,:;!?/@#"
CATEGORIES = {
    C.CATEGORY_DIGIT: string.digits,
    C.CATEGORY_NOT_DIGIT: LETTERS,
    C.CATEGORY_WORD: WORD,
    C.CATEGORY_NOT_WORD: " -.,",
    C.CATEGORY_SPACE: " ",
    C.CATEGORY_NOT_SPACE: WORD,
}
EXTRA_REPEATS = 3  # how far past a repeat's minimum an open-ended repeat may go


class PatternError(ValueError):
    """The pattern cannot be parsed (or uses something this generator cannot build)."""


def matching(pattern: str, rng: random.Random, extra: int = EXTRA_REPEATS) -> str:
    """A string that `re.search(pattern, s)` accepts (lookarounds are ignored: the caller checks)."""
    try:
        tree = sre_parse.parse(pattern)
    except Exception as exc:  # re.error, or anything the private parser raises
        raise PatternError(f"invalid pattern {pattern!r}: {exc}") from exc
    groups: dict[int, str] = {}
    return _build(tree, rng, groups, extra)


def _build(tree, rng: random.Random, groups: dict[int, str], extra: int) -> str:  # type: ignore[no-untyped-def]
    out = []
    for op, av in tree:
        out.append(_one(op, av, rng, groups, extra))
    return "".join(out)


def _one(op, av, rng: random.Random, groups: dict[int, str], extra: int) -> str:  # type: ignore[no-untyped-def]
    if op is C.LITERAL:
        return chr(av)
    if op is C.NOT_LITERAL:
        return next(ch for ch in rng.sample(LETTERS, len(LETTERS)) if ord(ch) != av)
    if op is C.ANY:
        return rng.choice(LETTERS)
    if op is C.IN:
        return _in(av, rng)
    if op in (C.MAX_REPEAT, C.MIN_REPEAT, getattr(C, "POSSESSIVE_REPEAT", None)):
        low, high, sub = av
        top = low + extra if high is C.MAXREPEAT else min(high, low + extra)
        return "".join(_build(sub, rng, groups, extra) for _ in range(rng.randint(low, max(low, top))))
    if op is C.SUBPATTERN:
        group, _add, _del, sub = av
        text = _build(sub, rng, groups, extra)
        if group is not None:
            groups[group] = text
        return text
    if op is C.BRANCH:
        return _build(rng.choice(av[1]), rng, groups, extra)
    if op is C.GROUPREF:
        return groups.get(av, "")
    if op is C.CATEGORY:
        return rng.choice(CATEGORIES.get(av, LETTERS))
    if op in (C.AT, C.ASSERT, C.ASSERT_NOT):
        return ""  # anchors need nothing; lookarounds are left to the caller's check
    raise PatternError(f"unsupported regular expression construct {op}")


def _in(items, rng: random.Random) -> str:  # type: ignore[no-untyped-def]
    """One character of a class like [a-z0-9_] or [^,]."""
    negate = any(op is C.NEGATE for op, _ in items)
    chars: list[str] = []
    for op, av in items:
        if op is C.LITERAL:
            chars.append(chr(av))
        elif op is C.RANGE:
            lo, hi = av
            chars.extend(chr(c) for c in range(lo, min(hi, lo + 200) + 1))
        elif op is C.CATEGORY:
            chars.extend(CATEGORIES.get(av, LETTERS))
    if negate:
        allowed = [ch for ch in PRINTABLE if ch not in chars]
        return rng.choice(allowed or ["~"])
    if not chars:
        raise PatternError("empty character class")
    return rng.choice(chars)
