"""Transport rules of the client (retries, redirects, timeouts), through a fault-injecting
HTTPS proxy in front of the real kube-apiserver: the proxy answers scripted statuses first,
then relays requests to the apiserver and its real answers back."""

from __future__ import annotations

import datetime
import http.client
import ipaddress
import ssl
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from app.kube import KubeClient, KubeError
from tests.support.kubeapi import KubeCluster, unique_name


def _certificate(tmp: Path) -> tuple[str, Path, Path]:
    """A self-signed certificate for 127.0.0.1: (PEM, cert file, key file)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fault-proxy")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    pem = cert.public_bytes(serialization.Encoding.PEM).decode()
    cert_file, key_file = tmp / "proxy.crt", tmp / "proxy.key"
    cert_file.write_text(pem)
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return pem, cert_file, key_file


class FaultProxy:
    """Answers the next scripted faults in order, then relays to the apiserver."""

    def __init__(self, kube_cluster: KubeCluster, tmp: Path) -> None:
        self.faults: list[str] = []
        self.seen: list[str] = []
        self.relayed = 0
        upstream = urlsplit(kube_cluster.url)
        upstream_tls = ssl.create_default_context(cadata=kube_cluster.ca_pem)
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _handle(self) -> None:
                proxy.seen.append(f"{self.command} {self.path}")
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                fault = proxy.faults.pop(0) if proxy.faults else "relay"
                if fault.startswith("status:"):
                    self.send_response(int(fault.split(":")[1]))
                    self.send_header("Retry-After", "0")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if fault == "redirect":
                    self.send_response(302)
                    self.send_header("Location", f"{kube_cluster.url}{self.path}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if fault == "stall":
                    time.sleep(2)  # longer than the client's read timeout; then hang up
                    self.close_connection = True
                    return
                proxy.relayed += 1
                conn = http.client.HTTPSConnection(
                    upstream.hostname or "", upstream.port, context=upstream_tls, timeout=30
                )
                try:
                    headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                    conn.request(self.command, self.path, body=body, headers=headers)
                    answer = conn.getresponse()
                    data = answer.read()
                finally:
                    conn.close()
                self.send_response(answer.status)
                for k, v in answer.getheaders():
                    if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

        self.ca_pem, cert_file, key_file = _certificate(tmp)
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls.load_cert_chain(cert_file, key_file)
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.url = f"https://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def client(self, token: str, read_timeout: float = 30.0) -> KubeClient:
        return KubeClient.from_platform(
            self.url, self.ca_pem, token, allow_local=True, read_timeout=read_timeout
        )

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def proxy(kube_cluster: KubeCluster, tmp_path: Path) -> Iterator[FaultProxy]:
    p = FaultProxy(kube_cluster, tmp_path)
    yield p
    p.close()


def test_server_errors_on_reads_are_retried(proxy: FaultProxy, kube_cluster: KubeCluster) -> None:
    proxy.faults = ["status:503", "status:502"]
    with proxy.client(kube_cluster.token) as kube:
        assert kube.version().major == "1"
    assert len(proxy.seen) == 3
    assert proxy.relayed == 1


def test_throttled_create_is_retried_once_admitted(
    proxy: FaultProxy, kube_cluster: KubeCluster
) -> None:
    name = unique_name("retried")
    proxy.faults = ["status:429"]
    with proxy.client(kube_cluster.token) as kube:
        kube.core.create_namespace({"metadata": {"name": name}})
    assert [s.split()[0] for s in proxy.seen] == ["POST", "POST"]
    kube_cluster.kubectl("get", "namespace", name)
    kube_cluster.kubectl("delete", "namespace", name, "--wait=false")


def test_server_error_on_create_is_not_repeated(
    proxy: FaultProxy, kube_cluster: KubeCluster
) -> None:
    proxy.faults = ["status:500"]
    with proxy.client(kube_cluster.token) as kube, pytest.raises(KubeError) as excinfo:
        kube.core.create_namespace({"metadata": {"name": unique_name("once")}})
    assert excinfo.value.code == "server_error"
    assert len(proxy.seen) == 1


def test_client_errors_are_not_retried(proxy: FaultProxy, kube_cluster: KubeCluster) -> None:
    with proxy.client("revoked-token") as kube, pytest.raises(KubeError) as excinfo:
        kube.core.list_namespace()
    assert excinfo.value.code == "unauthorized"
    assert len(proxy.seen) == 1  # the apiserver's real 401, relayed once


def test_persistent_server_errors_give_up(proxy: FaultProxy, kube_cluster: KubeCluster) -> None:
    proxy.faults = ["status:503"] * 10
    with proxy.client(kube_cluster.token) as kube, pytest.raises(KubeError) as excinfo:
        kube.version()
    assert (excinfo.value.code, excinfo.value.status) == ("server_error", 503)
    assert len(proxy.seen) == 4  # MAX_ATTEMPTS


def test_redirects_are_not_followed(proxy: FaultProxy, kube_cluster: KubeCluster) -> None:
    proxy.faults = ["redirect"]
    with proxy.client(kube_cluster.token) as kube, pytest.raises(KubeError) as excinfo:
        kube.core.list_namespace()
    assert excinfo.value.code == "unexpected_response"
    assert len(proxy.seen) == 1
    assert proxy.relayed == 0


def test_slow_answer_times_out(proxy: FaultProxy, kube_cluster: KubeCluster) -> None:
    proxy.faults = ["stall"] * 4
    with (
        proxy.client(kube_cluster.token, read_timeout=0.5) as kube,
        pytest.raises(KubeError) as excinfo,
    ):
        kube.version()
    assert excinfo.value.code == "timeout"
