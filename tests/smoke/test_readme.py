"""The README's walk-through, run as written: every fenced block marked `sh test`, in order,
in one bash script, against real processes and the test kube-apiserver.

Only ports and the two ways of starting clusterport from a checkout change (see
`SUBSTITUTIONS`), so a README edit is tested as it reads and the README cannot drift.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.agents.support import free_port

README = Path(__file__).resolve().parents[2] / "README.md"
BLOCK = re.compile(r"^```sh test[ \t]*\n(.*?)^```[ \t]*$", re.DOTALL | re.MULTILINE)
DEFAULT_PORTS = {
    "CLUSTERPORT_API_PORT": 8080,
    "CLUSTERPORT_AGENT_PORT": 8150,
    "CLUSTERPORT_HEALTH_PORT": 8151,
    "CLUSTERPORT_AGENT_PROXY_PORT": 8154,
}
BIN = Path(sys.executable).parent
SUBSTITUTIONS = [
    # `scripts/serve` runs `uv sync --no-dev` in the checkout, which would strip the test
    # environment; it is `clusterport serve` after that sync.
    (re.compile(r"(?<![\w/])scripts/serve\b"), f"{BIN}/clusterport serve"),
    (re.compile(r"\buv run clusterport\b"), f"{BIN}/clusterport"),
]


def readme_script(text: str, ports: dict[str, int]) -> str:
    blocks = BLOCK.findall(text)
    assert blocks, "README.md has no `sh test` blocks"
    script = "\n".join(blocks)
    for variable, default in DEFAULT_PORTS.items():
        script = re.sub(rf"(?<=127\.0\.0\.1:){default}\b", str(ports[variable]), script)
    for pattern, replacement in SUBSTITUTIONS:
        script = pattern.sub(replacement, script)
    return "set -euo pipefail\nset -x\n" + script


def test_blocks_are_extracted_and_substituted() -> None:
    text = (
        "```sh\nnot run\n```\n"
        "```sh test\nscripts/serve &\ncurl http://127.0.0.1:8080/x\n```\n"
        "```yaml test\nnot: run\n```\n"
        "```sh test\nuv run clusterport agent\n```\n"
    )
    ports = {name: 10000 + n for n, name in enumerate(DEFAULT_PORTS)}
    script = readme_script(text, ports)
    assert "not run" not in script and "not: run" not in script
    assert f"{BIN}/clusterport serve &" in script
    assert "http://127.0.0.1:10000/x" in script
    assert f"{BIN}/clusterport agent" in script


def _stop_group(pgid: int) -> None:
    """Stop the script's background processes (its own process group)."""
    for sig, wait in ((signal.SIGTERM, 30.0), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.2)


def test_readme_walkthrough_runs(kube_cluster: Any, tmp_path: Path) -> None:
    ports = {name: free_port() for name in DEFAULT_PORTS}
    kubeconfig = tmp_path / "kubeconfig"  # the walk-through adds a context to it
    shutil.copy(kube_cluster.kubeconfig, kubeconfig)
    kubeconfig.chmod(0o600)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CLUSTERPORT_", "KUBE"))}
    env.update({name: str(port) for name, port in ports.items()})
    env.update(
        KUBECONFIG=str(kubeconfig),
        PATH=os.pathsep.join([str(BIN), str(Path(kube_cluster.kubectl_path).parent), env["PATH"]]),
        HOME=str(tmp_path),
        CLUSTERPORT_AGENT_LIVENESS_PORT=str(free_port()),
    )
    script = readme_script(README.read_text(), ports)
    (tmp_path / "readme.sh").write_text(script)
    log = tmp_path / "readme.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            ["bash", str(tmp_path / "readme.sh")],
            cwd=tmp_path,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # its own group: the walk-through's `&` processes too
        )
        try:
            code = process.wait(timeout=900)
        except subprocess.TimeoutExpired:
            code = None
        finally:
            _stop_group(process.pid)
            if process.poll() is None:
                process.wait(10)
    output = log.read_text(errors="replace")
    assert code == 0, f"README walk-through failed (exit {code}):\n{output[-6000:]}"
    # What the last blocks promise: the namespace kubeconfig and the agent both worked.
    assert "configmap/hello created" in output, output[-4000:]
    assert "clusterport-agent-1" in kubeconfig.read_text()
    assert kubeconfig.stat().st_mode & 0o777 == 0o600
