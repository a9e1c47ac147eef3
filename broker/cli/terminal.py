"""Talking to a person on a terminal: questions with answers checked, and the progress of
an issuance redrawn in place. Without a terminal nothing is asked and progress is plain
log lines, so scripts and CI see stable output."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import TextIO

from broker.acme import AcmeEvent, EventKind

STEPS = {
    EventKind.AUTHORIZATION_PENDING: "pending",
    EventKind.PRESENTING: "presented",
    EventKind.PERSIST_GRANTED: "persist grant served",
    EventKind.PERSIST_UNAVAILABLE: "no dns-persist-01 offered: dns-01",
    EventKind.PROPAGATED: "propagated",
    EventKind.CHALLENGE_ANSWERED: "answered",
    EventKind.AUTHORIZATION_VALID: "valid",
    EventKind.AUTHORIZATION_INVALID: "INVALID",
}


class Terminal:
    def __init__(
        self,
        interactive: bool,
        out: TextIO | None = None,
        ask: Callable[[str], str] = input,
    ) -> None:
        self.interactive = interactive
        self.out = out or sys.stdout
        self._ask = ask

    @classmethod
    def of(cls, non_interactive: bool) -> Terminal:
        return cls(not non_interactive and sys.stdin.isatty() and sys.stdout.isatty())

    def say(self, text: str = "") -> None:
        print(text, file=self.out, flush=True)

    def ask(self, question: str, check: Callable[[str], str | None] = lambda _: None) -> str:
        """Ask until ``check`` finds nothing wrong with the answer (it returns why not)."""
        while True:
            answer = self._ask(question).strip()
            problem = check(answer)
            if problem is None:
                return answer
            self.say(f"  {problem}")

    def confirm(self, question: str, *, default: bool) -> bool:
        hint = "[Y/n]" if default else "[y/N]"

        def yes_or_no(answer: str) -> str | None:
            ok = answer.lower() in ("", "y", "yes", "n", "no")
            return None if ok else "answer y or n"

        answer = self.ask(f"{question} {hint} ", yes_or_no).lower()
        return default if answer == "" else answer.startswith("y")

    def choose(self, question: str, options: Sequence[str]) -> int:
        """The index of the option picked by its number."""
        for number, option in enumerate(options, 1):
            self.say(f"  {number:>2}) {option}")

        def in_range(answer: str) -> str | None:
            ok = answer.isdigit() and 1 <= int(answer) <= len(options)
            return None if ok else f"give a number from 1 to {len(options)}"

        return int(self.ask(f"{question} [1-{len(options)}] ", in_range)) - 1


class Progress:
    """The authorizations of one order, one line each (presented → propagated → valid,
    with the nameservers serving the value below it), redrawn in place on a terminal;
    elsewhere one plain line per event."""

    def __init__(self, terminal: Terminal) -> None:
        self._terminal = terminal
        self._steps: dict[str, list[str]] = {}
        self._served: dict[str, str] = {}
        self._drawn = 0

    def __call__(self, event: AcmeEvent) -> None:
        if not self._terminal.interactive:
            about = f" {event.domain}" if event.domain else ""
            detail = f": {event.detail}" if event.detail else ""
            self._terminal.say(f"  {event.kind.value}{about}{detail}")
            return
        step = STEPS.get(event.kind)
        if step is None or event.domain is None:
            return
        steps = self._steps.setdefault(event.domain, [])
        if not steps or steps[-1] != step:
            steps.append(step)
        if event.kind is EventKind.PROPAGATED and event.detail:
            self._served[event.domain] = event.detail
        self._redraw()

    def _redraw(self) -> None:
        out = self._terminal.out
        out.write("\x1b[F\x1b[2K" * self._drawn)
        width = max(len(domain) for domain in self._steps)
        lines = []
        for domain, steps in self._steps.items():
            lines.append(f"  {domain:<{width}}  {' → '.join(steps)}")
            if domain in self._served:
                lines.append(f"  {'':<{width}}    served by {self._served[domain]}")
        out.write("".join(f"{line}\n" for line in lines))
        out.flush()
        self._drawn = len(lines)
