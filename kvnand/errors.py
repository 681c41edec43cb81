"""The one error type for bad input: it names the file, the key path, the value and what is allowed.

The CLI turns it into a single message and exit code 2; nothing else in the package prints tracebacks
for user input.
"""

from __future__ import annotations


class InputError(Exception):
    """Bad user input (config, model file, CLI argument, space file)."""

    def __init__(self, message: str, *, file: str | None = None, key: str | None = None,
                 line: int | None = None, value: object = None, allowed: str | None = None):
        self.file, self.key, self.line, self.value, self.allowed = file, key, line, value, allowed
        self.detail = message
        super().__init__(self.render())

    def render(self) -> str:
        where = []
        if self.file:
            where.append(f"{self.file}" + (f":{self.line}" if self.line else ""))
        if self.key:
            where.append(f"key '{self.key}'")
        head = ", ".join(where)
        msg = f"{head}: {self.detail}" if head else self.detail
        if self.value is not None:
            shown = repr(self.value)
            msg += f" (got {shown if len(shown) <= 80 else shown[:77] + '...'})"  # one readable line
        if self.allowed:
            msg += f"; allowed: {self.allowed}"
        # one line whatever the input held: a newline or control character in a key or value is shown escaped
        return msg if msg.isprintable() else "".join(c if c.isprintable() else repr(c)[1:-1] for c in msg)
