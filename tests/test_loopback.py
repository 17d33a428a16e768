"""The tests' own Ray stays on loopback (tests/loopback/sitecustomize.py): the session's local Ray
registers its node as 127.0.0.1, and none of its processes listens or connects off loopback.
(tests/test_multinode.py checks the same of the multi-node cluster while a job runs.)"""

from __future__ import annotations

import psutil

from tests.cluster_harness import off_loopback_sockets


def test_session_ray_registers_and_listens_on_loopback_only(ray_local):
    ray = ray_local
    assert {n["NodeManagerAddress"] for n in ray.nodes() if n["Alive"]} == {"127.0.0.1"}
    assert ray.get(ray.remote(lambda: ray.util.get_node_ip_address()).remote()) == "127.0.0.1"
    assert off_loopback_sockets(psutil.Process().children(recursive=True)) == []
