"""The one exception type that reaches the user as a single line on stderr."""

from __future__ import annotations


class ReidxError(Exception):
    """A problem the user can fix: ``message`` says what is wrong, ``fix`` what to do."""

    def __init__(self, message: str, fix: str | None = None) -> None:
        self.message = message
        self.fix = fix
        super().__init__(self.line())

    def line(self) -> str:
        """The one-line form shown on stderr."""
        return f"{self.message} — {self.fix}" if self.fix else self.message
