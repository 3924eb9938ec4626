"""Fixtures for the EKS provider tests."""

from tests.support.moto_server import moto, moto_server

__all__ = ["moto", "moto_server"]
