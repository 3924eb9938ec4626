"""Pytest plugin: the test process and every Python process it starts connect only to loopback.

The guard (`guard/sitecustomize.py`) is an audit hook refusing any Python-level `socket.connect`
to another address; putting its folder on PYTHONPATH makes subprocesses load it at start-up.
C-level clients (libpq) are not covered; they connect to loopback by construction.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

GUARD_DIR = Path(__file__).resolve().parent / "guard"


def pytest_configure(config: pytest.Config) -> None:
    spec = importlib.util.spec_from_file_location("sitecustomize", GUARD_DIR / "sitecustomize.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # installs the hook in this process
    paths = [str(GUARD_DIR), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    os.environ["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
