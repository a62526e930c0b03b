"""Spot-first node-type choice with fallback, for Ray's (v1) cluster autoscaler on AWS.

Why this exists
---------------
Ray's autoscaler has no built-in "try spot, fall back to on-demand" rule for AWS. What
it does (checked against Ray 2.60):

* The AWS node provider retries a failed RunInstances in each subnet listed in
  ``SubnetIds`` (one per AZ), so an AZ without capacity is skipped. That is AZ
  fallback, not instance-type or market fallback.
* The v1 autoscaler (the default) picks the node type for pending work with a
  *utilization scorer*: node types with the same resources tie, and the tie is broken
  by the node-type name (reverse alphabetical). Launch failures such as
  ``InsufficientInstanceCapacity`` are recorded (``ray status`` shows them), but the
  default scorer ignores that record, so the autoscaler keeps asking for the same
  spot type for as long as it has no capacity.
* The v2 autoscaler (``RAY_enable_autoscaler_v2=1``) reads a ``priority`` per node type
  and lowers a type's rank after ``ALLOCATION_TIMEOUT`` (an instance that never became
  a Ray node), but not after an immediate RunInstances error (``ALLOCATION_FAILED``),
  which is how spot capacity errors show up on AWS.

Ray lets a cluster replace the v1 scorer: the autoscaler loads the function named by
``RAY_AUTOSCALER_UTILIZATION_SCORER`` and passes it the launch-failure record
(``node_availability_summary``). ``infra/aws-cluster.yaml`` starts the head with::

    PYTHONPATH=$HOME/dfray/infra RAY_AUTOSCALER_UTILIZATION_SCORER=ray_spot_fallback.spot_first_scorer

and :func:`spot_first_scorer` ranks node types by

1. availability: a type whose last launch failed (within
   ``AUTOSCALER_NODE_AVAILABILITY_MAX_STALENESS_S``, 30 min by default) loses to every
   type that has not failed; after that window it is tried again;
2. Ray's own score (avoid GPU nodes for CPU-only work, resource fit);
3. market: a type named ``*_spot`` beats any other type with the same fit.

So with the template's types (all 4 vCPU + 1 GPU) the autoscaler asks for a spot type
first; when a spot type fails to launch, it moves on to the next spot type, then to the
on-demand type, and goes back to spot once the failure record expires. Among the spot
types the order is Ray's name tie-break (``gpu_g6_spot``, ``gpu_g5_spot``,
``gpu_g4dn_spot``). If every type has failed, it keeps retrying the best of them.

This module must stay importable with nothing but Ray installed: the autoscaler
(monitor process on the head) imports it at start and cannot scale at all if that fails.
"""

from __future__ import annotations

from typing import Any

SPOT_SUFFIX = "_spot"


def _unavailable(node_type: str, summary: Any) -> bool:
    records = getattr(summary, "node_availabilities", None) or {}
    record = records.get(node_type)
    return record is not None and not record.is_available


def spot_first_scorer(
    node_resources: dict[str, float],
    resources: list[dict[str, float]],
    node_type: str,
    *,
    node_availability_summary: Any,
) -> tuple | None:
    """Ray utilization scorer: availability first, then Ray's score, then spot."""
    from ray.autoscaler._private.resource_demand_scheduler import (
        _default_utilization_scorer,
    )

    score = _default_utilization_scorer(
        node_resources,
        resources,
        node_type,
        node_availability_summary=node_availability_summary,
    )
    if score is None:
        return None
    available = not _unavailable(node_type, node_availability_summary)
    is_spot = node_type.endswith(SPOT_SUFFIX)
    return (available, *score, is_spot)
