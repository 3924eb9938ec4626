"""Sources over ssh: a real OpenSSH server on loopback, a deploy key, strict host keys."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from app.gitops import git
from app.gitops.errors import SourceError
from tests.gitops.conftest import GitOps
from tests.support.git_server import GitServer
from tests.support.ssh_server import SshGitServer, new_key, ssh_git_server

pytestmark = pytest.mark.usefixtures("allow_local_network")

CM = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\ndata:\n  k: v\n"


@pytest.fixture
def ssh_repos(git_repos: GitServer, tmp_path: Path) -> Iterator[SshGitServer]:
    with ssh_git_server(git_repos.root, tmp_path / "sshd") as server:
        yield server


def _remote(server: SshGitServer, **fields: str) -> git.Remote:
    values = {"deploy_key": server.deploy_key, "known_hosts": server.known_hosts, **fields}
    return git.Remote(server.url_of("app"), None, values["deploy_key"], values["known_hosts"])


def test_a_deploy_key_reads_the_repository(
    git_repos: GitServer, ssh_repos: SshGitServer, tmp_path: Path
) -> None:
    work = git_repos.create("app", tmp_path / "work")
    work.write("k8s/a.yaml", CM)
    sha = work.commit_and_push()
    remote = _remote(ssh_repos)
    assert git.resolve_ref(remote, "refs/heads/main") == sha
    cached = git.fetch(remote, sha, "refs/heads/main")
    out = tmp_path / "checkout"
    git.checkout(cached, sha, ["k8s"], out)
    assert (out / "k8s" / "a.yaml").read_text() == CM


def test_a_wrong_key_or_host_key_is_coded(
    git_repos: GitServer, ssh_repos: SshGitServer, tmp_path: Path
) -> None:
    git_repos.create("app", tmp_path / "work").commit_and_push()
    stranger, _ = new_key(tmp_path / "stranger")
    with pytest.raises(SourceError) as info:
        git.resolve_ref(_remote(ssh_repos, deploy_key=stranger), "refs/heads/main")
    assert info.value.code == "git_auth_failed"
    _, other_host = new_key(tmp_path / "other_host")
    kind, data = other_host.split()[:2]
    with pytest.raises(SourceError) as info:
        git.resolve_ref(
            _remote(ssh_repos, known_hosts=f"[127.0.0.1]:{ssh_repos.port} {kind} {data}\n"),
            "refs/heads/main",
        )
    assert info.value.code == "git_host_key_mismatch"


async def test_api_takes_a_deploy_key_for_ssh_only(
    gitops: GitOps, ssh_repos: SshGitServer, git_repos: GitServer
) -> None:
    url = ssh_repos.url_of("app")
    sources = f"{gitops.base}/sources"

    async def refused(body: dict[str, object], code: str) -> None:
        response = await gitops.api.post(sources, {"name": "s", **body})
        assert response.status_code == 422, response.text
        assert response.json()["error"]["code"] == code, response.text
        assert ssh_repos.deploy_key.strip() not in response.text

    key, hosts = ssh_repos.deploy_key, ssh_repos.known_hosts
    await refused({"url": url, "known_hosts": hosts}, "deploy_key_required")
    await refused({"url": url, "deploy_key": key}, "known_hosts_required")
    await refused(
        {"url": url, "deploy_key": "not a key", "known_hosts": hosts}, "invalid_deploy_key"
    )
    await refused({"url": url, "deploy_key": key, "known_hosts": "garbage"}, "invalid_known_hosts")
    await refused(
        {"url": url, "deploy_key": key, "known_hosts": hosts, "token": "t"}, "token_not_for_ssh"
    )
    await refused(
        {"url": git_repos.url_of("app"), "deploy_key": key, "known_hosts": hosts},
        "deploy_key_needs_ssh",
    )
    created = await gitops.source(url, deploy_key=key, known_hosts=hosts)
    assert created["has_deploy_key"] is True and created["known_hosts"] == hosts
    assert "PRIVATE KEY" not in str(created)
    read = await gitops.api.get(f"{sources}/{created['id']}")
    assert "PRIVATE KEY" not in read.text
    # Moving the source to https drops the ssh credentials.
    moved = await gitops.api.request(
        "PATCH", f"{sources}/{created['id']}", json={"url": git_repos.url_of("app")}
    )
    assert moved.status_code == 200, moved.text
    assert moved.json()["has_deploy_key"] is False and moved.json()["known_hosts"] is None
    back = await gitops.api.request("PATCH", f"{sources}/{created['id']}", json={"url": url})
    assert back.status_code == 422 and back.json()["error"]["code"] == "deploy_key_required"
