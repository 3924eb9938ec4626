"""Webhook deliveries exactly as GitLab and GitHub send them (headers and payload shapes from
their documentation), and the generic HMAC form."""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from typing import Any

ZERO = "0" * 40


def github_push(
    secret: str, ref: str, after: str, before: str = ZERO, **extra: Any
) -> tuple[dict[str, str], bytes]:
    payload = {
        "ref": ref,
        "before": before,
        "after": after,
        "created": before == ZERO,
        "deleted": after == ZERO,
        "forced": False,
        "base_ref": None,
        "compare": f"https://github.com/acme/app/compare/{before[:12]}...{after[:12]}",
        "commits": [
            {
                "id": after,
                "tree_id": "0" * 40,
                "distinct": True,
                "message": "change",
                "timestamp": "2026-12-02T07:00:00Z",
                "url": f"https://github.com/acme/app/commit/{after}",
                "author": {"name": "Dev", "email": "dev@example.invalid", "username": "dev"},
                "committer": {"name": "Dev", "email": "dev@example.invalid", "username": "dev"},
                "added": [],
                "removed": [],
                "modified": ["k8s/app.yaml"],
            }
        ],
        "head_commit": {"id": after, "message": "change"},
        "repository": {"id": 1, "name": "app", "full_name": "acme/app", "private": True},
        "pusher": {"name": "dev", "email": "dev@example.invalid"},
        "sender": {"login": "dev", "id": 1, "type": "User"},
        **extra,
    }
    body = json.dumps(payload).encode()
    return github_headers(secret, body, "push"), body


def github_headers(
    secret: str, body: bytes, event: str, delivery: str | None = None
) -> dict[str, str]:
    signature = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return {
        "Content-Type": "application/json",
        "User-Agent": "GitHub-Hookshot/044aadd",
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": delivery or str(uuid.uuid4()),
        "X-GitHub-Hook-ID": "292430182",
        "X-GitHub-Hook-Installation-Target-ID": "79929171",
        "X-GitHub-Hook-Installation-Target-Type": "repository",
        "X-Hub-Signature": "sha1=" + hmac.new(secret.encode(), body, hashlib.sha1).hexdigest(),
        "X-Hub-Signature-256": f"sha256={signature}",
    }


def github_ping(secret: str) -> tuple[dict[str, str], bytes]:
    body = json.dumps(
        {"zen": "Keep it logically awesome.", "hook_id": 292430182, "hook": {"type": "Repository"}}
    ).encode()
    return github_headers(secret, body, "ping"), body


def gitlab_push(
    token: str, ref: str, after: str, before: str = ZERO, *, tag: bool = False
) -> tuple[dict[str, str], bytes]:
    payload = {
        "object_kind": "tag_push" if tag else "push",
        "event_name": "tag_push" if tag else "push",
        "before": before,
        "after": after,
        "ref": ref,
        "ref_protected": True,
        "checkout_sha": None if after == ZERO else after,
        "message": None,
        "user_id": 4,
        "user_name": "John Smith",
        "user_username": "jsmith",
        "user_email": "john@example.invalid",
        "project_id": 15,
        "project": {
            "id": 15,
            "name": "Diaspora",
            "path_with_namespace": "mike/diaspora",
            "default_branch": "main",
            "git_http_url": "http://example.invalid/mike/diaspora.git",
        },
        "commits": [{"id": after, "message": "change", "added": [], "modified": [], "removed": []}],
        "total_commits_count": 1,
        "repository": {"name": "Diaspora", "homepage": "http://example.invalid/mike/diaspora"},
    }
    body = json.dumps(payload).encode()
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "GitLab/17.6.0",
        "X-Gitlab-Event": "Tag Push Hook" if tag else "Push Hook",
        "X-Gitlab-Token": token,
        "X-Gitlab-Event-UUID": str(uuid.uuid4()),
        "X-Gitlab-Webhook-UUID": str(uuid.uuid4()),
        "X-Gitlab-Instance": "https://gitlab.example.invalid",
    }
    return headers, body


def generic_push(
    secret: str, ref: str, commit: str, delivery: str | None = None
) -> tuple[dict[str, str], bytes]:
    body = json.dumps({"ref": ref, "commit": commit}).encode()
    signature = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    headers = {"Content-Type": "application/json", "X-Clusterport-Signature": f"sha256={signature}"}
    if delivery:
        headers["X-Clusterport-Delivery"] = delivery
    return headers, body
