"""Fetching exact commits with the git CLI from a loopback server, the input limits, and
rendering plain YAML, Kustomize (`kubectl kustomize`) and Helm (`helm template`)."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.gitops import git
from app.gitops.errors import SourceError
from app.gitops.models import RenderMode
from app.gitops.render import RenderSpec, render
from app.gitops.settings import get_gitops_settings
from tests.support.git_server import GitServer, WorkingCopy, git_server

pytestmark = pytest.mark.usefixtures("allow_local_network")

CM = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\ndata:\n  k: v\n"


@pytest.fixture
def repo(git_repos: GitServer, tmp_path: Path) -> WorkingCopy:
    return git_repos.create("app", tmp_path / "work")


def _render(
    repo_server: GitServer, sha: str, tmp_path: Path, spec: RenderSpec, token: str | None = None
) -> list[dict[str, object]]:
    remote = git.Remote(repo_server.url_of("app"), token)
    cached = git.fetch(remote, sha, "refs/heads/main")
    out = Path(tempfile.mkdtemp(dir=tmp_path, prefix="checkout-"))
    git.checkout(cached, sha, spec.checkout_paths, out)
    return render(out, spec)


def _plain(*paths: str) -> RenderSpec:
    return RenderSpec(RenderMode.plain, list(paths), namespace="shop", release="web")


def test_an_older_commit_is_fetched_exactly_and_the_cache_is_reused(
    git_repos: GitServer, repo: WorkingCopy, tmp_path: Path
) -> None:
    repo.write("k8s/a.yaml", CM.format(name="a"))
    old = repo.commit_and_push()
    repo.write("k8s/b.yaml", CM.format(name="b"))
    new = repo.commit_and_push()
    assert git.resolve_ref(git.Remote(git_repos.url_of("app")), "refs/heads/main") == new
    objects = _render(git_repos, old, tmp_path, _plain("k8s"))
    assert [o["metadata"]["name"] for o in objects] == ["a"]  # type: ignore[index]
    before = git_repos.requests
    _render(
        git_repos,
        old,
        tmp_path,
        _plain("k8s"),
    )
    assert git_repos.requests == before  # already in the cache: no request to the server


def test_tokens_unknown_commits_and_unreachable_servers_are_coded(tmp_path: Path) -> None:
    root = tmp_path / "private"
    root.mkdir()
    with git_server(root, token="s3cret-token") as server:
        work = server.create("app", tmp_path / "w")
        work.write("a.yaml", CM.format(name="a"))
        sha = work.commit_and_push()
        assert git.fetch(git.Remote(server.url_of("app"), "s3cret-token"), sha).is_dir()
        with pytest.raises(SourceError) as info:
            git.fetch(git.Remote(server.url_of("app"), "wrong"), "f" * 40)
        assert info.value.code == "git_auth_failed"
        with pytest.raises(SourceError) as info:
            git.fetch(git.Remote(server.url_of("app"), "s3cret-token"), "f" * 40)
        assert info.value.code == "commit_not_found"
        port = server.port
    with pytest.raises(SourceError) as info:
        git.fetch(git.Remote(f"http://127.0.0.1:{port}/app.git"), "e" * 40)
    assert info.value.code == "git_unreachable"


@pytest.fixture
def small_limits() -> Iterator[None]:
    settings = get_gitops_settings()
    saved = (settings.max_file_bytes, settings.max_total_bytes, settings.max_files)
    settings.max_file_bytes, settings.max_total_bytes, settings.max_files = 1000, 2500, 5
    yield
    settings.max_file_bytes, settings.max_total_bytes, settings.max_files = saved


@pytest.mark.usefixtures("small_limits")
@pytest.mark.parametrize(
    ("files", "code"),
    [
        ({"k8s/big.yaml": "x" * 1001}, "file_too_large"),
        ({f"k8s/{i}.yaml": "a: 1\n" for i in range(6)}, "too_many_files"),
        ({f"k8s/{i}.yaml": "y" * 900 for i in range(3)}, "repository_too_large"),
        ({"other/a.yaml": "a: 1\n"}, "path_not_found"),
    ],
)
def test_limits_are_coded_errors(
    git_repos: GitServer, repo: WorkingCopy, tmp_path: Path, files: dict[str, str], code: str
) -> None:
    for path, text in files.items():
        repo.write(path, text)
    sha = repo.commit_and_push()
    with pytest.raises(SourceError) as info:
        _render(git_repos, sha, tmp_path, _plain("k8s"))
    assert info.value.code == code


def test_kustomize_renders_with_the_real_binary(
    git_repos: GitServer, repo: WorkingCopy, tmp_path: Path
) -> None:
    repo.write("base/cm.yaml", CM.format(name="settings"))
    repo.write("base/kustomization.yaml", "resources:\n- cm.yaml\n")
    repo.write(
        "overlays/prod/kustomization.yaml",
        "resources:\n- ../../base\nnamePrefix: prod-\ncommonLabels:\n  tier: web\n",
    )
    sha = repo.commit_and_push()
    spec = RenderSpec(
        RenderMode.kustomize, ["overlays/prod", "base"], namespace="shop", release="w"
    )
    objects = _render(git_repos, sha, tmp_path, spec)
    assert objects[0]["metadata"] == {"name": "prod-settings", "labels": {"tier": "web"}}

    repo.write("overlays/prod/kustomization.yaml", "resources:\n- ../missing\n")
    broken = repo.commit_and_push()
    with pytest.raises(SourceError) as info:
        _render(
            git_repos,
            broken,
            tmp_path,
            spec,
        )
    assert info.value.code == "render_failed"
    assert str(tmp_path) not in info.value.message


def test_helm_template_renders_a_chart_with_a_values_file(
    git_repos: GitServer, repo: WorkingCopy, tmp_path: Path
) -> None:
    repo.write("chart/Chart.yaml", "apiVersion: v2\nname: web\nversion: 0.1.0\n")
    repo.write("chart/values.yaml", "greeting: hello\n")
    repo.write(
        "chart/templates/cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-cm\n"
        "  namespace: {{ .Release.Namespace }}\ndata:\n  greeting: {{ .Values.greeting }}\n",
    )
    repo.write("values/prod.yaml", "greeting: bonjour\n")
    sha = repo.commit_and_push()
    spec = RenderSpec(
        RenderMode.helm,
        ["chart", "values"],
        namespace="shop",
        release="web",
        helm_values_file="values/prod.yaml",
    )
    spec = RenderSpec(spec.mode, ["chart"], spec.namespace, spec.release, spec.helm_values_file)
    objects = _render(git_repos, sha, tmp_path, spec)
    assert objects == [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "web-cm", "namespace": "shop"},
            "data": {"greeting": "bonjour"},
        }
    ]


def test_malformed_yaml_in_a_checkout_names_the_repository_file_and_line(
    git_repos: GitServer, repo: WorkingCopy, tmp_path: Path
) -> None:
    repo.write("k8s/ok.yaml", CM.format(name="a"))
    repo.write("k8s/sub/bad.yml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: [x\n")
    sha = repo.commit_and_push()
    with pytest.raises(SourceError) as info:
        _render(git_repos, sha, tmp_path, _plain("k8s"))
    assert info.value.code == "malformed_yaml"
    assert info.value.message.startswith("k8s/sub/bad.yml:")
