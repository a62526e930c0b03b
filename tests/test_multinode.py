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
    assert doc["stats"]["device"].startswith("cuda")  # GPU-typed cluster: GPU actors
    assert doc["state"] == "complete"
