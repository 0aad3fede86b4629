"""The readable ``status`` of ``kube-system/cluster-autoscaler-status``, laid out as the real
cluster-autoscaler's (``kubectl describe configmap cluster-autoscaler-status -n kube-system``):
cluster-wide health, scale-up and scale-down, then the same per node group. Pure."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from k8semu.controllers.clusterautoscaler.planner import ScaleUp
from k8semu.controllers.clusterautoscaler.pools import NodePool

__all__ = ["status_text"]


def status_text(
    pools: Sequence[NodePool],
    targets: Mapping[str, Sequence[str]],
    ready: Mapping[str, bool],
    up: ScaleUp,
    unneeded: Mapping[str, float],
    draining: Mapping[str, object],
) -> str:
    """The text after the ``Cluster-autoscaler status at <time>:`` line. ``ready``: every
    registered node -> whether it is Ready."""
    lines = ["Cluster-wide:"]
    total_ready = sum(1 for r in ready.values() if r)
    lines += _block(
        f"Healthy (ready={total_ready} unready={len(ready) - total_ready} registered={len(ready)})",
        _scale_up(up.new, up.not_triggered, total_ready, sum(len(t) for t in targets.values())),
        _scale_down([n for n in unneeded], list(draining)),
    )
    lines += ["", "NodeGroups:"]
    for pool in pools:
        wanted = targets.get(pool.name, ())
        registered = [n for n in ready if n.startswith(f"{pool.name}-") and n in wanted]
        n_ready = sum(1 for n in registered if ready[n])
        lines.append(f"  Name:        {pool.name}")
        lines += _block(
            f"Healthy (ready={n_ready} unready={len(registered) - n_ready}"
            f" registered={len(registered)} cloudProviderTarget={len(wanted)}"
            f" (minSize={pool.min_nodes}, maxSize={pool.max_nodes}))",
            _scale_up(
                {pool.name: up.new[pool.name]} if pool.name in up.new else {},
                {},
                n_ready,
                len(wanted),
            ),
            _scale_down([n for n in unneeded if n in wanted], [n for n in draining if n in wanted]),
        )
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def _block(health: str, scale_up: str, scale_down: str) -> list[str]:
    return [
        f"  Health:      {health}",
        f"  ScaleUp:     {scale_up}",
        f"  ScaleDown:   {scale_down}",
    ]


def _scale_up(
    new: Mapping[str, Sequence[str]], stuck: Mapping[str, str], ready: int, target: int
) -> str:
    counts = f"ready={ready} cloudProviderTarget={target}"
    if new or ready < target:
        return f"InProgress ({counts})"
    if stuck:
        return f"NoActivity ({counts}; {len(stuck)} pods fit no pool)"
    return f"NoActivity ({counts})"


def _scale_down(candidates: Sequence[str], draining: Sequence[str]) -> str:
    if draining:
        return f"InProgress (candidates={len(candidates)} draining={','.join(draining)})"
    if candidates:
        return f"CandidatesPresent (candidates={len(candidates)})"
    return "NoCandidates (candidates=0)"
