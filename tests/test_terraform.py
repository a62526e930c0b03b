"""terraform/: offline `fmt -check` / `init` / `validate`, plus static checks of the key
security and budget properties on the .tf text.

The terraform CLI checks need the terraform binary and a local provider mirror
(``TF_PLUGIN_DIR``, default /opt/tf-plugins); without them they are skipped loudly.
The text checks need neither and always run. checkov runs in .ci/terraform.sh, not here.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TF_DIR = REPO / "terraform"
CI_SCRIPT = REPO / ".ci" / "terraform.sh"
TF_PLUGIN_DIR = Path(os.environ.get("TF_PLUGIN_DIR", "/opt/tf-plugins"))


# --------------------------------------------------------------- HCL text helpers


def tf_text() -> str:
    """All .tf files of terraform/, comments removed (so commented-out code never passes)."""
    parts = []
    for path in sorted(TF_DIR.glob("*.tf")):
        lines = []
        for line in path.read_text().splitlines():
            stripped = line.lstrip()
            if stripped.startswith("#") or stripped.startswith("//"):
                continue
            lines.append(line)
        parts.append("\n".join(lines))
    return "\n".join(parts)


def block(text: str, kind: str, *labels: str) -> str:
    """Body of the first ``kind "label" ... {`` block (brace-matched), e.g.
    ``block(t, "resource", "aws_budgets_budget", "burn")``."""
    head = (
        r"\b" + re.escape(kind) + "".join(r'\s+"' + re.escape(x) + '"' for x in labels) + r"\s*\{"
    )
    m = re.search(head, text)
    if not m:
        raise AssertionError(f"no {kind} {' '.join(labels)} block in terraform/*.tf")
    depth, i = 1, m.end()
    while depth:
        if i >= len(text):
            raise AssertionError(f"unbalanced braces after {kind} {' '.join(labels)}")
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        i += 1
    return text[m.end() : i - 1]


def attr(body: str, name: str) -> str | None:
    m = re.search(r"^\s*" + re.escape(name) + r"\s*=\s*(.+?)\s*$", body, re.M)
    return m.group(1) if m else None


def statements(policy_doc_body: str) -> list[str]:
    """The ``statement { ... }`` bodies of an aws_iam_policy_document."""
    out, rest = [], policy_doc_body
    while re.search(r"\bstatement\s*\{", rest):
        body = block(rest, "statement")
        out.append(body)
        rest = rest[rest.index(body) + len(body) :]
    return out


@pytest.fixture(scope="module")
def tf() -> str:
    return tf_text()


# ----------------------------------------------------------------- terraform CLI


def _terraform_env() -> dict[str, str]:
    env = dict(os.environ, TF_IN_AUTOMATION="1", CHECKPOINT_DISABLE="1", TF_INPUT="0")
    cfg = env.get("TF_CLI_CONFIG_FILE")
    if cfg and not Path(cfg).is_file():
        env.pop("TF_CLI_CONFIG_FILE")  # a missing CLI config only adds warnings
    return env


def _normal_policy() -> None:
    """In the child before exec: the time-sharing scheduler, not an inherited real-time one."""
    if hasattr(os, "sched_setscheduler"):
        os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))


def _run(args: list[str], cwd: Path, timeout_s: float = 300) -> subprocess.CompletedProcess:
    """Run terraform in its own session with no stdin; on timeout the whole process group
    (terraform and its provider plugins) is killed, so a stuck plugin cannot hang the test.
    coreutils `timeout` kills it too, from its own process: a CI run once saw `terraform
    validate` and its provider spin on both cores for 15 minutes while this process, starved,
    never reached its own timeout. Another (/tmp/ci10, 2026-12-07) found the test process
    itself under SCHED_FIFO at priority 99 (set from outside the suite): terraform and
    `timeout` inherited it, terraform's spinning threads held both cores, and `timeout`,
    runnable, never ran. So they start under the normal policy whatever this process has."""
    if shutil.which("timeout"):
        args = ["timeout", "-k", "10", str(int(timeout_s)), *args]
    proc = subprocess.Popen(
        args, cwd=cwd, env=_terraform_env(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, start_new_session=True, preexec_fn=_normal_policy,
    )
    try:
        out, err = proc.communicate(timeout=timeout_s + 30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"`{' '.join(args)}` did not finish in {timeout_s:.0f}s\n{out}\n{err}")
    assert proc.returncode == 0, (
        f"`{' '.join(args)}` exited {proc.returncode}\n"
        f"--- stdout ---\n{out}\n--- stderr ---\n{err}"
    )
    return subprocess.CompletedProcess(args, proc.returncode, out, err)


@pytest.fixture(scope="module")
def terraform_bin() -> str:
    exe = shutil.which("terraform")
    if exe is None:
        pytest.skip(
            "!!! terraform binary NOT FOUND on PATH: terraform fmt/init/validate NOT CHECKED !!!"
        )
    if not TF_PLUGIN_DIR.is_dir():
        pytest.skip(
            f"!!! terraform provider mirror {TF_PLUGIN_DIR} (TF_PLUGIN_DIR) MISSING: "
            "terraform init/validate NOT CHECKED !!!"
        )
    return exe


def test_terraform_fmt_init_validate(terraform_bin, tmp_path):
    work = tmp_path / "terraform"
    shutil.copytree(
        TF_DIR, work, ignore=shutil.ignore_patterns(".terraform", "*.tfstate*", "*.tfvars")
    )
    _run([terraform_bin, "fmt", "-check", "-recursive", "-diff"], work)
    _run(
        [
            terraform_bin,
            "init",
            "-backend=false",
            "-input=false",
            "-no-color",
            f"-plugin-dir={TF_PLUGIN_DIR}",
        ],
        work,
    )
    out = _run([terraform_bin, "validate", "-no-color"], work)
    assert "The configuration is valid" in out.stdout


def test_ci_script_skips_loudly_without_terraform(tmp_path):
    # A PATH with bash and dirname only: the script must not find terraform.
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for tool in ("bash", "dirname"):
        found = shutil.which(tool)
        if found is None:
            pytest.skip(f"{tool} not available")
        (bindir / tool).symlink_to(found)
    proc = subprocess.run(
        [str(bindir / "bash"), str(CI_SCRIPT)],
        env={"PATH": str(bindir), "HOME": str(tmp_path)},
        capture_output=True,
        stdin=subprocess.DEVNULL,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "WARNING: terraform not found" in proc.stdout + proc.stderr


# --------------------------------------------------------------- static checks


def test_provider_pinned_to_aws_5(tf):
    versions = block(tf, "required_providers")
    assert re.search(r'source\s*=\s*"hashicorp/aws"', versions)
    assert re.search(r'version\s*=\s*">= 5\.0, < 6\.0"', versions)


def test_budget_excludes_credits_and_refunds(tf):
    budget = block(tf, "resource", "aws_budgets_budget", "burn")
    assert attr(budget, "budget_type") == '"COST"'
    assert attr(budget, "limit_amount") is not None and "var.budget_usd" in attr(
        budget, "limit_amount"
    )
    cost_types = block(budget, "cost_types")
    assert attr(cost_types, "include_credit") == "false"
    assert attr(cost_types, "include_refund") == "false"


def test_budget_notifications_50_80_100_and_forecast(tf):
    locals_text = tf[tf.index("budget_notifications") :]
    for threshold, kind in ((50, "ACTUAL"), (80, "ACTUAL"), (100, "ACTUAL"), (100, "FORECASTED")):
        assert re.search(
            r"threshold\s*=\s*" + str(threshold) + r',\s*type\s*=\s*"' + kind + '"', locals_text
        ), (threshold, kind)
    budget = block(tf, "resource", "aws_budgets_budget", "burn")
    assert "var.alert_emails" in budget


def test_budget_action_applies_deny_policy_to_head_role(tf):
    action = block(tf, "resource", "aws_budgets_budget_action", "stop_new_instances")
    assert attr(action, "action_type") == '"APPLY_IAM_POLICY"'
    assert attr(action, "approval_model") == '"AUTOMATIC"'
    assert attr(action, "notification_type") == '"ACTUAL"'
    threshold = block(action, "action_threshold")
    assert attr(threshold, "action_threshold_type") == '"PERCENTAGE"'
    assert attr(threshold, "action_threshold_value") == "100"
    iam_def = block(action, "iam_action_definition")
    assert attr(iam_def, "policy_arn") == "aws_iam_policy.deny_new_instances.arn"
    assert attr(iam_def, "roles") == "[aws_iam_role.head.name]"
    assert attr(action, "execution_role_arn") == "aws_iam_role.budget_action.arn"


def test_deny_policy_denies_run_instances(tf):
    policy = block(tf, "resource", "aws_iam_policy", "deny_new_instances")
    assert attr(policy, "policy") == "data.aws_iam_policy_document.deny_new_instances.json"
    doc = block(tf, "data", "aws_iam_policy_document", "deny_new_instances")
    (stmt,) = statements(doc)
    assert attr(stmt, "effect") == '"Deny"'
    assert '"ec2:RunInstances"' in stmt
    assert re.search(r'resources\s*=\s*\["\*"\]', stmt)


def test_budget_execution_role_trusts_budgets_and_is_scoped(tf):
    trust = block(tf, "data", "aws_iam_policy_document", "budgets_assume")
    assert '"budgets.amazonaws.com"' in trust
    perms = block(tf, "data", "aws_iam_policy_document", "budget_action")
    (stmt,) = statements(perms)
    assert attr(stmt, "resources") == "[aws_iam_role.head.arn]"
    assert "aws_iam_policy.deny_new_instances.arn" in stmt


def test_dashboard_and_ssh_only_from_operator_cidr(tf):
    for name, port in (("operator_ray_dashboard", 8265), ("operator_ssh", 22)):
        rule = block(tf, "resource", "aws_vpc_security_group_ingress_rule", name)
        assert attr(rule, "from_port") == str(port) and attr(rule, "to_port") == str(port)
        assert attr(rule, "cidr_ipv4") == "var.operator_cidr"
    # No ingress rule anywhere is open to the world.
    for m in re.finditer(r'resource\s+"aws_vpc_security_group_ingress_rule"\s+"(\w+)"', tf):
        body = block(tf, "resource", "aws_vpc_security_group_ingress_rule", m.group(1))
        assert "0.0.0.0/0" not in body and "::/0" not in body, m.group(1)
    intra = block(tf, "resource", "aws_vpc_security_group_ingress_rule", "intra_cluster")
    assert attr(intra, "referenced_security_group_id") == "aws_security_group.cluster.id"
    assert attr(intra, "ip_protocol") == '"-1"'
    # The VPC's default security group is emptied.
    default_sg = block(tf, "resource", "aws_default_security_group", "this")
    assert "ingress" not in default_sg and "egress" not in default_sg


@pytest.mark.parametrize(
    "cidr, ok",
    [
        ("0.0.0.0/0", False),
        ("0.0.0.0/1", False),
        ("128.0.0.0/1", False),
        ("10.0.0.0/15", False),
        ("not-a-cidr", False),
        ("10.0.0.0/16", True),
        ("203.0.113.7/32", True),
    ],
)
def test_operator_cidr_has_a_minimum_prefix(tf, tmp_path, cidr, ok):
    """terraform itself evaluates the variable's validation (no provider needed)."""
    exe = shutil.which("terraform")
    if exe is None:
        pytest.skip("!!! terraform NOT FOUND on PATH: operator_cidr validation NOT CHECKED !!!")
    var = block(tf, "variable", "operator_cidr")
    (tmp_path / "v.tf").write_text(
        'variable "operator_cidr" {' + var + "}\n"
        'output "o" {\n  value = var.operator_cidr\n}\n'
    )
    cmd = [exe, "plan", "-input=false", "-no-color", f"-var=operator_cidr={cidr}"]
    subprocess.run(
        [exe, "init", "-input=false", "-no-color"], cwd=tmp_path, check=True, capture_output=True
    )
    res = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True)
    assert (res.returncode == 0) == ok, res.stdout + res.stderr
    if not ok:
        assert "operator_cidr must be a valid IPv4 CIDR" in res.stdout + res.stderr


def test_results_bucket_versioned_private_encrypted_tls_only(tf):
    s3_locals = tf[tf.index("buckets = {") :]
    assert re.search(r"\bresults\s*=", s3_locals) and re.search(r"\bvideos\s*=", s3_locals)
    for kind in (
        "aws_s3_bucket_versioning",
        "aws_s3_bucket_public_access_block",
        "aws_s3_bucket_server_side_encryption_configuration",
        "aws_s3_bucket_ownership_controls",
        "aws_s3_bucket_lifecycle_configuration",
        "aws_s3_bucket_policy",
    ):
        body = block(tf, "resource", kind, "this")
        assert attr(body, "for_each") == "aws_s3_bucket.this", f"{kind} must cover every bucket"
    versioning = block(tf, "resource", "aws_s3_bucket_versioning", "this")
    assert attr(block(versioning, "versioning_configuration"), "status") == '"Enabled"'
    pab = block(tf, "resource", "aws_s3_bucket_public_access_block", "this")
    for flag in (
        "block_public_acls",
        "block_public_policy",
        "ignore_public_acls",
        "restrict_public_buckets",
    ):
        assert attr(pab, flag) == "true", flag
    sse = block(tf, "resource", "aws_s3_bucket_server_side_encryption_configuration", "this")
    assert attr(sse, "sse_algorithm") == '"aws:kms"'
    assert attr(block(tf, "resource", "aws_kms_key", "data"), "enable_key_rotation") == "true"
    tls = block(tf, "data", "aws_iam_policy_document", "bucket_tls_only")
    assert '"aws:SecureTransport"' in tls and '"Deny"' in tls


def test_head_role_only_manages_its_own_cluster(tf):
    doc = block(tf, "data", "aws_iam_policy_document", "head_autoscaler")
    by_sid = {re.search(r'sid\s*=\s*"(\w+)"', s).group(1): s for s in statements(doc)}
    launch = by_sid["LaunchOnlyThisClustersInstances"]
    assert '"ec2:RunInstances"' in launch
    assert '"aws:RequestTag/${local.ray_cluster_tag}"' in launch
    assert "var.cluster_name" in launch
    volumes = by_sid["LaunchOnlyCappedEncryptedGp3Volumes"]
    assert attr(volumes, "resources") == '["${local.ec2_arn_prefix}:volume/*"]'
    for key in ('"ec2:VolumeType"', '"ec2:VolumeSize"', '"ec2:Encrypted"'):
        assert key in volumes
    assert ":volume/*" not in by_sid["LaunchIntoThisClustersNetwork"]
    network = by_sid["LaunchIntoThisClustersNetwork"]
    assert "::image/${local.ami_id}" in network and "image/*" not in network
    terminate = by_sid["TerminateOnlyThisClustersInstances"]
    assert '"ec2:TerminateInstances"' in terminate and '"ec2:CreateTags"' not in terminate
    assert '"ec2:ResourceTag/${local.ray_cluster_tag}"' in terminate
    retag = by_sid["RetagOnlyRayKeysOfThisClustersInstances"]
    assert attr(retag, "actions") == '["ec2:CreateTags"]'
    assert '"ec2:ResourceTag/${local.ray_cluster_tag}"' in retag
    assert '"ForAllValues:StringEquals"' in retag and '"aws:TagKeys"' in retag
    assert "local.ray_mutable_tag_keys" in retag
    assert attr(by_sid["PassOnlyTheWorkerRole"], "resources") == "[aws_iam_role.worker.arn]"
    assert re.search(r'ray_cluster_tag\s*=\s*"ray-cluster-name"', tf)  # Ray's tag key
    # Terminate/RunInstances appear nowhere else without a cluster condition.
    for sid, stmt in by_sid.items():
        if '"ec2:TerminateInstances"' in stmt:
            assert sid == "TerminateOnlyThisClustersInstances"
        if '"ec2:CreateTags"' in stmt:
            assert sid in {"TagOnLaunch", "RetagOnlyRayKeysOfThisClustersInstances"}, sid
    # Workers: S3 and KMS only.
    worker_policies = re.findall(
        r'resource\s+"aws_iam_role_policy"\s+"\w+"\s*\{[^}]*role\s*=\s*aws_iam_role\.worker\.id[^}]*\}',
        tf,
    )
    assert len(worker_policies) == 1 and "cluster_data" in worker_policies[0]
    data = block(tf, "data", "aws_iam_policy_document", "cluster_data")
    actions = set(re.findall(r'"((?:[a-z0-9]+):[A-Za-z*]+)"', data))
    assert {a.split(":")[0] for a in actions} <= {"s3", "kms"}, actions
    assert not re.search(r'"s3:\*"', data)


def test_retag_keys_are_rays_and_never_the_cluster_name(tf):
    """The head may rewrite every tag Ray's AWS node provider sets on a running instance,
    and never ray-cluster-name (which would move an instance out of its cluster's ledger)."""
    from ray.autoscaler import tags

    m = re.search(r"ray_mutable_tag_keys\s*=\s*\[(.*?)\]", tf, re.S)
    assert m, "local.ray_mutable_tag_keys missing"
    keys = set(re.findall(r'"([^"]+)"', m.group(1)))
    ray_keys = {v for k, v in vars(tags).items() if k.startswith("TAG_RAY_")}
    expected = (ray_keys - {tags.TAG_RAY_CLUSTER_NAME, tags.TAG_RAY_NODE_NAME}) | {"Name"}
    assert keys == expected
    assert "ray-cluster-name" not in keys


def test_outputs_feed_the_renderer(tf):
    names = set(re.findall(r'output\s+"(\w+)"', tf))
    for needed in (
        "region",
        "cluster_name",
        "subnet_ids",
        "security_group_id",
        "head_instance_profile_arn",
        "worker_instance_profile_arn",
        "videos_bucket",
        "results_bucket",
        "cluster_render_args",
    ):
        assert needed in names, needed
    render = pytest.importorskip("dfray.budget.render", reason="renderer not importable")
    for key, aliases in render.TF_OUTPUT_ALIASES.items():
        assert names & set(aliases), f"no terraform output the renderer reads as {key}"


def test_cluster_render_args_are_accepted_by_dfray_cluster_render(tf):
    import argparse

    cluster = pytest.importorskip("dfray.commands.cluster", reason="renderer not importable")
    out = block(tf, "output", "cluster_render_args")
    flags = re.findall(r'"(--[a-z-]+)"', out)
    assert {
        "--region",
        "--subnet-ids",
        "--security-group-id",
        "--head-profile",
        "--worker-profile",
    } <= set(flags)
    parser = argparse.ArgumentParser()
    cluster.add_parser(parser.add_subparsers(dest="command"))
    argv = ["cluster", "render", "--budget", "10", "--deadline", "1h", "-o", "-"]
    for flag in flags:
        argv += [flag, "subnet-1,subnet-2" if flag == "--subnet-ids" else "x"]
    parser.parse_args(argv)
