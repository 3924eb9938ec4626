"""The GitOps engine: pure decisions over rendered objects (no I/O, no server imports).

Render results go in (file contents, object dicts, live status); decisions come out: parsed and
checked objects, apply order, inventory diff, prune guard and health. The worker's applier and
the agent's in-cluster applier both call it, so the rules are the same on both sides.
"""
