"""An agent's configuration file: `.clusterport/agents/<agent name>/config.yaml` in the GitOps
source the agent names declares the agent's environments. It is read again on every push to
that source; a good file is applied (environments created, updated, and those no longer
declared disabled), a bad one keeps the last good configuration and is reported with its line.

Environments the file stops declaring are disabled, not deleted: automatic sync and self-heal
are turned off, their deployment history and their objects in the cluster stay, and declaring
them again turns them back on. Deleting one is a deliberate API call.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.agents.models import Agent
from app.audit.service import record_audit
from app.clusters.models import Cluster
from app.core.db import utcnow
from app.core.validation import DNSLabel
from app.gitops import queue
from app.gitops.errors import SourceError
from app.gitops.models import GitOpsEnvironment, GitSource, Trigger
from app.gitops.schemas import EnvironmentSettings


class ConfigStatus:
    pending = "pending"  # named, not read yet
    applied = "applied"  # the file at `config_commit` is in effect
    invalid = "invalid"  # the last read file is wrong; the last good one stays in effect
    unreadable = "unreadable"  # the source could not be read; the last good one stays


def config_path(agent_name: str) -> str:
    return f".clusterport/agents/{agent_name}/config.yaml"


class AgentEnvironmentConfig(EnvironmentSettings):
    """One environment of the file: the API's environment create body, with the source and
    cluster named instead of given by id."""

    source: DNSLabel | None = Field(
        default=None,
        description="A GitOps source of the project, by name; the configuration's own source "
        "when omitted.",
    )
    cluster: DNSLabel | None = Field(
        default=None,
        description="One of the clusters reached through this agent, by name; needed only when "
        "the agent reaches more than one.",
    )


class AgentConfigFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    environments: list[AgentEnvironmentConfig] = Field(default_factory=list, max_length=100)


class ConfigError(Exception):
    def __init__(self, code: str, message: str, line: int | None) -> None:
        self.code, self.message, self.line = code, message, line
        super().__init__(f"{code}: {message}")


def _line_of(root: yaml.Node | None, loc: Sequence[int | str]) -> int:
    """The line (1-based) of the value at `loc` in the document, or of the nearest enclosing
    value that exists (a missing field points at its mapping)."""
    if root is None:
        return 1
    node: yaml.Node = root
    line = node.start_mark.line + 1
    for key in loc:
        found: yaml.Node | None = None
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                if isinstance(key_node, yaml.ScalarNode) and key_node.value == str(key):
                    found, line = value_node, key_node.start_mark.line + 1
                    break
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int):
            if 0 <= key < len(node.value):
                found = node.value[key]
                line = found.start_mark.line + 1
        if found is None:
            break
        node = found
    return line


@dataclass(frozen=True)
class Parsed:
    config: AgentConfigFile
    root: yaml.Node | None

    def error(self, code: str, path: str, loc: Sequence[int | str], problem: str) -> ConfigError:
        line = _line_of(self.root, loc)
        where = ".".join(str(p) for p in loc)
        return ConfigError(code, f"{path}:{line}: {where}: {problem}", line)


def parse(path: str, text: str) -> Parsed:
    """The file's environments, or `ConfigError` with the line of the first problem (a YAML
    error's own line, or the line of the value a validation error names)."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data: Any = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or "invalid YAML"
        where = f"{path}:{line}" if line is not None else path
        raise ConfigError("malformed_yaml", f"{where}: {problem}", line) from None
    if data is None:
        data = {}
    try:
        config = AgentConfigFile.model_validate(data)
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        loc = [p for p in first["loc"] if isinstance(p, int | str)]
        line = _line_of(root, loc)
        where = ".".join(str(p) for p in loc) or "the document"
        raise ConfigError(
            "invalid_config", f"{path}:{line}: {where}: {first['msg']}", line
        ) from None
    parsed = Parsed(config, root)
    seen: set[str] = set()
    for index, env in enumerate(config.environments):
        if env.name in seen:
            raise parsed.error(
                "duplicate_environment",
                path,
                ("environments", index, "name"),
                f"{env.name!r} is declared twice",
            )
        seen.add(env.name)
    return parsed


@dataclass(frozen=True)
class Read:
    """What a worker read for one agent: the file at `commit` (None: there is none), or why the
    source could not be read."""

    agent_id: int
    commit: str | None
    text: str | None
    error: SourceError | None = None


_TARGET_FIELDS = ("source_id", "cluster_id", "namespace")
_SETTINGS = (
    "auto_sync",
    "prune",
    "self_heal",
    "health_timeout_seconds",
    "allow_cluster_scoped",
    "extra_namespaces",
    "max_prune_share",
)


def _actor(agent: Agent) -> str:
    return f"agent-config:{agent.id}:{agent.name}"


def _report(session: Session, agent: Agent, status: str, commit: str | None, exc: Any) -> None:
    """Record a problem; the configuration in effect stays. Audited once per (commit, code)."""
    line = exc.line if isinstance(exc, ConfigError) else None
    seen = (agent.config_error_commit, agent.config_error_code, agent.config_status)
    agent.config_status = status
    agent.config_error_code = exc.code
    agent.config_error = exc.message
    agent.config_error_line = line
    agent.config_error_commit = commit
    if seen != (commit, exc.code, status):
        record_audit(
            session,
            _actor(agent),
            "agent_config.reject",
            "agent",
            agent.id,
            project_id=agent.project_id,
            details={"commit": commit, "code": exc.code, "line": line, "message": exc.message},
        )


def apply(session: Session, agent: Agent, read: Read) -> list[GitOpsEnvironment]:
    """Apply what was read for `agent` (all or nothing). Returns the environments it created."""
    agent.config_checked_at = utcnow()
    path = config_path(agent.name)
    if read.error is not None:
        _report(session, agent, ConfigStatus.unreadable, read.commit, read.error)
        return []
    assert read.commit is not None
    if read.text is None:
        missing = ConfigError(
            "config_not_found", f"{path}: no such file at commit {read.commit[:12]}", None
        )
        _report(session, agent, ConfigStatus.invalid, read.commit, missing)
        return []
    try:
        parsed = parse(path, read.text)
        wanted = _resolve(session, agent, parsed, path)
    except ConfigError as exc:
        _report(session, agent, ConfigStatus.invalid, read.commit, exc)
        return []
    created, changed = _write(session, agent, wanted)
    disabled = _disable_undeclared(session, agent, {w["name"] for w in wanted})
    was = agent.config_status
    agent.config_status = ConfigStatus.applied
    agent.config_commit = read.commit
    agent.config_error_code = agent.config_error = agent.config_error_commit = None
    agent.config_error_line = None
    if created or changed or disabled or was != ConfigStatus.applied:
        record_audit(
            session,
            _actor(agent),
            "agent_config.apply",
            "agent",
            agent.id,
            project_id=agent.project_id,
            details={
                "commit": read.commit,
                "created": sorted(e.name for e in created),
                "updated": sorted(changed),
                "disabled": sorted(disabled),
            },
        )
    return created


def _resolve(session: Session, agent: Agent, parsed: Parsed, path: str) -> list[dict[str, Any]]:
    """Each declared environment as the columns of its record; every reference is checked
    before anything is written."""
    project_id = agent.project_id
    clusters = list(
        session.scalars(
            select(Cluster).where(Cluster.agent_id == agent.id, Cluster.project_id == project_id)
        )
    )
    sources = {
        s.name: s
        for s in session.scalars(select(GitSource).where(GitSource.project_id == project_id))
    }
    existing = {
        e.name: e
        for e in session.scalars(
            select(GitOpsEnvironment).where(GitOpsEnvironment.project_id == project_id)
        )
    }
    wanted: list[dict[str, Any]] = []
    for index, env in enumerate(parsed.config.environments):
        at: tuple[str | int, ...] = ("environments", index)
        if env.cluster is not None:
            cluster = next((c for c in clusters if c.name == env.cluster), None)
            if cluster is None:
                raise parsed.error(
                    "cluster_not_found",
                    path,
                    (*at, "cluster"),
                    f"no cluster named {env.cluster!r} is reached through agent {agent.name!r}",
                )
        elif len(clusters) == 1:
            cluster = clusters[0]
        else:
            problem = (
                f"no cluster of the project is reached through agent {agent.name!r}"
                if not clusters
                else "the agent reaches several clusters: name one with `cluster`"
            )
            code = "agent_has_no_cluster" if not clusters else "cluster_required"
            raise parsed.error(code, path, at, problem)
        if env.source is not None:
            source = sources.get(env.source)
            if source is None:
                raise parsed.error(
                    "source_not_found",
                    path,
                    (*at, "source"),
                    f"the project has no GitOps source named {env.source!r}",
                )
        else:
            own = [s for s in sources.values() if s.id == agent.config_source_id]
            if not own:
                raise parsed.error("source_not_found", path, at, "the agent has no source")
            source = own[0]
        row = {
            "name": env.name,
            "source_id": source.id,
            "cluster_id": cluster.id,
            "namespace": env.namespace,
            **{field: getattr(env, field) for field in _SETTINGS},
        }
        current = existing.get(env.name)
        if current is not None:
            if current.configured_by_agent_id != agent.id:
                raise parsed.error(
                    "name_taken",
                    path,
                    (*at, "name"),
                    f"the project has an environment named {env.name!r} that this file does "
                    "not manage",
                )
            moved = [f for f in _TARGET_FIELDS if getattr(current, f) != row[f]]
            if moved:
                loc = (*at, "namespace" if moved[0] == "namespace" else moved[0][:-3])
                raise parsed.error(
                    "environment_target_changed",
                    path,
                    loc,
                    f"environment {env.name!r} cannot change its source, cluster or namespace; "
                    "declare it under a new name",
                )
        wanted.append(row)
    return wanted


def _write(
    session: Session, agent: Agent, wanted: list[dict[str, Any]]
) -> tuple[list[GitOpsEnvironment], list[str]]:
    created: list[GitOpsEnvironment] = []
    changed: list[str] = []
    for row in wanted:
        current = session.scalar(
            select(GitOpsEnvironment).where(
                GitOpsEnvironment.project_id == agent.project_id,
                GitOpsEnvironment.name == row["name"],
            )
        )
        if current is None:
            environment = GitOpsEnvironment(
                project_id=agent.project_id,
                configured_by_agent_id=agent.id,
                inventory=[],
                drifted_objects=[],
                **row,
            )
            session.add(environment)
            created.append(environment)
            continue
        differs = [f for f in _SETTINGS if getattr(current, f) != row[f]]
        for field in differs:
            setattr(current, field, row[field])
        if differs:
            changed.append(current.name)
    session.flush()
    return created, changed


def _disable_undeclared(session: Session, agent: Agent, declared: set[str]) -> list[str]:
    """Environments of this agent's file that it no longer declares: no automatic deployment
    any more (push, poll or self-heal); history and cluster objects stay."""
    disabled: list[str] = []
    for environment in session.scalars(
        select(GitOpsEnvironment).where(GitOpsEnvironment.configured_by_agent_id == agent.id)
    ):
        if environment.name in declared:
            continue
        if environment.auto_sync or environment.self_heal:
            environment.auto_sync = False
            environment.self_heal = False
            disabled.append(environment.name)
    return disabled


def deploy_created(
    session: Session, agent: Agent, created: list[GitOpsEnvironment], *, skip_source: int | None
) -> None:
    """A first deployment (the source's followed ref) of each new auto-syncing environment,
    except those of `skip_source`, whose push is being handled anyway."""
    for environment in created:
        if not environment.auto_sync or environment.source_id == skip_source:
            continue
        source = session.get_one(GitSource, environment.source_id)
        queue.request(
            session,
            environment,
            trigger=Trigger.manual,
            triggered_by=_actor(agent),
            ref=source.ref,
            commit_sha=None,
        )


def agents_configured_from(session: Session, source_id: int) -> list[tuple[int, str]]:
    """(id, name) of the agents whose configuration lives in the source."""
    rows = session.execute(
        select(Agent.id, Agent.name)
        .where(Agent.config_source_id == source_id, Agent.project_id.is_not(None))
        .order_by(Agent.id)
    )
    return [(r[0], r[1]) for r in rows]
