"""Test stand-in for an EKS control plane's front door, in front of the real kube-apiserver.

EKS authenticates `k8s-aws-v1.` bearer tokens (aws-iam-authenticator, a token webhook): it
decodes the presigned STS GetCallerIdentity URL, checks it names STS, GetCallerIdentity and
this cluster (`x-k8s-aws-id`, signed), and lets STS say who signed it. Here the STS part is
played by moto's own record of the sessions it issued: the signature is checked for real
(tests/support/sigv4.py) with the secret key moto handed out, and the expiry is enforced.
An authenticated IAM role that the test made cluster admin (as EKS does for the cluster's
creator) is forwarded to the real kube-apiserver with impersonation headers; any other bearer
token (a service account token, say) goes through unchanged for the apiserver to judge.

It serves TLS on 127.0.0.1 with its own CA, which the stand-in stack outputs as the cluster CA.
"""

from __future__ import annotations

import base64
import datetime as dt
import ssl
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx

from app.aws.eks_token import CLUSTER_ID_HEADER, TOKEN_PREFIX, presigned_url_from_token
from tests.support.certs import write_self_signed
from tests.support.moto_server import assumed_role_for_key
from tests.support.sigv4 import presigned_signature_matches

MAX_TOKEN_AGE = dt.timedelta(minutes=15)


def authenticate_eks_token(token: str, cluster_name: str, *, now: dt.datetime) -> str | None:
    """The assumed-role ARN that signed `token` for `cluster_name`, or None if it is not valid."""
    if not token.startswith(TOKEN_PREFIX):
        return None
    try:
        url = presigned_url_from_token(token)
    except ValueError:
        return None
    parts = urlsplit(url)
    query = {key: values[0] for key, values in parse_qs(parts.query).items()}
    signed = query.get("X-Amz-SignedHeaders", "").split(";")
    if (
        parts.scheme != "https"
        or not (parts.hostname or "").startswith("sts.")
        or not (parts.hostname or "").endswith(".amazonaws.com")
        or query.get("Action") != "GetCallerIdentity"
        or CLUSTER_ID_HEADER not in signed
    ):
        return None
    signed_at = dt.datetime.strptime(query["X-Amz-Date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.UTC)
    lifetime = dt.timedelta(seconds=int(query["X-Amz-Expires"]))
    if lifetime > MAX_TOKEN_AGE or not signed_at <= now <= signed_at + lifetime:
        return None
    access_key_id = query["X-Amz-Credential"].split("/")[0]
    session = assumed_role_for_key(access_key_id)
    if session is None or query.get("X-Amz-Security-Token") != session.session_token:
        return None
    if session.expiration.replace(tzinfo=dt.UTC) <= now:
        return None
    if not presigned_signature_matches(
        url, {CLUSTER_ID_HEADER: cluster_name}, session.secret_access_key
    ):
        return None
    return session.arn


@dataclass
class EksFront:
    """The running front: its URL and CA (for the stand-in stack outputs) and who it let in."""

    url: str
    ca_pem: str
    cluster_name: str
    admin_role_arns: set[str] = field(default_factory=set)
    authenticated: list[str] = field(default_factory=list)
    rejected: int = 0

    @property
    def ca_data(self) -> str:
        """The CA as CloudFormation's CertificateAuthorityData output gives it (base64 PEM)."""
        return base64.b64encode(self.ca_pem.encode()).decode()


def _role_arn_of_session(session_arn: str) -> str:
    # arn:aws:sts::ACCOUNT:assumed-role/ROLE/SESSION -> arn:aws:iam::ACCOUNT:role/ROLE
    prefix, _, rest = session_arn.partition(":assumed-role/")
    role = rest.split("/")[0]
    return prefix.replace(":sts::", ":iam::") + f":role/{role}"


@contextmanager
def running_eks_front(
    *, upstream_url: str, upstream_ca_pem: str, upstream_token: str, cluster_name: str
) -> Iterator[EksFront]:
    """Serve the front on a random loopback port for the duration of the block."""
    with tempfile.TemporaryDirectory() as tmp:
        cert_pem, cert_file, key_file = write_self_signed(Path(tmp), "tls", "eks-front.test")
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert_file, key_file)
    upstream = httpx.Client(
        base_url=upstream_url,
        verify=ssl.create_default_context(cadata=upstream_ca_pem),
        timeout=30,
        follow_redirects=False,
    )
    front = EksFront(url="", ca_pem=cert_pem, cluster_name=cluster_name)
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass  # quiet: pytest would show every request

        def _forward(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            headers = {
                name: value
                for name in ("Content-Type", "Accept")
                if (value := self.headers.get(name)) is not None
            }
            bearer = self.headers.get("Authorization", "").removeprefix("Bearer ").strip()
            if bearer.startswith(TOKEN_PREFIX):
                arn = authenticate_eks_token(
                    bearer, front.cluster_name, now=dt.datetime.now(dt.UTC)
                )
                if arn is None or _role_arn_of_session(arn) not in front.admin_role_arns:
                    with lock:
                        front.rejected += 1
                    self._reply(401, b'{"kind":"Status","code":401}', "application/json")
                    return
                with lock:
                    front.authenticated.append(arn)
                headers["Authorization"] = f"Bearer {upstream_token}"
                headers["Impersonate-User"] = arn
                headers["Impersonate-Group"] = "system:masters"
            elif bearer:
                headers["Authorization"] = f"Bearer {bearer}"
            response = upstream.request(self.command, self.path, content=body, headers=headers)
            self._reply(
                response.status_code,
                response.content,
                response.headers.get("Content-Type", "application/json"),
            )

        def _reply(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _forward

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    server.socket = context.wrap_socket(server.socket, server_side=True)
    front.url = f"https://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield front
    finally:
        server.shutdown()
        server.server_close()
        upstream.close()
        thread.join(timeout=10)
