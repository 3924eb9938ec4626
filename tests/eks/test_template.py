"""The EKS CloudFormation template passes cfn-lint (run here so CI lints it with the tests)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from app.providers.aws.template import TEMPLATE_PATH


def test_template_passes_cfn_lint() -> None:
    cfn_lint = shutil.which("cfn-lint")
    assert cfn_lint is not None, "cfn-lint is a dev dependency: run `uv sync`"
    result = subprocess.run(
        [cfn_lint, "--format", "parseable", str(TEMPLATE_PATH)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_cfn_lint_catches_a_broken_template(tmp_path: Path) -> None:
    # The check above could pass by linting nothing; a template with a bad attribute fails.

    broken = tmp_path / "broken.yaml"
    broken.write_text(
        TEMPLATE_PATH.read_text().replace(
            "!GetAtt ControlPlane.Endpoint", "!GetAtt ControlPlane.Nope"
        )
    )
    cfn_lint = shutil.which("cfn-lint")
    assert cfn_lint is not None
    result = subprocess.run(
        [cfn_lint, str(broken)], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode != 0
    assert "'Nope' is not one of" in result.stdout
