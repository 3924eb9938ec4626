"""Agents: registration, agent tokens and the record of live agent connections."""
