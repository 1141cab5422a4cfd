"""Text from the database or the user shown on a terminal: control characters made visible."""

from __future__ import annotations

__all__ = ["escape_controls", "shown"]


def escape_controls(text: str) -> str:
    """`text` with every control character as an escape (\\n, \\x1b, ...): a stored actor or
    reason can neither move the cursor nor colour the terminal, nor fake a line of output."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in text)


def shown(text: str) -> str:
    """Text for a rich table or line: control characters escaped, and no rich markup taken from it."""
    from rich.markup import escape

    return escape(escape_controls(text))
