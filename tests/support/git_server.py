"""A real git server on loopback: `git http-backend` (smart HTTP) behind a small threaded HTTP
server, with optional token authentication, and a working copy that commits and pushes."""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

GIT_ENV = {
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": "/dev/null",
    "GIT_AUTHOR_NAME": "Test",
    "GIT_AUTHOR_EMAIL": "test@example.invalid",
    "GIT_COMMITTER_NAME": "Test",
    "GIT_COMMITTER_EMAIL": "test@example.invalid",
    "GIT_TERMINAL_PROMPT": "0",
}


def git(*args: str, cwd: Path | None = None) -> str:
    proc = subprocess.run(
        ["git", *args],
        cwd=cwd,
        env={**os.environ, **GIT_ENV},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if proc.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc.stdout


class _Handler(BaseHTTPRequestHandler):
    server: _GitHTTPServer

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        return

    def _authorized(self) -> bool:
        token = self.server.token
        if token is None:
            return True
        header = self.headers.get("Authorization", "")
        if not header.startswith("Basic "):
            return False
        _, _, password = base64.b64decode(header[6:]).decode().partition(":")
        return password == token

    def _cgi(self) -> None:
        self.server.requests += 1
        if not self._authorized():
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="git"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        path, _, query = self.path.partition("?")
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        env = {
            "PATH": os.environ.get("PATH", ""),
            "GIT_PROJECT_ROOT": str(self.server.root),
            "GIT_HTTP_EXPORT_ALL": "1",
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_CONFIG_GLOBAL": "/dev/null",
            "REQUEST_METHOD": self.command,
            "PATH_INFO": path,
            "QUERY_STRING": query,
            "CONTENT_TYPE": self.headers.get("Content-Type", ""),
            "CONTENT_LENGTH": str(len(body)),
            "REMOTE_USER": "tester",
            "REMOTE_ADDR": "127.0.0.1",
        }
        if self.headers.get("Content-Encoding"):
            env["HTTP_CONTENT_ENCODING"] = self.headers["Content-Encoding"]
        if self.headers.get("Git-Protocol"):
            env["GIT_PROTOCOL"] = self.headers["Git-Protocol"]
        proc = subprocess.run(
            ["git", "http-backend"],
            input=body,
            env=env,
            capture_output=True,
            timeout=60,
            check=False,
        )
        head, _, payload = proc.stdout.partition(b"\r\n\r\n")
        if not _:
            head, _, payload = proc.stdout.partition(b"\n\n")
        status = 200
        headers: list[tuple[str, str]] = []
        for line in head.decode(errors="replace").splitlines():
            name, _, value = line.partition(":")
            if name.lower() == "status":
                status = int(value.strip().split()[0])
            elif name:
                headers.append((name, value.strip()))
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = _cgi
    do_POST = _cgi


class _GitHTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, root: Path, token: str | None, port: int = 0) -> None:
        super().__init__(("127.0.0.1", port), _Handler)
        self.root = root
        self.token = token
        self.requests = 0


class GitServer:
    """Bare repositories under `root`, served at `url_of(name)`."""

    def __init__(self, root: Path, token: str | None = None) -> None:
        self.root = root
        self._server = _GitHTTPServer(root, token)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def requests(self) -> int:
        return self._server.requests

    def url_of(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}.git"

    def create(self, name: str, workdir: Path) -> WorkingCopy:
        bare = self.root / f"{name}.git"
        git("init", "--bare", "-q", "-b", "main", str(bare))
        git("config", "http.receivepack", "true", cwd=bare)
        work = workdir / name
        git("init", "-q", "-b", "main", str(work))
        remote = self.url_of(name)
        if self._server.token is not None:
            remote = remote.replace("://", f"://x:{self._server.token}@")
        git("remote", "add", "origin", remote, cwd=work)
        return WorkingCopy(work)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class WorkingCopy:
    def __init__(self, path: Path) -> None:
        self.path = path

    def write(self, relative: str, text: str) -> None:
        target = self.path / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)

    def remove(self, relative: str) -> None:
        target = self.path / relative
        if target.is_dir():
            shutil.rmtree(target)
        else:
            target.unlink()

    def commit(self, message: str = "change") -> str:
        git("add", "-A", cwd=self.path)
        git("commit", "-q", "--allow-empty", "-m", message, cwd=self.path)
        return git("rev-parse", "HEAD", cwd=self.path).strip()

    def push(self, ref: str = "main", *, force: bool = False) -> str:
        sha = git("rev-parse", "HEAD", cwd=self.path).strip()
        git("push", "-q", *(["--force"] if force else []), "origin", f"HEAD:{ref}", cwd=self.path)
        return sha

    def commit_and_push(self, message: str = "change") -> str:
        self.commit(message)
        return self.push()


@contextmanager
def git_server(root: Path, token: str | None = None) -> Iterator[GitServer]:
    server = GitServer(root, token)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def main() -> None:
    """`python -m tests.support.git_server DIR [--port P] [--token T]`: serve the bare
    repositories in DIR over smart HTTP on 127.0.0.1 until interrupted (pushes allowed)."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("root", type=Path)
    parser.add_argument("--port", type=int, default=9418)
    parser.add_argument("--token", default=None, help="require this token (basic auth password)")
    args = parser.parse_args()
    server = _GitHTTPServer(args.root.resolve(), args.token, port=args.port)
    print(f"serving {args.root} at http://127.0.0.1:{server.server_address[1]}/<name>.git")
    server.serve_forever()


if __name__ == "__main__":
    main()
