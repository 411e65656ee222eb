"""The key pair a VM's SSH login uses: one ed25519 pair per VM, written to its work directory.

Made with ``cryptography`` (paramiko's own dependency; ``paramiko.Ed25519Key`` cannot
generate keys). The public half goes to the guest on the kernel command line
(``harness.sshkey=``); the private half stays in the VM's work directory, mode 0600, so a
background VM can be reached again by ``harness ssh`` (:func:`load_keypair`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class KeyPair:
    """An ed25519 key pair on disk: ``private`` (OpenSSH PEM, 0600) and its public line."""

    private: Path
    public_line: str  # "ssh-ed25519 AAAA... comment"

    @property
    def public_body(self) -> str:
        """The base64 part of the public key (what ``harness.sshkey=`` carries)."""
        return self.public_line.split()[1]

    @property
    def public_type(self) -> str:
        """``ssh-ed25519``."""
        return self.public_line.split()[0]


def generate_keypair(directory: Path, name: str = "id_ed25519") -> KeyPair:
    """Write a fresh ed25519 key pair to ``directory/name`` and ``name.pub``."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                           serialization.PublicFormat.OpenSSH).decode()
    public_line = f"{public} numa-harness"
    path = directory / name
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(private)
    (directory / f"{name}.pub").write_text(public_line + "\n")
    return KeyPair(path, public_line)


def load_keypair(private: Path) -> KeyPair:
    """The key pair previously written by :func:`generate_keypair`."""
    pub = Path(str(private) + ".pub")
    return KeyPair(private, pub.read_text().strip())
