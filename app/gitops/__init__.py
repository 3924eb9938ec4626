"""GitOps records and routes: manifest sources, environments, webhook deliveries, deployments."""
