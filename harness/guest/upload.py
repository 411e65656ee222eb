"""Copying bytes into the guest over the command channel: base64 chunks, rebuilt and checked there.

The guest has no file transfer of its own (no scp in the image, no shared folder): a file is
sent as shell commands that append base64 chunks and decode them, and the guest's ``md5sum`` of
the result is compared with the host's. :func:`upload_commands` plans the commands (pure);
:func:`upload` runs them on anything with ``run`` and raises if a step fails or the bytes differ.
The selftest and KUnit runs and the private-node module provisioning all copy files this way.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable

from harness.errors import GuestCommandError
from harness.runner import GuestRunner

#: Base64 characters per SSH command: well under what dropbear takes on one command line.
CHUNK = 6000


def upload_commands(data: bytes, dest: str, chunk: int = CHUNK) -> list[str]:
    """Shell commands that rebuild ``data`` at ``dest`` from base64 chunks (the last prints its md5)."""
    text = base64.b64encode(data).decode()
    cmds = [f"rm -f {dest}.b64"]
    cmds += [f"printf %s {text[i:i + chunk]} >> {dest}.b64" for i in range(0, len(text), chunk)]
    cmds.append(f"base64 -d {dest}.b64 > {dest} && rm -f {dest}.b64 && md5sum {dest}")
    return cmds


def upload(guest: GuestRunner, data: bytes, dest: str, what: str,
           say: Callable[[int, int], None] | None = None) -> None:
    """Write ``data`` to ``dest`` in the guest (its directory must exist). ``what`` names it in errors;
    ``say(done, total)`` is called every 20 commands, for progress.

    Raises GuestCommandError if a command fails or the guest's copy is not the same bytes."""
    cmds = upload_commands(data, dest)
    out = ""
    for i, cmd in enumerate(cmds):
        if say and i % 20 == 0:
            say(i, len(cmds))
        r = guest.run(cmd, timeout=60, check=False)
        if r.exit_status != 0:
            raise GuestCommandError(f"copying {what} into the guest failed: {r.stderr.strip() or r.stdout.strip()}")
        out = r.stdout
    want = hashlib.md5(data).hexdigest()
    if not out.startswith(want):
        raise GuestCommandError(f"{what} arrived corrupted in the guest (md5 {out.split()[:1]} != {want})")
