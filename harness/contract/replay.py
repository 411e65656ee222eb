"""A contract run's guest conversation, recorded and replayed.

:class:`Recording` wraps a guest: every command :func:`~harness.contract.run.run_contract` sends and
what the guest kernel answered (stdout, stderr, exit status) is kept, in order, and saved as JSON.
:class:`Replay` is a guest made from such a file: it answers each command with the recorded
answer, so the whole contract run (targets from the node masks, every parser, every verdict)
runs again on a real kernel's output without booting it. That is how the verdicts on a kernel
the CI cannot build (the private-node series) are tested in every unit-test run.

Commands are matched in recorded order, by their text with every number replaced (file counters
and pids differ between runs); a command the recording does not have is an error naming it.
"""

from __future__ import annotations

import gzip
import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from harness.errors import CommandFailed, GuestCommandError


@dataclass
class Answer:
    command: str
    exit_status: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.exit_status == 0


def _key(command: str) -> str:
    return re.sub(r"\d+", "N", command)


class Recording:
    """A guest that passes every command to ``guest`` and keeps what it answered."""

    def __init__(self, guest: Any):
        self.guest = guest
        self.answers: list[Answer] = []

    def run(self, command: str, *, timeout: float = 600, check: bool = True) -> Any:
        r = self.guest.run(command, timeout=timeout, check=check)
        self.answers.append(Answer(command, r.exit_status, r.stdout, r.stderr))
        return r

    def to_json(self, **about: Any) -> dict[str, Any]:
        return {**about, "answers": [asdict(a) for a in self.answers]}

    def save(self, path: Path, **about: Any) -> None:
        """JSON at ``path``, gzip-compressed when it ends in ``.gz``."""
        text = json.dumps(self.to_json(**about), indent=1) + "\n"
        if path.suffix == ".gz":
            path.write_bytes(gzip.compress(text.encode(), mtime=0))
        else:
            path.write_text(text)


class Replay:
    """A guest answering from a recording (:meth:`Recording.save`).

    Answers are taken in recorded order: the next recorded command must match (numbers aside).
    A command asked again right after its last answer when the recording moved on (a polling loop
    that, on a faster clock, polls more often than it did live) gets that answer again; a command
    recorded later (a poll made fewer times) skips ahead to it."""

    def __init__(self, data: dict[str, Any]):
        self.about = {k: v for k, v in data.items() if k != "answers"}
        self._answers = [Answer(**a) for a in data["answers"]]
        self._keys = [_key(a.command) for a in self._answers]
        self._next = 0
        self._last: Answer | None = None

    @classmethod
    def load(cls, path: Path) -> Replay:
        raw = Path(path).read_bytes()
        return cls(json.loads(gzip.decompress(raw) if path.suffix == ".gz" else raw))

    def _find(self, key: str) -> Answer | None:
        if self._next < len(self._keys) and self._keys[self._next] == key:
            self._next += 1
            return self._answers[self._next - 1]
        if self._last is not None and _key(self._last.command) == key:
            return self._last
        for j in range(self._next, len(self._keys)):
            if self._keys[j] == key:
                self._next = j + 1
                return self._answers[j]
        return None

    def run(self, command: str, *, timeout: float = 600, check: bool = True) -> Answer:
        a = self._find(_key(command))
        if a is None:
            raise GuestCommandError(f"the recording has no answer to: {command[:200]}")
        self._last = a
        if check and a.exit_status != 0:
            raise CommandFailed(f"recorded command failed ({a.exit_status}): {command[:200]}", a, detail=a.stderr)
        return a
