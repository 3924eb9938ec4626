"""Agent server: agent tunnels, the Kubernetes API proxy through them, routing between replicas."""
