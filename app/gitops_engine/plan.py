"""The inventory diff and the prune guard."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from app.gitops_engine.manifests import ObjectRef
from app.gitops_engine.order import prune_order

GUARDED_KINDS = frozenset({"Namespace", "CustomResourceDefinition"})
DEFAULT_PRUNE_SHARE = 0.5


@dataclass(frozen=True)
class Plan:
    apply: list[ObjectRef]
    prune: list[ObjectRef]
    # Why the prune needs a confirmation through the API; empty when it may go ahead.
    guard_reasons: list[str] = field(default_factory=list)

    @property
    def needs_confirmation(self) -> bool:
        return bool(self.guard_reasons)

    def inventory_after(self, pruned: bool) -> list[ObjectRef]:
        """What the environment owns once applied: the prune candidates stay owned until
        they are actually deleted, so a later deployment plans them again."""
        owned = set(self.apply) | (set() if pruned else set(self.prune))
        return sorted(owned)


def make_plan(
    desired: Iterable[ObjectRef],
    inventory: Iterable[ObjectRef],
    *,
    prune: bool,
    max_prune_share: float = DEFAULT_PRUNE_SHARE,
    confirmed: bool = False,
) -> Plan:
    """Apply every desired object; prune what the inventory holds and the render no longer
    does (when the environment prunes). A prune of a Namespace or CRD, or of more than
    `max_prune_share` of the inventory, waits for confirmation unless `confirmed`."""
    wanted = sorted(set(desired))
    owned = set(inventory)
    gone = prune_order(sorted(owned - set(wanted))) if prune else []
    reasons: list[str] = []
    if gone and not confirmed:
        guarded = [ref for ref in gone if ref.kind in GUARDED_KINDS]
        if guarded:
            reasons.append("the prune deletes " + ", ".join(str(r) for r in guarded))
        if owned and len(gone) / len(owned) > max_prune_share:
            reasons.append(
                f"the prune deletes {len(gone)} of {len(owned)} owned objects "
                f"(more than {max_prune_share:.0%})"
            )
    return Plan(apply=wanted, prune=gone, guard_reasons=reasons)
