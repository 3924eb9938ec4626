"""Agent tunnel protocol: frame codec and stream multiplexer shared by agent and server."""
