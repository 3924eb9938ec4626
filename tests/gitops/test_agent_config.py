"""An agent's environments declared in `.clusterport/agents/<name>/config.yaml` of a GitOps
source: read when the source is named and on every push; a bad file keeps the last good
configuration and is reported with its line; a fixed push recovers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.agents.conftest import processes, tls  # noqa: F401 (fixtures of `via_agent`)
from tests.gitops.conftest import FINISHED, SECRET, GitOps, config_map
from tests.gitops.webhooks import github_push
from tests.kube.conftest import via_agent  # noqa: F401 (a real agent server and agent)
from tests.kube.helpers import Reach, wait_for
from tests.support.git_server import GitServer, WorkingCopy
from tests.support.kubeapi import KubeCluster, unique_name


async def _agent(gitops: GitOps, agent_id: int) -> dict[str, Any]:
    response = await gitops.api.get(f"{gitops.project.base}/agents/{agent_id}")
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()
    return data


async def _environments(gitops: GitOps) -> dict[str, dict[str, Any]]:
    response = await gitops.api.get(f"{gitops.base}/environments", params={"limit": 100})
    assert response.status_code == 200, response.text
    return {e["name"]: e for e in response.json()["items"]}


async def _push(gitops: GitOps, repo: WorkingCopy, source: dict[str, Any]) -> str:
    sha = repo.commit_and_push()
    headers, body = github_push(SECRET, "refs/heads/main", sha)
    response = await gitops.hook(source, headers, body)
    assert response.status_code == 202, response.text
    return sha


async def _deployed(gitops: GitOps, environment_id: int, commit: str) -> dict[str, Any]:
    async def finished() -> dict[str, Any] | None:
        for item in reversed(await gitops.deployments(environment_id)):
            if item["commit_sha"] == commit and item["status"] in FINISHED:
                found: dict[str, Any] = item
                return found
        return None

    result: dict[str, Any] = await wait_for(finished, lambda d: d is not None, f"deploy {commit}")
    return result


def _config(*environments: str) -> str:
    return "environments:\n" + "".join(environments)


def _env(name: str, namespace: str, extra: str = "") -> str:
    return f"  - name: {name}\n    namespace: {namespace}\n    health_timeout_seconds: 60\n{extra}"


@pytest.mark.usefixtures("allow_local_network", "worker")
async def test_an_agent_configuration_file_declares_its_environments(
    gitops: GitOps,
    git_repos: GitServer,
    kube_cluster: KubeCluster,
    tmp_path: Path,
    via_agent: Reach,  # noqa: F811 (the fixture imported above)
) -> None:
    gitops.project.reach = via_agent
    cluster = await gitops.project.connected_cluster(kube_cluster)
    agent_id = cluster["agent"]["id"]
    agent = await _agent(gitops, agent_id)
    assert agent["config_source_id"] is None and agent["config"] is None
    first_ns, second_ns = unique_name("cfg"), unique_name("cfg")
    for ns in (first_ns, second_ns):
        kube_cluster.kubectl("create", "namespace", ns)
    path = f".clusterport/agents/{agent['name']}/config.yaml"
    web, api = unique_name("web"), unique_name("api")

    repo = git_repos.create(unique_name("cfg"), tmp_path)
    repo.write("k8s/cm.yaml", config_map("configured", "one"))
    repo.write(path, _config(_env(web, first_ns, "    self_heal: true\n")))
    good = repo.commit_and_push()
    source = await gitops.source(
        git_repos.url_of(repo.path.name),
        webhook_secret=SECRET,
        paths=["k8s"],
        poll_interval_seconds=0,
    )

    # Naming the source reads the file at once; the environment it declares deploys.
    named = await gitops.api.patch(
        f"{gitops.project.base}/agents/{agent_id}", {"config_source_id": source["id"]}
    )
    assert named.status_code == 200, named.text
    assert named.json()["config"]["status"] == "pending"
    agent = await wait_for(
        lambda: _agent(gitops, agent_id),
        lambda a: a["config"]["status"] != "pending",
        "the configuration to be read",
    )
    assert agent["config"] == {
        "status": "applied",
        "commit": good,
        "checked_at": agent["config"]["checked_at"],
        "error": None,
    }
    env = (await _environments(gitops))[web]
    assert (env["cluster_id"], env["namespace"], env["source_id"]) == (
        cluster["id"],
        first_ns,
        source["id"],
    )
    assert env["configured_by_agent_id"] == agent_id
    assert env["self_heal"] is True and env["health_timeout_seconds"] == 60
    assert (await _deployed(gitops, env["id"], good))["status"] == "succeeded"
    live = kube_cluster.kubectl_json("get", "configmap", "configured", "-n", first_ns)
    assert live["data"]["key"] == "one"

    # A bad file: the last good configuration stays, the error names its line.
    repo.write("k8s/cm.yaml", config_map("configured", "two"))
    repo.write(path, _config(_env(web, first_ns, "    self_heal: false\n    prune: maybe\n")))
    bad = await _push(gitops, repo, source)
    agent = await wait_for(
        lambda: _agent(gitops, agent_id),
        lambda a: a["config"]["status"] == "invalid",
        "the bad file to be reported",
    )
    error = agent["config"]["error"]
    assert agent["config"]["commit"] == good
    assert error["code"] == "invalid_config" and error["line"] == 6 and error["commit"] == bad
    assert error["message"].startswith(f"{path}:6: environments.0.prune: ")
    assert (await _environments(gitops))[web]["self_heal"] is True  # unchanged
    # The push itself still deploys the manifests with the configuration in effect.
    assert (await _deployed(gitops, env["id"], bad))["status"] == "succeeded"

    # Malformed YAML: its own line.
    repo.write(path, "environments:\n  - name: [oops\n")
    broken = await _push(gitops, repo, source)
    agent = await wait_for(
        lambda: _agent(gitops, agent_id),
        lambda a: (a["config"]["error"] or {}).get("commit") == broken,
        "the malformed file to be reported",
    )
    assert agent["config"]["status"] == "invalid" and agent["config"]["commit"] == good
    assert agent["config"]["error"]["code"] == "malformed_yaml"
    assert agent["config"]["error"]["line"] == 3
    assert (await _deployed(gitops, env["id"], broken))["status"] == "succeeded"

    # Fixed: a new environment is created, the one no longer declared is disabled.
    repo.write("k8s/cm.yaml", config_map("configured", "three"))
    repo.write(path, _config(_env(api, second_ns)))
    fixed = await _push(gitops, repo, source)
    agent = await wait_for(
        lambda: _agent(gitops, agent_id),
        lambda a: a["config"]["commit"] == fixed,
        "the fixed file to be applied",
    )
    assert agent["config"]["status"] == "applied" and agent["config"]["error"] is None
    environments = await _environments(gitops)
    assert environments[web]["auto_sync"] is False and environments[web]["self_heal"] is False
    created = environments[api]
    assert created["configured_by_agent_id"] == agent_id and created["namespace"] == second_ns
    assert (await _deployed(gitops, created["id"], fixed))["status"] == "succeeded"
    live = kube_cluster.kubectl_json("get", "configmap", "configured", "-n", second_ns)
    assert live["data"]["key"] == "three"
    # The disabled environment did not deploy the fixed push.
    assert all(d["commit_sha"] != fixed for d in await gitops.deployments(env["id"]))

    events = await gitops.api.get(f"{gitops.project.base}/audit-events", params={"limit": 100})
    assert events.status_code == 200, events.text
    actions = [(e["action"], e["details"].get("commit")) for e in events.json()["items"]]
    assert ("agent_config.apply", good) in actions
    assert ("agent_config.reject", bad) in actions
    assert ("agent_config.reject", broken) in actions
    assert ("agent_config.apply", fixed) in actions


@pytest.mark.usefixtures("allow_local_network")
async def test_configuration_source_rules(gitops: GitOps, git_repos: GitServer) -> None:
    base = gitops.project.base
    agent_id, _token = await gitops.project.add_agent()
    missing = await gitops.api.patch(f"{base}/agents/{agent_id}", {"config_source_id": 999999})
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "source_not_found"

    source = await gitops.source(git_repos.url_of("app"), webhook_secret=SECRET)
    named = await gitops.api.patch(f"{base}/agents/{agent_id}", {"config_source_id": source["id"]})
    assert named.status_code == 200, named.text
    assert named.json()["config_source_id"] == source["id"]
    in_use = await gitops.api.delete(f"{gitops.base}/sources/{source['id']}")
    assert in_use.status_code == 409 and in_use.json()["error"]["code"] == "source_in_use"

    cleared = await gitops.api.patch(f"{base}/agents/{agent_id}", {"config_source_id": None})
    assert cleared.status_code == 200, cleared.text
    assert cleared.json()["config_source_id"] is None and cleared.json()["config"] is None
    assert (await gitops.api.delete(f"{gitops.base}/sources/{source['id']}")).status_code == 204

    created = await gitops.api.post(
        "/api/v1/agents", {"name": unique_name("i"), "config_source_id": 1}
    )
    assert created.status_code == 400
    assert created.json()["error"]["code"] == "config_source_needs_project"


@pytest.mark.parametrize(
    ("text", "code", "line", "where"),
    [
        ("environments:\n  - name: [oops\n", "malformed_yaml", 3, ""),
        ("environments:\n  - name: a\n", "invalid_config", 2, "environments.0.namespace"),
        ("environments: []\nextra: 1\n", "invalid_config", 2, "extra"),
        (
            "environments:\n  - name: a\n    namespace: b\n"
            "  - name: c\n    namespace: d\n    max_prune_share: 2\n",
            "invalid_config",
            6,
            "environments.1.max_prune_share",
        ),
        (
            "environments:\n  - {name: a, namespace: b}\n  - name: a\n    namespace: c\n",
            "duplicate_environment",
            3,
            "environments.1.name",
        ),
    ],
)
def test_a_bad_file_is_reported_with_its_line(text: str, code: str, line: int, where: str) -> None:
    from app.gitops.agent_config import ConfigError, parse

    with pytest.raises(ConfigError) as caught:
        parse("c.yaml", text)
    assert (caught.value.code, caught.value.line) == (code, line)
    assert caught.value.message.startswith(f"c.yaml:{line}: {where}")


def test_an_empty_file_declares_no_environment() -> None:
    from app.gitops.agent_config import parse

    assert parse("c.yaml", "").config.environments == []
    parsed = parse("c.yaml", "environments:\n  - {name: a, namespace: b, self_heal: true}\n")
    assert [(e.name, e.namespace, e.self_heal) for e in parsed.config.environments] == [
        ("a", "b", True)
    ]


@pytest.mark.usefixtures("allow_local_network", "worker")
async def test_a_missing_file_or_a_missing_cluster_is_reported_and_changes_nothing(
    gitops: GitOps, git_repos: GitServer, tmp_path: Path
) -> None:
    agent_id, _token = await gitops.project.add_agent()
    name = (await _agent(gitops, agent_id))["name"]
    repo = git_repos.create(unique_name("cfg"), tmp_path)
    repo.write("k8s/cm.yaml", config_map("x"))
    missing = repo.commit_and_push()
    source = await gitops.source(
        git_repos.url_of(repo.path.name), webhook_secret=SECRET, poll_interval_seconds=0
    )
    named = await gitops.api.patch(
        f"{gitops.project.base}/agents/{agent_id}", {"config_source_id": source["id"]}
    )
    assert named.status_code == 200, named.text
    agent = await wait_for(
        lambda: _agent(gitops, agent_id),
        lambda a: a["config"]["status"] != "pending",
        "the configuration to be read",
    )
    assert agent["config"]["status"] == "invalid" and agent["config"]["commit"] is None
    assert agent["config"]["error"]["code"] == "config_not_found"
    assert agent["config"]["error"]["commit"] == missing

    # The agent reaches no cluster of the project: nothing to deploy to.
    repo.write(f".clusterport/agents/{name}/config.yaml", _config(_env("web", "web")))
    declared = await _push(gitops, repo, source)
    agent = await wait_for(
        lambda: _agent(gitops, agent_id),
        lambda a: a["config"]["error"]["commit"] == declared,
        "the pushed file to be read",
    )
    assert agent["config"]["status"] == "invalid"
    assert agent["config"]["error"]["code"] == "agent_has_no_cluster"
    assert agent["config"]["error"]["line"] == 2
    assert await _environments(gitops) == {}
