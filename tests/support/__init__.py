"""Pytest plugin modules that provide real components to the tests."""
