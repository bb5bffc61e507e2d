"""User-facing errors: one sentence that names the problem and the fix, shown without a traceback."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class HmtbenchError(Exception):
    """An error caused by the user's input or environment; the CLI prints it as one line."""


class Canceled(KeyboardInterrupt):
    """Ctrl-C during a command that can go on later: ``hint`` says how (the CLI prints it)."""

    def __init__(self, hint: str) -> None:
        super().__init__(hint)
        self.hint = hint


def canceled_message(written: list, interrupt: KeyboardInterrupt) -> str:
    """What Ctrl-C leaves: the records written before it, and how to go on where the command knows."""
    kept = f"records written: {', '.join(map(str, written))}" if written else "no record was written"
    return f"canceled; {kept}" + (f"\n{interrupt.hint}" if isinstance(interrupt, Canceled) else "")


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """Return ' (did you mean X?)' for the closest choice, or ''."""
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.5)
    return f" (did you mean '{close[0]}'?)" if close else ""


def unknown_choice(kind: str, name: str, choices: Iterable[str]) -> HmtbenchError:
    choices = sorted(choices)
    return HmtbenchError(
        f"unknown {kind} '{name}'{did_you_mean(name, choices)}; choose one of: {', '.join(choices)}"
    )
