"""The in-cluster agent: dials the agent server and serves Kubernetes API proxy streams."""
