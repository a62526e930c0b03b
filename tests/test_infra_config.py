"""The Ray cluster launcher template infra/aws-cluster.yaml, and the spot-first scorer.

The structural expectations live in plain helper functions (``assert_ray_valid``,
``assert_template_structure``, ...) so that a render-then-validate test can apply the
same checks to a rendered config:

    from test_infra_config import assert_ray_valid, assert_template_structure

(pytest puts tests/ on sys.path for its test modules.)
"""

from __future__ import annotations

import copy
import importlib.util
import re
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
TEMPLATE_PATH = REPO / "infra" / "aws-cluster.yaml"
SCORER_PATH = REPO / "infra" / "ray_spot_fallback.py"
TERRAFORM_DIR = REPO / "terraform"

SCORER_REF = "ray_spot_fallback.spot_first_scorer"


# ----------------------------------------------------------------------- helpers


def load_template(path: Path | str = TEMPLATE_PATH) -> dict[str, Any]:
    with open(path) as f:
        config = yaml.safe_load(f)
    if not isinstance(config, dict):
        raise ValueError(f"{path} is not a YAML mapping")
    return config


def head_type_name(config: dict[str, Any]) -> str:
    return config["head_node_type"]


def head_node_type(config: dict[str, Any]) -> dict[str, Any]:
    return config["available_node_types"][head_type_name(config)]


def worker_node_types(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    head = head_type_name(config)
    return {k: v for k, v in config["available_node_types"].items() if k != head}


def is_spot(node_type: dict[str, Any]) -> bool:
    market = (node_type.get("node_config") or {}).get("InstanceMarketOptions") or {}
    return str(market.get("MarketType", "")).lower() == "spot"


def assert_ray_valid(config: dict[str, Any]) -> dict[str, Any]:
    """Ray's own checks: the JSON schema as is, and again after Ray fills in defaults
    (``prepare_config``: defaults.yaml merge, setup-command merge, per-type max_workers).
    Neither calls AWS. Returns the prepared config."""
    pytest.importorskip("ray", reason="ray is not installed")
    from ray.autoscaler._private.util import prepare_config, validate_config

    validate_config(copy.deepcopy(config))
    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    return prepared


def assert_template_structure(config: dict[str, Any]) -> None:
    """What dfray relies on in any version of the AWS cluster config, template or rendered."""
    assert config["provider"]["type"] == "aws"
    # The head role has no ec2:StopInstances/StartInstances: idle nodes must be terminated.
    assert config["provider"].get("cache_stopped_nodes") is False
    assert config["idle_timeout_minutes"] == 5
    assert config["auth"]["ssh_user"] == "ubuntu"

    head = head_node_type(config)
    assert head.get("resources", {}).get("GPU", 0) == 0, "the head must not advertise GPUs"
    assert head.get("resources", {}).get("CPU", 0) <= 1, "work belongs on the workers"
    assert "Arn" in head["node_config"].get("IamInstanceProfile", {})
    assert "InstanceMarketOptions" not in head["node_config"], "the head must be on-demand"

    workers = worker_node_types(config)
    assert workers, "no worker node types"
    for name, nt in workers.items():
        assert nt.get("min_workers", 0) == 0, f"{name}: workers must scale from zero"
        assert "max_workers" in nt, f"{name}: max_workers missing"
        assert nt["resources"].get("GPU", 0) >= 1, f"{name}: not a GPU type"
        assert nt["resources"].get("CPU", 0) >= 1, f"{name}: no CPUs for decoding"
        nc = nt["node_config"]
        assert "Arn" in nc.get("IamInstanceProfile", {}), f"{name}: no instance profile"
        assert nc.get("InstanceType"), f"{name}: no InstanceType"

    assert any(is_spot(nt) for nt in workers.values()), "no spot worker type"
    assert any(not is_spot(nt) for nt in workers.values()), "no on-demand fallback type"

    for name, nt in config["available_node_types"].items():
        nc = nt["node_config"]
        # terraform/iam.tf only lets the head launch instances with IMDSv2 enforced.
        assert nc.get("MetadataOptions", {}).get("HttpTokens") == "required", name
        assert nc.get("SubnetIds"), f"{name}: no SubnetIds"
        assert nc.get("SecurityGroupIds"), f"{name}: no SecurityGroupIds"
        assert nc.get("ImageId", "").startswith("ami-"), f"{name}: no ImageId"


def spot_names_follow_convention(config: dict[str, Any]) -> bool:
    """infra/ray_spot_fallback.py recognises spot types by the ``_spot`` name suffix."""
    return all(
        name.endswith("_spot") == is_spot(nt) for name, nt in worker_node_types(config).items()
    )


def terraform_list_default(variable: str) -> list[str]:
    """The default of a list(string) variable in terraform/variables.tf."""
    text = (TERRAFORM_DIR / "variables.tf").read_text()
    m = re.search(r'variable\s+"' + re.escape(variable) + r'"\s*\{(.*?)\n\}', text, re.S)
    assert m, f"variable {variable} not found in terraform/variables.tf"
    d = re.search(r"default\s*=\s*\[(.*?)\]", m.group(1), re.S)
    assert d, f"variable {variable} has no list default"
    return re.findall(r'"([^"]*)"', d.group(1))


def load_scorer_module():
    spec = importlib.util.spec_from_file_location("ray_spot_fallback", SCORER_PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ------------------------------------------------------------------------- tests


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return load_template()


def test_template_passes_ray_validation(template):
    prepared = assert_ray_valid(template)
    # prepare_config merged the common setup into head/worker setup commands.
    assert any("pip install" in c and "dfray" in c for c in prepared["worker_setup_commands"])


def test_template_structure(template):
    assert_template_structure(template)


def test_expected_node_types(template):
    workers = worker_node_types(template)
    expected = {
        "gpu_g4dn_spot": ("g4dn.xlarge", True),
        "gpu_g5_spot": ("g5.xlarge", True),
        "gpu_g6_spot": ("g6.xlarge", True),
        "gpu_g4dn_ondemand": ("g4dn.xlarge", False),
    }
    for name, (itype, spot) in expected.items():
        assert name in workers, f"missing node type {name}"
        assert workers[name]["node_config"]["InstanceType"] == itype
        assert is_spot(workers[name]) is spot
        assert workers[name]["resources"] == {"CPU": 4, "GPU": 1}
    assert head_node_type(template)["resources"] == {"CPU": 0}


def test_template_is_a_template(template):
    # The renderer writes the budget cap; the template itself launches nothing.
    assert template["max_workers"] == 0
    assert all(nt["max_workers"] == 0 for nt in worker_node_types(template).values())
    # No YAML anchors/aliases: a shared sub-dict would be shared after rendering too.
    events = yaml.parse(TEMPLATE_PATH.read_text())
    assert not [e for e in events if getattr(e, "anchor", None)], "no YAML anchors/aliases"


def test_head_iam_policy_allows_exactly_the_template_worker_types(template):
    allowed = terraform_list_default("worker_instance_types")
    used = {nt["node_config"]["InstanceType"] for nt in worker_node_types(template).values()}
    assert sorted(allowed) == sorted(used), (
        f"terraform var.worker_instance_types {allowed} must equal the template's worker "
        f"types {sorted(used)}: no type the head could not launch, none it need not"
    )


def test_worker_volumes_fit_the_head_iam_volume_conditions(template):
    text = (TERRAFORM_DIR / "variables.tf").read_text()
    m = re.search(r'variable\s+"worker_volume_max_gb"\s*\{.*?default\s*=\s*(\d+)', text, re.S)
    assert m, "terraform var.worker_volume_max_gb missing"
    cap = int(m.group(1))
    for name, nt in worker_node_types(template).items():
        for bdm in nt["node_config"]["BlockDeviceMappings"]:
            ebs = bdm["Ebs"]
            assert ebs["VolumeType"] == "gp3" and ebs["Encrypted"] is True, name
            assert ebs["DeleteOnTermination"] is True, name
            assert ebs["VolumeSize"] <= cap, (name, ebs["VolumeSize"], cap)


def test_cluster_name_matches_terraform_default(template):
    text = (TERRAFORM_DIR / "variables.tf").read_text()
    m = re.search(r'variable\s+"cluster_name"\s*\{.*?default\s*=\s*"([^"]+)"', text, re.S)
    assert m and m.group(1) == template["cluster_name"]


def test_dfray_is_synced_and_installed(template):
    assert template["file_mounts"].get("/home/ubuntu/dfray") == "."
    setup = " ".join(template["setup_commands"])
    assert "pip install -q -e /home/ubuntu/dfray" in setup
    assert re.search(r'"ray\[default,data\]==[0-9.]+"', setup), "pin Ray on every node"


def test_head_starts_autoscaler_with_spot_first_scorer(template):
    start = " ".join(template["head_start_ray_commands"])
    assert f"RAY_AUTOSCALER_UTILIZATION_SCORER={SCORER_REF}" in start
    assert "$HOME/dfray/infra" in start  # where file_mounts puts infra/ on the head
    assert spot_names_follow_convention(template)


def test_scorer_loads_the_way_ray_loads_it(monkeypatch):
    pytest.importorskip("ray", reason="ray is not installed")
    from ray.autoscaler._private.loader import load_function_or_class

    monkeypatch.syspath_prepend(str(SCORER_PATH.parent))
    assert callable(load_function_or_class(SCORER_REF))


def _pick(template, failed: list[str], demand: int = 3) -> dict[str, int]:
    """Node types Ray's v1 scheduler launches for ``demand`` 1-GPU tasks when the
    types in ``failed`` have a recorded launch failure."""
    pytest.importorskip("ray", reason="ray is not installed")
    from ray.autoscaler._private.node_provider_availability_tracker import (
        NodeAvailabilityRecord,
        NodeAvailabilitySummary,
        UnavailableNodeInformation,
    )
    from ray.autoscaler._private.resource_demand_scheduler import get_nodes_for

    scorer = load_scorer_module().spot_first_scorer
    summary = NodeAvailabilitySummary(
        node_availabilities={
            t: NodeAvailabilityRecord(
                node_type=t,
                is_available=False,
                last_checked_timestamp=0.0,
                unavailable_node_information=UnavailableNodeInformation(
                    category="InsufficientInstanceCapacity", description="test"
                ),
            )
            for t in failed
        }
    )
    node_types = copy.deepcopy(template["available_node_types"])
    for name, nt in node_types.items():
        nt["max_workers"] = 0 if name == template["head_node_type"] else 10
    to_add, _ = get_nodes_for(
        node_types,
        {},
        template["head_node_type"],
        10,
        [{"GPU": 1}] * demand,
        partial(scorer, node_availability_summary=summary),
    )
    return dict(to_add)


def test_scorer_prefers_spot(template):
    picked = _pick(template, failed=[])
    assert picked and all(is_spot(template["available_node_types"][t]) for t in picked)


def test_scorer_moves_to_next_spot_type_after_a_launch_failure(template):
    first = next(iter(_pick(template, failed=[])))
    second = _pick(template, failed=[first])
    assert first not in second
    assert all(is_spot(template["available_node_types"][t]) for t in second)


def test_scorer_falls_back_to_on_demand_when_all_spot_types_failed(template):
    spot = [n for n, nt in worker_node_types(template).items() if is_spot(nt)]
    picked = _pick(template, failed=spot)
    assert picked == {"gpu_g4dn_ondemand": 3}


def test_scorer_keeps_trying_when_everything_failed(template):
    picked = _pick(template, failed=list(worker_node_types(template)))
    assert sum(picked.values()) == 3
