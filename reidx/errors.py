"""The one exception type that reaches the user as a single line on stderr."""

from __future__ import annotations

from typing import Literal


class ReidxError(Exception):
    """A problem the user can fix: ``message`` says what is wrong, ``fix`` what to do."""

    def __init__(self, message: str, fix: str | None = None) -> None:
        self.message = message
        self.fix = fix
        super().__init__(self.line())

    def line(self) -> str:
        """The one-line form shown on stderr."""
        return f"{self.message} — {self.fix}" if self.fix else self.message


def one_line(exc: BaseException | str, limit: int = 160, keep: Literal["all", "first", "last"] = "all") -> str:
    """An exception's text as one short line, or the exception's type name when it says nothing: the form every
    reason quoted in a ReidxError takes. ``keep`` chooses the whole text (whitespace and newlines collapsed) or
    only its first or last non-empty line (a C++ trace ends with its message; a Python one starts with it)."""
    lines = [line for line in str(exc).splitlines() if line.strip()]
    if keep != "all" and lines:
        lines = [lines[0] if keep == "first" else lines[-1]]
    text = " ".join(" ".join(lines).split())[:limit]
    if text or isinstance(exc, str):
        return text
    return type(exc).__name__
