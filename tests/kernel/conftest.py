"""Pytest wiring for namespace-based tests: marker, gate, topology fixtures.

Tests marked ``kernel`` (or using a topology fixture) are skipped when the
machine cannot run them, or fail instead when ``EGRESS_RULES_REQUIRE_KERNEL=1``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .datapath_support import macs, servers, topo
from .gate import require_kernel
from .topology import Topology

# The packet tests' module-scoped fixtures (a module that defines its own ``topo`` overrides it).
__all__ = ["macs", "servers", "topo"]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "kernel: needs root and network namespaces (builds a simulated cluster); "
        "skipped when unavailable unless EGRESS_RULES_REQUIRE_KERNEL=1",
    )


@pytest.fixture(autouse=True)
def _kernel_gate(request: pytest.FixtureRequest) -> None:
    if request.node.get_closest_marker("kernel") is not None:
        require_kernel()


@pytest.fixture(scope="session")
def topology() -> Iterator[Topology]:
    """One cluster for the whole session; tests that change it use ``clean_topology``."""
    require_kernel()
    with Topology() as topo:
        yield topo


@pytest.fixture
def clean_topology(topology: Topology) -> Iterator[Topology]:
    """The session cluster, every node's packet-handling state reset before and after."""
    topology.reset()
    yield topology
    topology.reset()
