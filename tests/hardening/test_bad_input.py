"""Bad input answers 4xx with a stable code, never 500: ids, cursors, times, names, versions."""

from __future__ import annotations

import json
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.conftest import Api
from tests.kube.helpers import Project
from tests.support.certs import write_self_signed


@pytest.mark.parametrize(
    "path",
    [
        f"/api/v1/projects/{2**70}",
        f"/api/v1/projects/{2**63}/clusters",
        f"/api/v1/projects/1/clusters/{2**64}",
        f"/api/v1/projects/1/agents/{10**30}/tokens",
    ],
)
async def test_ids_beyond_int64_are_not_found(admin: Api, path: str) -> None:
    response = await admin.get(path)
    assert response.status_code == 404, response.text
    assert response.json()["error"]["code"] == "not_found"


@pytest.mark.parametrize("cursor", ["²", "١٢", "1_000", str(2**63), "-1", " 5"])
async def test_cursors_that_we_never_returned_are_refused(admin: Api, cursor: str) -> None:
    response = await admin.get("/api/v1/projects", params={"cursor": cursor})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "invalid_cursor"


async def test_the_largest_id_still_answers_a_plain_not_found(admin: Api) -> None:
    response = await admin.get(f"/api/v1/projects/{2**63 - 1}")
    assert response.status_code == 404
    ok = await admin.get("/api/v1/projects", params={"cursor": str(2**63 - 1)})
    assert ok.status_code == 200 and ok.json()["items"] == []


@pytest.mark.parametrize("kind", ["api", "agent"])
async def test_expiry_beyond_the_calendar_in_utc_is_refused(admin: Api, kind: str) -> None:
    project = await admin.create_project(f"expiry-{kind}")
    base = f"/api/v1/projects/{project['id']}"
    if kind == "agent":
        agent = await admin.post(f"{base}/agents", {"name": "edge"})
        base = f"{base}/agents/{agent.json()['id']}"
    body = {"name": "late", "expires_at": "9999-12-31T23:59:59-05:00"}
    response = await admin.post(f"{base}/tokens", body)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "validation_failed"
    # A naive time is refused the same way for both kinds of token.
    naive = await admin.post(f"{base}/tokens", {"name": "n", "expires_at": "2100-01-01T00:00:00"})
    assert naive.status_code == 422, naive.text


@pytest.mark.parametrize(
    "name",
    ["ci\u202etxt.exe", "line\nbreak", "bell\x07", "zero\u200bwidth", "iso\u2066late", "nul\x00"],
)
async def test_names_with_control_or_bidi_characters_are_refused(admin: Api, name: str) -> None:
    project = await admin.create_project("names")
    base = f"/api/v1/projects/{project['id']}"
    token = await admin.post(f"{base}/tokens", {"name": name, "role": "reporter"})
    assert token.status_code == 422, token.text
    agent = await admin.post(f"{base}/agents", {"name": "edge"})
    agent_token = await admin.post(f"{base}/agents/{agent.json()['id']}/tokens", {"name": name})
    assert agent_token.status_code == 422, agent_token.text
    scope = await admin.get(f"{base}/cluster-for-environment", params={"environment": name})
    assert scope.status_code == 422, scope.text
    # Ordinary non-ASCII text stays allowed.
    fine = await admin.post(f"{base}/tokens", {"name": "déploiement ✓", "role": "reporter"})
    assert fine.status_code == 201, fine.text


class _OddVersionHandler(BaseHTTPRequestHandler):
    body = b"[]"

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def odd_apiserver(tmp_path: Path) -> Iterator[tuple[str, str, type[_OddVersionHandler]]]:
    """An HTTPS server on loopback whose `/version` answers whatever the test sets."""
    pem, cert, key = write_self_signed(tmp_path, "odd", "odd-apiserver")
    handler = type("Handler", (_OddVersionHandler,), {})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"https://127.0.0.1:{server.server_address[1]}", pem, handler
    server.shutdown()
    server.server_close()


@pytest.mark.usefixtures("allow_local_network", "worker")
@pytest.mark.parametrize(
    "body",
    [
        b"[]",
        b"not json at all",
        json.dumps({"gitVersion": 5, "major": "1", "minor": "2", "platform": "x"}).encode(),
        json.dumps(
            {
                "gitVersion": "v1." + "9" * 100,
                "major": "1",
                "minor": "2",
                "platform": "linux/amd64",
                "buildDate": "x",
                "compiler": "gc",
                "gitCommit": "x",
                "gitTreeState": "clean",
                "goVersion": "go",
            }
        ).encode(),
    ],
)
async def test_a_version_answer_we_cannot_read_ends_the_check(
    admin: Api, odd_apiserver: tuple[str, str, type[_OddVersionHandler]], body: bytes
) -> None:
    url, pem, handler = odd_apiserver
    handler.body = body
    project = await Project.create(admin)
    created = await admin.post(
        f"{project.base}/clusters",
        {"name": "odd", "kubernetes": {"api_url": url, "ca_pem": pem, "token": "t"}},
    )
    assert created.status_code == 201, created.text
    cluster = await project.checked_cluster(created.json()["id"])
    assert cluster["status"] == "unreachable"
    assert cluster["error"]["code"] == "unexpected_response"
    assert cluster["kubernetes_version"] is None
