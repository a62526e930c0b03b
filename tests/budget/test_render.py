"""Cluster render: budget-capped max_workers re-derived here, node-type policy, settings from
arguments and terraform outputs, Ray schema validation, clear errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml

from dfray.budget.prices import PriceBook
from dfray.budget.render import (
    RenderError,
    budget_max_workers,
    render_cluster,
    validate_ray_config,
    worker_types,
)
from dfray.cli import main

REPO = Path(__file__).resolve().parents[2]
INFRA_TEMPLATE = REPO / "infra" / "aws-cluster.yaml"

# The shape infra/aws-cluster.yaml has: CPU head `head`, GPU worker types, spot and an
# on-demand fallback, min_workers 0. Used so these tests do not depend on that file's
# details; test_infra_template_* below use the real one.
TEMPLATE = {
    "cluster_name": "dfray",
    "max_workers": 8,
    "upscaling_speed": 1.0,
    "idle_timeout_minutes": 5,
    "provider": {
        "type": "aws",
        "region": "us-east-1",
        "availability_zone": "us-east-1a,us-east-1b",
        "cache_stopped_nodes": False,
    },
    "auth": {"ssh_user": "ubuntu"},
    "available_node_types": {
        "head": {
            "resources": {"CPU": 0},
            "node_config": {"InstanceType": "m6i.xlarge", "ImageId": "ami-0123456789abcdef0"},
        },
        "gpu_g4dn_spot": {
            "min_workers": 0,
            "max_workers": 8,
            "resources": {},
            "node_config": {
                "InstanceType": "g4dn.xlarge",
                "ImageId": "ami-0123456789abcdef0",
                "InstanceMarketOptions": {"MarketType": "spot"},
            },
        },
        "gpu_g5_spot": {
            "min_workers": 0,
            "max_workers": 8,
            "resources": {},
            "node_config": {
                "InstanceType": "g5.xlarge",
                "ImageId": "ami-0123456789abcdef0",
                "InstanceMarketOptions": {"MarketType": "spot"},
            },
        },
        "gpu_g6_spot": {
            "min_workers": 0,
            "max_workers": 8,
            "resources": {},
            "node_config": {
                "InstanceType": "g6.xlarge",
                "ImageId": "ami-0123456789abcdef0",
                "InstanceMarketOptions": {"MarketType": "spot"},
            },
        },
        "gpu_g4dn_ondemand": {
            "min_workers": 0,
            "max_workers": 8,
            "resources": {},
            "node_config": {"InstanceType": "g4dn.xlarge", "ImageId": "ami-0123456789abcdef0"},
        },
    },
    "head_node_type": "head",
    "setup_commands": [],
}

PRICES = {
    "g4dn.xlarge:spot": 0.2,
    "g4dn.xlarge:on_demand": 0.5,
    "g5.xlarge:spot": 0.4,
    "g5.xlarge:on_demand": 1.0,
    "g6.xlarge:spot": 0.3,
    "g6.xlarge:on_demand": 0.8,
    "m6i.xlarge": 0.1,
}
PRICE_ARGS = [a for k, v in PRICES.items() for a in ("--price", f"{k}={v}")]


@pytest.fixture(autouse=True)
def no_aws(monkeypatch, tmp_path):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("HOME", str(tmp_path))


@pytest.fixture
def template_file(tmp_path):
    path = tmp_path / "aws-cluster.yaml"
    path.write_text(yaml.safe_dump(TEMPLATE, sort_keys=False))
    return str(path)


# On an aws provider every node also costs one public IPv4 ($0.005/h) and the S3 request
# allowance ($0.01/h); 2% of the budget is the reserve (dfray.budget.cost).
EXTRA = 0.005 + 0.01
RESERVE = 0.02


def expected_cap(budget, hours, head, worker, margin=0.0, reserve=RESERVE, extra=EXTRA):
    usable = budget * (1 - reserve) / (1 + margin)
    head, worker = head + extra, worker + extra
    return max(0, math.floor((usable - head * hours) / (worker * hours) + 1e-9))


def render_cli(tmp_path, template, *args):
    out = tmp_path / "cluster.yaml"
    rc = main(
        ["cluster", "render", "--template", template, "--offline", *PRICE_ARGS, "-o", str(out),
         *args]
    )  # fmt: skip
    return rc, out


def test_render_spot_with_fallback_for_one_type(tmp_path, template_file, capsys):
    rc, out = render_cli(
        tmp_path, template_file, "--budget", "100", "--deadline", "8h",
        "--instance-type", "g4dn.xlarge",
    )  # fmt: skip
    assert rc == 0, capsys.readouterr().err
    text = out.read_text()
    cfg = yaml.safe_load(text)
    # spot g4dn + its on-demand fallback are enabled; the cap is priced at the dearer one:
    # floor((98 − 0.115 × 8) / (0.515 × 8)) = floor(97.08 / 4.12) = 23
    cap = expected_cap(100, 8, 0.1, 0.5)
    assert cap == 23
    assert cfg["max_workers"] == cap
    nts = cfg["available_node_types"]
    assert nts["gpu_g4dn_spot"]["max_workers"] == cap
    assert nts["gpu_g4dn_ondemand"]["max_workers"] == cap
    assert nts["gpu_g5_spot"]["max_workers"] == 0
    assert nts["gpu_g6_spot"]["max_workers"] == 0
    # worst case inside the budget
    assert (0.115 + cap * 0.515) * 8 <= 98 < (0.115 + (cap + 1) * 0.515) * 8
    # the spot type may not cost more than the price the cap paid for
    spot_opts = nts["gpu_g4dn_spot"]["node_config"]["InstanceMarketOptions"]
    assert spot_opts == {"MarketType": "spot", "SpotOptions": {"MaxPrice": "0.5000"}}
    # the header records the arithmetic and the price sources
    header = [line for line in text.splitlines() if line.startswith("#")]
    assert any("max_workers = floor(" in line and line.endswith(f"= {cap}") for line in header)
    assert sum("[override" in line for line in header) >= 3  # head + two worker types
    validate_ray_config(cfg)


def test_render_no_fallback_caps_at_spot_price(tmp_path, template_file):
    rc, out = render_cli(
        tmp_path, template_file, "--budget", "100", "--deadline", "8h",
        "--instance-type", "g4dn.xlarge", "--no-fallback",
    )  # fmt: skip
    assert rc == 0
    cfg = yaml.safe_load(out.read_text())
    cap = expected_cap(100, 8, 0.1, 0.2)  # floor(97.08 / 1.72) = 56
    assert cfg["max_workers"] == cap == 56
    spot = cfg["available_node_types"]["gpu_g4dn_spot"]["node_config"]
    assert spot["InstanceMarketOptions"]["SpotOptions"]["MaxPrice"] == "0.2000"
    assert cfg["available_node_types"]["gpu_g4dn_ondemand"]["max_workers"] == 0
    validate_ray_config(cfg)


def test_render_all_spot_types(tmp_path, template_file):
    rc, out = render_cli(tmp_path, template_file, "--budget", "50", "--deadline", "90m")
    assert rc == 0
    cfg = yaml.safe_load(out.read_text())
    # enabled: every spot type + the on-demand g4dn fallback; cap price = max(0.2, 0.4, 0.3, 0.5)
    cap = expected_cap(50, 1.5, 0.1, 0.5)
    assert cfg["max_workers"] == cap
    for name in ("gpu_g4dn_spot", "gpu_g5_spot", "gpu_g6_spot", "gpu_g4dn_ondemand"):
        assert cfg["available_node_types"][name]["max_workers"] == cap
    validate_ray_config(cfg)


def test_render_on_demand_with_margin_and_limit(tmp_path, template_file):
    rc, out = render_cli(
        tmp_path, template_file, "--budget", "100", "--deadline", "4h", "--on-demand",
        "--margin", "0.2",
    )  # fmt: skip
    assert rc == 0
    cfg = yaml.safe_load(out.read_text())
    cap = expected_cap(100, 4, 0.1, 0.5, margin=0.2)  # floor((81.67 − 0.46) / 2.06) = 39
    assert cfg["max_workers"] == cap == 39
    assert cfg["available_node_types"]["gpu_g4dn_ondemand"]["max_workers"] == cap
    assert cfg["available_node_types"]["gpu_g4dn_spot"]["max_workers"] == 0

    rc, out = render_cli(
        tmp_path, template_file, "--budget", "100", "--deadline", "4h", "--on-demand",
        "--max-workers", "10",
    )  # fmt: skip
    assert rc == 0
    assert yaml.safe_load(out.read_text())["max_workers"] == 10


def test_render_fills_settings_from_args_and_tf_outputs(tmp_path, template_file):
    tf = tmp_path / "tf.json"
    tf.write_text(
        json.dumps(
            {
                "region": {"value": "us-west-2", "type": "string", "sensitive": False},
                "cluster_name": {"value": "dfray-prod", "type": "string", "sensitive": False},
                "subnet_ids": {"value": ["subnet-aaa", "subnet-bbb"], "type": ["list", "string"]},
                "security_group_id": {"value": "sg-123", "type": "string"},
                "head_instance_profile_arn": {"value": "arn:aws:iam::1:instance-profile/head"},
                "worker_instance_profile_arn": {"value": "arn:aws:iam::1:instance-profile/wk"},
            }
        )
    )
    rc, out = render_cli(
        tmp_path, template_file, "--budget", "100", "--deadline", "8h", "--tf-outputs", str(tf),
        "--security-group-id", "sg-override",
    )  # fmt: skip
    assert rc == 0
    cfg = yaml.safe_load(out.read_text())
    assert cfg["provider"]["region"] == "us-west-2"
    assert "availability_zone" not in cfg["provider"]  # the subnets decide the AZs
    assert cfg["cluster_name"] == "dfray-prod"
    nts = cfg["available_node_types"]
    for name, nt in nts.items():
        nc = nt["node_config"]
        assert nc["SubnetIds"] == ["subnet-aaa", "subnet-bbb"]
        assert nc["SecurityGroupIds"] == ["sg-override"]  # an argument beats the tf output
        role = "head" if name == "head" else "wk"
        assert nc["IamInstanceProfile"] == {"Arn": f"arn:aws:iam::1:instance-profile/{role}"}
    validate_ray_config(cfg)


def test_render_comma_separated_subnets(tmp_path, template_file):
    # terraform's cluster_render_args output passes `--subnet-ids a,b`
    rc, out = render_cli(
        tmp_path, template_file, "--budget", "100", "--deadline", "8h",
        "--subnet-ids", "subnet-a,subnet-b", "--region", "eu-west-1",
    )  # fmt: skip
    assert rc == 0
    cfg = yaml.safe_load(out.read_text())
    assert cfg["provider"]["region"] == "eu-west-1"
    assert cfg["available_node_types"]["head"]["node_config"]["SubnetIds"] == [
        "subnet-a",
        "subnet-b",
    ]


def test_budget_too_small_is_a_clear_error(tmp_path, template_file, capsys):
    rc, out = render_cli(
        tmp_path, template_file, "--budget", "3", "--deadline", "8h",
        "--instance-type", "g4dn.xlarge",
    )  # fmt: skip
    err = capsys.readouterr().err
    assert rc != 0
    assert "cannot pay for one worker until the deadline" in err
    assert "$5.14" in err  # (0.115 + 0.515) × 8 / 0.98: the least budget for one worker
    assert not out.exists()


def test_unknown_instance_type_is_a_clear_error(tmp_path, template_file, capsys):
    rc, _ = render_cli(
        tmp_path, template_file, "--budget", "100", "--deadline", "8h",
        "--instance-type", "p3.2xlarge",
    )  # fmt: skip
    assert rc == 2
    assert "no p3.2xlarge spot worker type" in capsys.readouterr().err


def test_budget_max_workers_unit():
    assert budget_max_workers(100, 8, 0.1, 0.5) == 24  # floor((98 − 0.8) / 4)
    assert budget_max_workers(4.8, 8, 0.1, 0.5, reserve=0) == 1  # exactly one worker
    assert budget_max_workers(4.79, 8, 0.1, 0.5, reserve=0) == 0
    assert budget_max_workers(4.8, 8, 0.1, 0.5) == 0  # the reserve is held back
    assert budget_max_workers(0.5, 8, 0.1, 0.5) == 0  # the head alone eats the budget
    with pytest.raises(RenderError):
        budget_max_workers(100, 0, 0.1, 0.5)


def test_render_cluster_api_keeps_template_untouched():
    book = PriceBook("us-east-1", offline=True, overrides=PRICES, cache_dir="/nonexistent")
    result = render_cluster(
        TEMPLATE, budget_usd=100, deadline_s=8 * 3600, prices=book, instance_type="g5.xlarge"
    )
    assert result.max_workers == expected_cap(100, 8, 0.1, 0.4)  # no g5 on-demand fallback
    assert result.enabled == ("gpu_g5_spot",)
    assert TEMPLATE["max_workers"] == 8  # the template dict itself is not modified
    assert [w.name for w in worker_types(TEMPLATE)] == [
        "gpu_g4dn_spot",
        "gpu_g5_spot",
        "gpu_g6_spot",
        "gpu_g4dn_ondemand",
    ]
    validate_ray_config(result.config)


# -- the real template ------------------------------------------------------------------------

needs_infra = pytest.mark.skipif(
    not INFRA_TEMPLATE.exists(), reason="infra/aws-cluster.yaml not in this checkout"
)


def ebs_per_hour(node_type):
    """gp3 $0.08/GB-month over 730 h, from the node type's BlockDeviceMappings."""
    gb = {"gp3": 0.08, "gp2": 0.10}
    return sum(
        m["Ebs"]["VolumeSize"] * gb[m["Ebs"].get("VolumeType", "gp2")] / 730
        for m in node_type["node_config"].get("BlockDeviceMappings", [])
        if "Ebs" in m
    )


@needs_infra
def test_infra_template_renders_and_validates(tmp_path, capsys):
    template = yaml.safe_load(INFRA_TEMPLATE.read_text())
    nts = template["available_node_types"]
    head_nt = nts[template["head_node_type"]]
    head = head_nt["node_config"]["InstanceType"]
    workers = worker_types(template)
    g4dn_spot = [w for w in workers if w.instance_type == "g4dn.xlarge" and w.market == "spot"]
    assert g4dn_spot, "the template should have a g4dn.xlarge spot worker type"
    enabled = {w.name for w in workers if w.instance_type == "g4dn.xlarge"}

    prices = {"g4dn.xlarge:spot": 0.2, "g4dn.xlarge:on_demand": 0.5, head: 0.1}
    out = tmp_path / "cluster.yaml"
    price_args = [a for k, v in prices.items() for a in ("--price", f"{k}={v}")]
    rc = main(
        ["cluster", "render", "--template", str(INFRA_TEMPLATE), "--offline", *price_args,
         "--budget", "100", "--deadline", "8h", "--instance-type", "g4dn.xlarge",
         "--subnet-ids", "subnet-0a1b2c3d4e5f60718", "subnet-0a1b2c3d4e5f60719",
         "--security-group-id", "sg-0a1b2c3d4e5f60718", "--image-id", "ami-0a1b2c3d4e5f60718",
         "--head-profile", "arn:aws:iam::123456789012:instance-profile/dfray-head",
         "--worker-profile", "arn:aws:iam::123456789012:instance-profile/dfray-worker",
         "--cluster-name", "dfray-test", "--region", "us-east-1", "-o", str(out)]
    )  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 0, err
    assert "placeholder" not in err
    text = out.read_text()
    cfg = yaml.safe_load(text)
    # the cap is priced at the dearest enabled type, instance + EBS
    rates = {
        w.name: (0.2 if w.market == "spot" else 0.5) + ebs_per_hour(nts[w.name])
        for w in workers
        if w.name in enabled
    }
    head_rate = 0.1 + ebs_per_hour(head_nt)
    cap = expected_cap(100, 8, head_rate, max(rates.values()))
    assert cap > 0
    assert cfg["max_workers"] == cap
    for w in workers:
        want = cap if w.name in enabled else 0
        assert cfg["available_node_types"][w.name]["max_workers"] == want, w.name
    assert cfg["cluster_name"] == "dfray-test"
    assert cfg["provider"]["region"] == "us-east-1"
    for nt in cfg["available_node_types"].values():
        assert nt["node_config"]["ImageId"] == "ami-0a1b2c3d4e5f60718"
    assert "STILL PLACEHOLDERS" not in text
    validate_ray_config(cfg)


@needs_infra
def test_infra_template_placeholders_are_flagged(tmp_path, capsys):
    out = tmp_path / "cluster.yaml"
    rc = main(
        ["cluster", "render", "--template", str(INFRA_TEMPLATE), "--offline", "--budget", "500",
         "--deadline", "8h", "--region", "us-east-1", "-o", str(out)]
    )  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 0, err
    assert "placeholders" in err and "SubnetIds" in err
    assert "# STILL PLACEHOLDERS" in out.read_text()
    assert "static:" in out.read_text()  # offline: price sources are the static table


@needs_infra
def test_rendered_head_runs_the_v1_autoscaler_even_under_ray_up(tmp_path):
    """`ray up` (Ray 2.60) prefixes `export RAY_enable_autoscaler_v2=1;` to the head's start
    commands; the rendered command still starts Ray with v2 off (run in a shell here)."""
    import re
    import subprocess

    from ray.autoscaler._private.util import with_envs

    book = PriceBook("us-east-1", offline=True, overrides=PRICES, cache_dir="/nonexistent")
    template = yaml.safe_load(INFRA_TEMPLATE.read_text())
    template["head_start_ray_commands"] = [
        c.replace("export RAY_enable_autoscaler_v2=0;", "")
        for c in template["head_start_ray_commands"]
    ]  # an older template without the pin: render adds it
    for t in (template, yaml.safe_load(INFRA_TEMPLATE.read_text())):
        result = render_cluster(
            t, budget_usd=100, deadline_s=8 * 3600, prices=book, instance_type="g4dn.xlarge"
        )
        (cmd,) = [c for c in result.config["head_start_ray_commands"] if "ray start" in c]
        probe = re.sub(r"ray start --head.*", "echo $RAY_enable_autoscaler_v2", cmd, flags=re.S)
        probe = re.sub(r"ulimit -n \d+;", "", probe)
        (as_ray_up,) = with_envs([probe], {"RAY_enable_autoscaler_v2": "1"})
        out = subprocess.run(["bash", "-c", as_ray_up], capture_output=True, text=True)
        assert out.stdout.strip() == "0", (as_ray_up, out.stderr)
        assert "autoscaler v1 pinned" in result.header
