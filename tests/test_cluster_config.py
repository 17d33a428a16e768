"""cluster.yaml is checked with Ray's own autoscaler validation (the same steps `ray up` runs)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

CLUSTER_YAML = Path(__file__).resolve().parents[1] / "cluster.yaml"


@pytest.fixture()
def cluster_config() -> dict:
    return yaml.safe_load(CLUSTER_YAML.read_text())


def test_cluster_yaml_passes_ray_validation(cluster_config):
    validate_config(prepare_config(copy.deepcopy(cluster_config)))


def test_head_schedules_but_does_no_heavy_work(cluster_config):
    head = cluster_config["available_node_types"][cluster_config["head_node_type"]]
    assert head["resources"] == {"CPU": 0}
    start = " ".join(cluster_config["head_start_ray_commands"])
    assert "--num-cpus=0" in start


def test_gpu_and_cpu_worker_types_autoscale(cluster_config):
    types = cluster_config["available_node_types"]
    assert types["gpu_worker"]["node_config"]["InstanceType"].startswith(("g", "p"))
    assert types["cpu_worker"]["node_config"]["InstanceType"].startswith("c")
    for name in ("gpu_worker", "cpu_worker"):
        assert types[name]["min_workers"] == 0 and types[name]["max_workers"] > 0


def test_dashboard_stays_private_and_no_keys_in_file(cluster_config):
    start = " ".join(cluster_config["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in start
    text = CLUSTER_YAML.read_text()
    assert "AWS_SECRET_ACCESS_KEY" not in text and "aws_secret_access_key" not in text
    for node_type in cluster_config["available_node_types"].values():
        assert node_type["node_config"]["IamInstanceProfile"]["Name"]


def test_image_matches_pinned_ray():
    import ray

    config = yaml.safe_load(CLUSTER_YAML.read_text())
    assert f"ray:{ray.__version__}-" in config["docker"]["image"]


def test_broken_config_is_rejected(cluster_config):
    broken = copy.deepcopy(cluster_config)
    broken["max_workers"] = "many"
    with pytest.raises(Exception, match="max_workers"):
        validate_config(prepare_config(broken))


def test_ray_token_auth_is_on_everywhere_and_the_token_is_not_in_the_file(cluster_config):
    """Without RAY_AUTH_MODE=token anyone reaching the GCS or job API runs code on the cluster."""
    assert "-e RAY_AUTH_MODE=token" in " ".join(cluster_config["docker"]["run_options"])
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        starts = [c for c in cluster_config[key] if "ray start" in c]
        assert starts and all("RAY_AUTH_MODE=token ray start" in c for c in starts)
    assert cluster_config["file_mounts"]["/home/ray/.ray/auth_token"] == "~/.ray/auth_token"
    assert "RAY_AUTH_TOKEN=" not in CLUSTER_YAML.read_text()


def test_nodes_have_internal_ips_and_the_clusters_own_security_group(cluster_config):
    """The launcher's default group opens SSH to 0.0.0.0/0; every node type names the cluster's group."""
    assert cluster_config["provider"]["use_internal_ips"] is True
    for name, node_type in cluster_config["available_node_types"].items():
        (interface,) = node_type["node_config"]["NetworkInterfaces"]
        groups = interface.get("Groups")
        assert groups and all(g.startswith("sg-") for g in groups), name
    doc = (CLUSTER_YAML.parent / "docs" / "cluster.md").read_text()
    assert "ADMIN_CIDR" in doc and "--source-group" in doc and "0.0.0.0/0" not in doc.replace("never 0.0.0.0/0", "")


def test_every_node_starts_in_a_named_private_subnet_without_a_public_ip(cluster_config):
    """use_internal_ips only allows private subnets: a node type without a named subnet may land in a
    default subnet that maps public IPs. Each names its subnet and turns the public address off."""
    for name, node_type in cluster_config["available_node_types"].items():
        node_config = node_type["node_config"]
        (interface,) = node_config["NetworkInterfaces"]
        assert interface["DeviceIndex"] == 0, name
        assert interface["AssociatePublicIpAddress"] is False, name
        assert interface["SubnetId"].startswith("subnet-"), name
        # Ray refuses subnets or groups beside NetworkInterfaces: they live only in the interface.
        assert not {"SubnetId", "SubnetIds", "SecurityGroupIds"} & set(node_config), name


def test_ray_takes_subnet_and_group_from_the_network_interface(cluster_config):
    """What `ray up` does with NetworkInterfaces before it picks subnets: no default subnet, no default group."""
    from ray.autoscaler._private.aws.config import _configure_from_network_interfaces

    configured = _configure_from_network_interfaces(copy.deepcopy(cluster_config))
    for name, node_type in configured["available_node_types"].items():
        (interface,) = cluster_config["available_node_types"][name]["node_config"]["NetworkInterfaces"]
        assert node_type["node_config"]["SubnetIds"] == [interface["SubnetId"]], name
        assert node_type["node_config"]["SecurityGroupIds"] == interface["Groups"], name


def test_docs_say_how_to_reach_a_head_without_a_public_ip():
    doc = (CLUSTER_YAML.parent / "docs" / "cluster.md").read_text()
    assert "Reaching the head" in doc and "ssh_proxy_command" in doc and "AssociatePublicIpAddress: false" in doc
