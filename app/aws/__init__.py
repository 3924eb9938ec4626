"""Typed wrapper around boto3: the only package that imports it."""
