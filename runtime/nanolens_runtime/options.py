"""Words for yes and no, the one place they are parsed (settings, analysis options)."""

from __future__ import annotations

YES = ("1", "true", "yes", "on")
NO = ("0", "false", "no", "off", "")


def parse_yes_no(raw: str) -> bool | None:
    """True for a yes word, False for a no word (the empty string included), None for anything else.

    Examples
    --------
    >>> parse_yes_no("Yes"), parse_yes_no("off"), parse_yes_no("maybe")
    (True, False, None)
    """
    lowered = raw.strip().lower()
    if lowered in YES:
        return True
    if lowered in NO:
        return False
    return None
