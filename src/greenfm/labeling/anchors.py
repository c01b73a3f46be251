"""Cheap pre-checks for regular expressions: which substrings must a match contain?

``required_substrings(pattern)`` returns strings of which every match of
``pattern`` contains at least one, or None when that cannot be shown. The
labeler runs a phrase's regex only when one of them occurs in the report
(a C-speed substring test), which is what makes it fast on short reports.
The analysis walks Python's own regex parse tree (written by hand: no library
offers it); anything it does not understand gives None, i.e. "always run".
"""

from __future__ import annotations

try:  # Python >= 3.11
    from re import _constants as _c
    from re import _parser
except ImportError:  # pragma: no cover - Python 3.10
    import sre_constants as _c  # type: ignore[no-redef]
    import sre_parse as _parser  # type: ignore[no-redef]

_REPEATS = {_c.MAX_REPEAT, _c.MIN_REPEAT} | ({_c.POSSESSIVE_REPEAT} if hasattr(_c, "POSSESSIVE_REPEAT") else set())


def required_substrings(pattern: str) -> tuple[str, ...] | None:
    """Strings one of which occurs in every match of ``pattern``; None if unknown."""
    try:
        found = _sequence(list(_parser.parse(pattern)))
    except Exception:  # noqa: BLE001 - any surprise means "no pre-check"
        return None
    if not found or any(not s for s in found):
        return None
    return tuple(sorted(found))


def _sequence(items: list) -> set[str] | None:
    """Candidates from one sequence; the best is the set whose shortest string is longest."""
    candidates: list[set[str]] = []
    run: list[str] = []

    def flush() -> None:
        if run:
            candidates.append({"".join(run)})
            run.clear()

    for op, av in items:
        if op is _c.LITERAL:
            run.append(chr(av))
            continue
        flush()
        sub: set[str] | None = None
        if op is _c.SUBPATTERN:
            sub = _sequence(list(av[-1]))
        elif op is _c.BRANCH:
            branches = [_sequence(list(b)) for b in av[1]]
            sub = None if any(b is None for b in branches) else set().union(*branches)
        elif op in _REPEATS and av[0] >= 1:
            sub = _sequence(list(av[2]))
        if sub:
            candidates.append(sub)
    flush()
    if not candidates:
        return None
    return max(candidates, key=lambda s: (min(len(x) for x in s), -len(s)))
