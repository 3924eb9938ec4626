"""A real OpenSSH server on loopback that serves bare git repositories to one deploy key.

`sshd` runs as this (root) user with its own configuration, host key and authorized_keys in a
temporary directory; the key may only run `git-shell`, so it reads (and pushes) repositories and
nothing else. `scripts/test` installs openssh-server when it is missing.
"""

from __future__ import annotations

import getpass
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

SSHD = Path("/usr/sbin/sshd")


@dataclass(frozen=True)
class SshGitServer:
    port: int
    root: Path
    deploy_key: str  # OpenSSH private key allowed to read
    known_hosts: str  # the server's host key, as ssh-keyscan would print it

    def url_of(self, name: str) -> str:
        return f"ssh://{getpass.getuser()}@127.0.0.1:{self.port}{self.root}/{name}.git"


def new_key(path: Path) -> tuple[str, str]:
    """A fresh ed25519 key pair: (private key, public key line)."""
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "test", "-f", str(path)], check=True
    )
    return path.read_text(), path.with_suffix(".pub").read_text().strip()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def ssh_git_server(root: Path, work: Path) -> Iterator[SshGitServer]:
    """Serve the bare repositories under `root` over ssh (`work` holds sshd's files)."""
    if not SSHD.is_file():
        pytest.fail("sshd not found: run scripts/test (it installs openssh-server)", pytrace=False)
    work.mkdir(parents=True, exist_ok=True)
    _, host_public = new_key(work / "host_key")
    deploy_key, deploy_public = new_key(work / "deploy_key")
    (work / "authorized_keys").write_text(
        f'restrict,command="git-shell -c \\"$SSH_ORIGINAL_COMMAND\\"" {deploy_public}\n'
    )
    port = _free_port()
    (work / "sshd_config").write_text(
        "\n".join(
            [
                f"Port {port}",
                "ListenAddress 127.0.0.1",
                f"HostKey {work / 'host_key'}",
                f"PidFile {work / 'sshd.pid'}",
                f"AuthorizedKeysFile {work / 'authorized_keys'}",
                "StrictModes no",
                "UsePAM no",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "PermitRootLogin prohibit-password",
                "AllowTcpForwarding no",
                "X11Forwarding no",
                "",
            ]
        )
    )
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation directory
    log = (work / "sshd.log").open("wb")
    proc = subprocess.Popen(
        [str(SSHD), "-D", "-e", "-f", str(work / "sshd_config")], stdout=log, stderr=log
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"sshd exited: {(work / 'sshd.log').read_text()}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                    if s.recv(64).startswith(b"SSH-"):
                        break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        key_type, key_data = host_public.split()[:2]
        yield SshGitServer(port, root, deploy_key, f"[127.0.0.1]:{port} {key_type} {key_data}\n")
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()
