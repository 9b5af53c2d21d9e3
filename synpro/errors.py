"""User-facing errors: everything the CLI turns into a one-screen message and exit code 2."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Problem:
    """One thing wrong with the input, located as precisely as we can."""

    message: str
    key: str | None = None
    line: int | None = None

    def render(self, file: str | None) -> str:
        where = file or "<input>"
        if self.line is not None:
            where += f":{self.line}"
        if self.key:
            where += f" [{self.key}]"
        return f"{where}: {self.message}"


@dataclass
class InputError(Exception):
    """Bad input that the user can fix: a broken spec, a missing corpus, an unloadable model."""

    problems: list[Problem]
    file: str | None = None
    hint: str | None = None
    details: dict = field(default_factory=dict)

    @classmethod
    def one(cls, message: str, *, file: str | None = None, key: str | None = None,
            line: int | None = None, hint: str | None = None) -> "InputError":
        return cls([Problem(message, key, line)], file=file, hint=hint)

    def __str__(self) -> str:
        lines = [p.render(self.file) for p in self.problems]
        if self.hint:
            lines.append(f"hint: {self.hint}")
        return "\n".join(lines)
