"""A run on a multi-node cluster on this machine (several raylets, Ray's cluster_utils):
GPU-typed nodes without a real GPU (dfray's actors take GPU slices and fall back to the
CPU inside), one node removed mid-run. Nothing is lost and nothing duplicated."""

import json

import pytest
from test_faults import finish, rows, start_score, wait_for_parts

pytestmark = [pytest.mark.timeout(900), pytest.mark.slow]


@pytest.fixture
def cluster():
    from ray.cluster_utils import Cluster

    c = Cluster(initialize_head=True, connect=False,
                head_node_args={"num_cpus": 1, "include_dashboard": False})
    yield c
    c.shutdown()


def test_node_removed_mid_run(cluster, corpus_copy, tmp_path):
    keep = cluster.add_node(num_cpus=2, num_gpus=1, resources={"gpu_node": 1})
    lost = cluster.add_node(num_cpus=2, num_gpus=1, resources={"gpu_node": 1})
    cluster.wait_for_nodes()
    assert keep is not lost
    out = tmp_path / "out"
    proc = start_score(corpus_copy, out, "mn", "--address", cluster.address)
    wait_for_parts(out / "mn", 1, proc)
    cluster.remove_node(lost, allow_graceful=False)
    finish(proc)
    r = rows(out / "mn")
    assert len(r) == 6 and all(v["status"] == "ok" for v in r.values())
    doc = json.loads((out / "mn" / "run.json").read_text())
    # GPU-typed nodes without a GPU: the actors took GPU slices and ran on the CPU, and
    # run.json says what ran, not what the cluster's resources promised
    assert doc["stats"]["device"] == "cpu"
    assert set(doc["stats"]["devices"]) == {"extract", "score"}
    assert all(set(per) == {"cpu"} for per in doc["stats"]["devices"].values())
    assert doc["state"] == "complete"
    # one video per task here (driver.todo_groups), so the node left mid-work: the
    # driver planned the pools again on the node that was left (a lost node's actors have
    # nowhere to restart, and their queued videos would wait for ever)
    assert doc["attempts"][-1]["replanned_after_node_loss"] >= 1


def test_device_label_says_what_ran():
    from dfray.runner.pipeline import device_label

    assert device_label({}) is None
    assert device_label({"extract": {"cpu": 2}, "score": {"cpu": 1}}) == "cpu"
    gpu = {"extract": {"cuda:NVIDIA A10G": 2}, "score": {"cuda:NVIDIA A10G": 1}}
    assert device_label(gpu) == "cuda:NVIDIA A10G"
    assert device_label({**gpu, "score": {"cpu": 1}}) == "cuda:NVIDIA A10G+cpu"
    assert device_label({"score": {"cuda:Tesla T4": 1, "cuda:NVIDIA L4": 1}}) == (
        "cuda:NVIDIA L4,Tesla T4")
