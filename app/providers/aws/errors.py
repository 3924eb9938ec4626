"""Errors that end EKS provisioning; each `code` is ours and is stored on the cluster."""

from __future__ import annotations


class ProvisioningError(Exception):
    """Provisioning cannot go on; `code` is stored on the cluster."""

    def __init__(self, code: str) -> None:
        self.code = code
        super().__init__(code)
