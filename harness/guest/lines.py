"""The line format the guest shell programs answer in: ``WORD key=value ... reason=TEXT``.

``reason`` and ``msg`` run to the end of the line (they have spaces); an ``error step=... file=...
msg=...`` line (``lib.sh``'s ``fail``) is a failure of the program itself. Pure.
"""

from __future__ import annotations

from harness.errors import GuestCommandError

#: Fields that run to the end of the line.
TEXT_FIELDS = ("reason", "msg")


def fields(rest: str) -> dict[str, str]:
    """``a=1 b=2 reason=words with spaces`` -> dict."""
    out: dict[str, str] = {}
    words = rest.split(" ")
    for i, w in enumerate(words):
        k, eq, v = w.partition("=")
        if not eq:
            continue
        if k in TEXT_FIELDS:
            out[k] = " ".join([v, *words[i + 1:]])
            break
        out[k] = v
    return out


def line(text: str, word: str, program: str) -> dict[str, str]:
    """The fields of the first ``word`` line of ``program``'s output.

    Raises GuestCommandError for an ``error`` line, or if there is no ``word`` line.
    """
    for ln in text.splitlines():
        head, _, rest = ln.strip().partition(" ")
        if head == "error":
            raise GuestCommandError(f"{program}: {rest}", detail=text[-2000:])
        if head == word:
            return fields(rest)
    raise GuestCommandError(f"{program}: no '{word}' line in its output", detail=text[-2000:])
