"""Fetching manifests with the git CLI: the exact commit, shallow, into a bounded cache.

The URL passes the SSRF guard again at fetch time and git connects to the checked address
(`http.curloptResolve`, or ssh's `HostName`), follows no redirect, never prompts, and reads no
user or system config. A token travels in an HTTP header given through the environment, never on
the command line. Over ssh the deploy key and the known host keys are written to a private
temporary directory for the one command and removed after it; host keys are checked strictly.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import io
import os
import shlex
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import structlog

from app.core.settings import get_settings
from app.core.ssrf import UnsafeURLError, resolve_target
from app.gitops.errors import SourceError
from app.gitops.models import GitSource
from app.gitops.refs import is_pattern
from app.gitops.settings import GitOpsSettings, get_gitops_settings

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Remote:
    url: str
    token: str | None = None
    # ssh:// only: an OpenSSH private key and the server's host keys (known_hosts lines).
    deploy_key: str | None = None
    known_hosts: str | None = None

    @classmethod
    def of(cls, source: GitSource) -> Remote:
        """The remote of a source loaded with its deferred secrets (`SECRETS`)."""
        return cls(source.url, source.token, source.deploy_key, source.known_hosts)


# Load these with the source (`options(undefer(...))`) before `Remote.of`.
SECRETS = (GitSource.token, GitSource.deploy_key)


def cache_dir(settings: GitOpsSettings | None = None) -> Path:
    settings = settings or get_gitops_settings()
    return settings.cache_dir or (get_settings().data_dir / "git-cache")


def _classify(stderr: str) -> str:
    text = stderr.lower()
    if (
        "authentication failed" in text
        or "could not read username" in text
        or " 401" in text
        or " 403" in text
    ):
        return "git_auth_failed"
    if (
        "not our ref" in text
        or "couldn't find remote ref" in text
        or "no such remote ref" in text
        or "not a valid object" in text
        or "unadvertised object" in text
    ):
        return "commit_not_found"
    if "not found" in text and "repository" in text:
        return "repository_not_found"
    if "redirect" in text:
        return "git_redirect_refused"
    if "host key verification failed" in text or "no matching host key" in text:
        return "git_host_key_mismatch"
    if "permission denied (publickey" in text:
        return "git_auth_failed"
    return "git_unreachable"


_MESSAGES = {
    "git_auth_failed": "The git server refused the credentials.",
    "commit_not_found": "The git server does not have that commit or ref.",
    "repository_not_found": "The git server has no repository at that URL.",
    "git_redirect_refused": "The git server answered with a redirect, which is not followed.",
    "git_host_key_mismatch": "The git server's SSH host key is not one of the source's known "
    "hosts.",
    "git_unreachable": "The git server could not be reached.",
    "git_timeout": "The git server did not answer in time.",
}


def _error(code: str) -> SourceError:
    return SourceError(code, _MESSAGES[code])


@contextmanager
def _environment(remote: Remote) -> Iterator[dict[str, str]]:
    """git's environment: nothing from the user's or system's config, the pinned address,
    no redirects, no prompts, only http(s) or ssh, and the credential."""
    settings = get_settings()
    schemes = ("https", "http") if settings.allow_local_network else ("https",)
    if remote.deploy_key is not None:
        schemes = ("ssh",)
    try:
        target = resolve_target(
            remote.url, allow_local=settings.allow_local_network, allowed_schemes=schemes
        )
    except UnsafeURLError as exc:
        raise SourceError(exc.code, exc.message) from None
    config = [
        ("http.followRedirects", "false"),
        ("protocol.allow", "never"),
        ("core.askPass", ""),
        ("credential.helper", ""),
    ]
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": "/nonexistent",
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": "/dev/null",
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_ASKPASS": "/bin/false",
        "LC_ALL": "C",
    }
    with tempfile.TemporaryDirectory(prefix="clusterport-git-") as private:
        if target.scheme == "ssh":
            config.append(("protocol.ssh.allow", "always"))
            env["GIT_SSH_COMMAND"] = _ssh_command(Path(private), remote, target.address)
            env["GIT_SSH_VARIANT"] = "ssh"
        else:
            config.append(("protocol.https.allow", "always"))
            config.append(("http.curloptResolve", f"{target.host}:{target.port}:{target.address}"))
            if target.scheme == "http":
                config.append(("protocol.http.allow", "always"))
            if remote.token:
                basic = base64.b64encode(f"x-access-token:{remote.token}".encode()).decode()
                config.append(("http.extraHeader", f"Authorization: Basic {basic}"))
        env["GIT_CONFIG_COUNT"] = str(len(config))
        for index, (key, value) in enumerate(config):
            env[f"GIT_CONFIG_KEY_{index}"] = key
            env[f"GIT_CONFIG_VALUE_{index}"] = value
        yield env


def _ssh_command(private: Path, remote: Remote, address: str) -> str:
    """ssh with only the deploy key, only the source's known hosts (strict), no config files,
    no agent, no forwarding, connecting to the address the SSRF guard checked."""
    key, hosts = private / "deploy_key", private / "known_hosts"
    key.touch(mode=0o600)
    key.write_text((remote.deploy_key or "").strip() + "\n")
    hosts.write_text((remote.known_hosts or "").strip() + "\n")
    timeout = max(1, int(get_gitops_settings().command_timeout))
    options = [
        "-F", "/dev/null",
        "-i", str(key),
        "-o", "IdentitiesOnly=yes",
        "-o", "IdentityAgent=none",
        "-o", f"UserKnownHostsFile={hosts}",
        "-o", "GlobalKnownHostsFile=/dev/null",
        "-o", "StrictHostKeyChecking=yes",
        "-o", "UpdateHostKeys=no",
        "-o", "BatchMode=yes",
        "-o", f"HostName={address}",
        "-o", f"ConnectTimeout={timeout}",
        "-o", "ProxyCommand=none",
        "-o", "PermitLocalCommand=no",
        "-o", "ClearAllForwardings=yes",
    ]  # fmt: skip
    return shlex.join(["ssh", *options])


def _git(
    args: list[str], *, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[bytes]:
    settings = get_gitops_settings()
    try:
        return subprocess.run(  # noqa: S603 - fixed binary, argument list
            [settings.git, *args],
            env=env
            if env is not None
            else {
                "PATH": os.environ.get("PATH", ""),
                "LC_ALL": "C",
                "GIT_CONFIG_NOSYSTEM": "1",
                "GIT_CONFIG_GLOBAL": "/dev/null",
                "HOME": "/nonexistent",
            },
            cwd=cwd,
            capture_output=True,
            timeout=settings.command_timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise _error("git_timeout") from None


def resolve_ref(remote: Remote, ref: str) -> str:
    """The commit a ref points at now (`git ls-remote`). A tag pattern is not resolved."""
    if is_pattern(ref):
        raise SourceError("revision_required", "A tag pattern needs an explicit revision.")
    with _environment(remote) as env:
        proc = _git(["ls-remote", "--", remote.url, ref], env=env)
    if proc.returncode != 0:
        raise _error(_classify(proc.stderr.decode(errors="replace")))
    for line in proc.stdout.decode().splitlines():
        sha, _, name = line.partition("\t")
        if name == ref:
            return sha
    raise _error("commit_not_found")


def _repo_dir(url: str) -> Path:
    return cache_dir() / hashlib.sha256(url.encode()).hexdigest()[:32]


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{path}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _bound_cache(keep: Path) -> None:
    """Drop the least recently used repositories while the cache is over its bound."""
    limit = get_gitops_settings().cache_max_bytes
    root = cache_dir()
    repos = sorted((p for p in root.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime)
    total = sum(_size(p) for p in repos)
    for repo in repos:
        if total <= limit:
            break
        if repo == keep:
            continue
        with _locked(repo):
            size = _size(repo)
            shutil.rmtree(repo, ignore_errors=True)
        total -= size


def _has_commit(repo: Path, commit: str) -> bool:
    return _git(["--git-dir", str(repo), "cat-file", "-e", f"{commit}^{{commit}}"]).returncode == 0


def fetch(remote: Remote, commit: str, ref: str | None = None) -> Path:
    """Make `commit` available in the cache (a shallow fetch of exactly it; servers that refuse
    a commit id are asked for `ref` instead). Returns the bare repository."""
    repo = _repo_dir(remote.url)
    with _locked(repo):
        if not (repo / "HEAD").exists():
            shutil.rmtree(repo, ignore_errors=True)
            init = _git(["init", "--bare", "-q", str(repo)])
            if init.returncode != 0:
                raise SourceError("cache_error", "The git cache could not be written.")
        if not _has_commit(repo, commit):
            base = ["--git-dir", str(repo), "fetch", "-q", "--depth", "1", "--no-tags", "--"]
            with _environment(remote) as env:
                proc = _git([*base, remote.url, commit], env=env)
                if proc.returncode != 0 and ref is not None and not is_pattern(ref):
                    proc = _git([*base, remote.url, ref], env=env)
            if proc.returncode != 0:
                raise _error(_classify(proc.stderr.decode(errors="replace")))
            if not _has_commit(repo, commit):
                raise _error("commit_not_found")
        os.utime(repo)
    _bound_cache(repo)
    return repo


def checkout(repo: Path, commit: str, paths: list[str], into: Path) -> None:
    """Write `paths` of `commit` into `into`, refusing input over the limits (per file, total,
    count) before anything is written."""
    settings = get_gitops_settings()
    listing = _git(["--git-dir", str(repo), "ls-tree", "-r", "-l", "-z", commit, "--", *paths])
    if listing.returncode != 0:
        raise _error("commit_not_found")
    count = total = 0
    found = False
    for entry in listing.stdout.split(b"\0"):
        if not entry:
            continue
        meta, _, name = entry.partition(b"\t")
        kind, size = meta.split()[1], meta.split()[3]
        if kind != b"blob":
            continue
        found = True
        count += 1
        file_size = int(size)
        total += file_size
        path = name.decode(errors="replace")
        if file_size > settings.max_file_bytes:
            raise SourceError(
                "file_too_large",
                f"{path}: {file_size} bytes, more than the limit of {settings.max_file_bytes}",
            )
        if count > settings.max_files:
            raise SourceError(
                "too_many_files", f"more than {settings.max_files} files under the paths"
            )
        if total > settings.max_total_bytes:
            raise SourceError(
                "repository_too_large",
                f"more than {settings.max_total_bytes} bytes under the paths",
            )
    if not found:
        raise SourceError("path_not_found", "No file at the source's paths in this commit.")
    archive = _git(["--git-dir", str(repo), "archive", "--format=tar", commit, "--", *paths])
    if archive.returncode != 0:
        raise SourceError("cache_error", "The commit could not be read from the git cache.")
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(into, filter="data")


def read_file(repo: Path, commit: str, path: str) -> str | None:
    """The text of one file at `commit` (None when there is none), refused over the file size
    limit before it is read."""
    settings = get_gitops_settings()
    spec = f"{commit}:{path}"
    size = _git(["--git-dir", str(repo), "cat-file", "-s", spec])
    if size.returncode != 0:
        if not _has_commit(repo, commit):
            raise _error("commit_not_found")
        return None
    file_size = int(size.stdout.decode().strip() or 0)
    if file_size > settings.max_file_bytes:
        raise SourceError(
            "file_too_large",
            f"{path}: {file_size} bytes, more than the limit of {settings.max_file_bytes}",
        )
    blob = _git(["--git-dir", str(repo), "cat-file", "blob", spec])
    if blob.returncode != 0:
        raise SourceError("cache_error", "The commit could not be read from the git cache.")
    return blob.stdout.decode(errors="replace")
