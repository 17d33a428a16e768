"""Keeps the tests' Ray on 127.0.0.1. tests/conftest.py calls `export(os.environ)` (this folder first on
PYTHONPATH, MOOD_LABELER_LOOPBACK_RAY=1), so Python imports this module at start-up in every process
the tests start (the multi-node cluster's nodes, job drivers, CLI runs, Ray's workers), and calls
`install()` in pytest's own process. Nothing outside the tests imports it.

Why: Ray 2.60 turns `--node-ip-address 127.0.0.1` (and a `127.0.0.1:port` cluster address) into the
machine's outward address - `services.resolve_ip_for_localhost` asks the routing table which source
address would reach 8.8.8.8 - so nodes would register, and reach each other, on a non-loopback
address. The tests must keep all of the cluster's traffic on loopback. There is no setting for it:
`RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0` would return loopback but refuses worker nodes. So this module
patches `ray._private.services.get_node_ip_address` when Ray imports it, in `ray start`, the job
drivers and Ray's own Python daemons alike: before a process has joined a node, "this machine's
address" is 127.0.0.1; once it has, it is the node's address (also 127.0.0.1), exactly as Ray has it.
"""

import importlib.abc
import importlib.machinery
import os
import sys

FOLDER = os.path.dirname(os.path.abspath(__file__))
ENV_FLAG = "MOOD_LABELER_LOOPBACK_RAY"
LOOPBACK = "127.0.0.1"
PATCHED_MODULE = "ray._private.services"


def _patch(services) -> None:
    original = services.get_node_ip_address
    if getattr(original, "keeps_loopback", False):
        return

    def get_node_ip_address(address=None):
        if services.ray._private.worker._global_node is not None:
            return original(address)
        return LOOPBACK

    get_node_ip_address.keeps_loopback = True
    services.get_node_ip_address = get_node_ip_address


class PatchOnImport(importlib.abc.MetaPathFinder):
    """Finds `module_name` through the normal path finder, then calls `patch(module)` once it is loaded
    (also used by tests/poison/sitecustomize.py)."""

    def __init__(self, module_name: str, patch) -> None:
        self.module_name, self.patch = module_name, patch

    def find_spec(self, name, path, target=None):
        if name != self.module_name:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path, target)
        if spec is None or spec.loader is None:
            return spec
        exec_module = spec.loader.exec_module

        def exec_and_patch(module):
            exec_module(module)
            self.patch(module)

        spec.loader.exec_module = exec_and_patch
        return spec


def install() -> None:
    """Patch Ray in this process now if it is loaded, else when it is; and only once."""
    if PATCHED_MODULE in sys.modules:
        _patch(sys.modules[PATCHED_MODULE])
    elif not any(getattr(f, "module_name", None) == PATCHED_MODULE for f in sys.meta_path):
        sys.meta_path.insert(0, PatchOnImport(PATCHED_MODULE, _patch))


def export(environ) -> None:
    """Make every Python process started with `environ` load this module and keep Ray on loopback."""
    environ[ENV_FLAG] = "1"
    paths = [p for p in environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if FOLDER not in paths:
        environ["PYTHONPATH"] = os.pathsep.join([FOLDER, *paths])


if os.environ.get(ENV_FLAG) == "1":
    install()
