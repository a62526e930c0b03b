"""A Ray cluster launcher config, parsed once for the budget: its node types, what each
runs on (instance type, market, EBS volumes, public IPv4) and its worker limits.

Render, the ledger, the governor and the autoscaler cap all read a cluster config through
``NodeTypes.from_cluster_config``; nothing else in dfray.budget parses one.

- ``available_node_types`` other than ``head_node_type`` are workers; a type is *spot* when
  ``node_config.InstanceMarketOptions.MarketType`` is ``spot``.
- EBS: the volumes listed in ``node_config.BlockDeviceMappings`` (a volume the template
  does not list, such as an AMI's default root volume, is not seen).
- Public IPv4: on an ``aws`` provider every node is counted with one public address unless
  its ``NetworkInterfaces`` say ``AssociatePublicIpAddress: false`` (a subnet that maps
  public IPs gives one whatever ``use_internal_ips`` says). Other providers: none.
- A worker type is recognised in ``ray.nodes()`` by a *marker* resource that only it
  declares in ``resources`` (e.g. ``dfray_node_gpu_worker: 1``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

HEAD_RESOURCE = "node:__internal_head__"
# Resources every Ray node may have; anything else in a node type's `resources` is a marker.
STANDARD_RESOURCES = frozenset({"CPU", "GPU", "TPU", "memory", "object_store_memory"})


@dataclass(frozen=True)
class Volume:
    size_gb: float
    volume_type: str


@dataclass(frozen=True)
class NodeType:
    name: str
    head: bool
    instance_type: str | None
    spot: bool | None
    resources: dict = field(hash=False, compare=True)
    markers: frozenset = frozenset()
    min_workers: int = 0
    max_workers: int = 0
    volumes: tuple[Volume, ...] = ()
    public_ipv4: int = 0
    on_aws: bool = False

    @property
    def market(self) -> str:
        return "spot" if self.spot else "on_demand"


def _is_marker(resource: str) -> bool:
    return not (
        resource in STANDARD_RESOURCES
        or resource.startswith("node:")
        or resource.startswith("accelerator_type:")
    )


def _volumes(nc: Mapping[str, Any]) -> tuple[Volume, ...]:
    out = []
    for bdm in nc.get("BlockDeviceMappings") or []:
        ebs = bdm.get("Ebs") or {}
        if ebs.get("VolumeSize"):
            out.append(Volume(float(ebs["VolumeSize"]), str(ebs.get("VolumeType", "gp2"))))
    return tuple(out)


def _public_ipv4(nc: Mapping[str, Any], on_aws: bool) -> int:
    if not on_aws:
        return 0
    nics = nc.get("NetworkInterfaces") or []
    if nics and all(n.get("AssociatePublicIpAddress") is False for n in nics):
        return 0
    return 1


class NodeTypes:
    """The node types of a Ray cluster config, and which type a Ray node is."""

    def __init__(self, types: Iterable[NodeType], max_workers: int | None = None):
        self.by_name = {t.name: t for t in types}
        heads = [t for t in self.by_name.values() if t.head]
        self.head = heads[0] if heads else None
        self.max_workers = max_workers  # the config's global max_workers

    @classmethod
    def from_cluster_config(
        cls, config: Mapping[str, Any], instance_types: Mapping[str, str] | None = None
    ) -> NodeTypes:
        """``instance_types`` maps node type name -> instance type where the config's
        ``node_config.InstanceType`` is missing or should be overridden."""
        head = config.get("head_node_type")
        on_aws = (config.get("provider") or {}).get("type") == "aws"
        out = []
        for name, nt in (config.get("available_node_types") or {}).items():
            nc = nt.get("node_config") or {}
            itype = (instance_types or {}).get(name) or nc.get("InstanceType")
            market = str((nc.get("InstanceMarketOptions") or {}).get("MarketType", "")).lower()
            resources = dict(nt.get("resources") or {})
            out.append(
                NodeType(
                    name=name,
                    head=name == head,
                    instance_type=itype,
                    spot=(market == "spot") if itype else None,
                    resources=resources,
                    markers=frozenset(k for k in resources if _is_marker(k)),
                    min_workers=int(nt.get("min_workers", 0) or 0),
                    max_workers=int(nt.get("max_workers", 0) or 0),
                    volumes=_volumes(nc),
                    public_ipv4=_public_ipv4(nc, on_aws),
                    on_aws=on_aws,
                )
            )
        return cls(out, int(config.get("max_workers", 0) or 0))

    @property
    def workers(self) -> list[NodeType]:
        return [t for t in self.by_name.values() if not t.head]

    def original_limits(self) -> dict[str, Any]:
        """The worker limits the autoscaler cap saves and restores."""
        return {
            "max_workers": int(self.max_workers or 0),
            "types": {
                t.name: {"min_workers": t.min_workers, "max_workers": t.max_workers}
                for t in self.workers
            },
        }

    def classify(self, resources: Mapping[str, float]) -> NodeType | None:
        """The node type of a Ray node with these resources, or None when unknown."""
        if HEAD_RESOURCE in resources:
            return self.head
        keys = set(resources)
        matches = [t for t in self.workers if t.markers and t.markers <= keys]
        if matches:
            return max(matches, key=lambda t: len(t.markers))
        return None
