"""Shared fixtures: skip logic for network-namespace tests and the `lab` cleanup registry."""

from __future__ import annotations

import functools
import shutil
from typing import Iterator

import pytest

from discovery.lab.netns import Cleanup, unavailable_reason

# Tools every namespace test relies on (Debian packages: iproute2, wireguard-tools,
# wireguard-go, iputils-ping, iptables, conntrack).
NETNS_TOOLS = ("ip", "wg", "wireguard-go", "ping", "iptables", "conntrack")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "netns: needs root, /dev/net/tun and network namespaces")


@functools.lru_cache(maxsize=None)
def netns_unavailable_reason() -> str | None:
    """Why namespace tests cannot run here, or None when they can."""
    return unavailable_reason(NETNS_TOOLS)


def require_netns() -> None:
    """Skip the calling test when namespaces, TUN or the tools are unavailable."""
    reason = netns_unavailable_reason()
    if reason:
        pytest.skip(reason)


def require_tools(*tools: str) -> None:
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        pytest.skip(f"tools missing: {', '.join(missing)}")


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("netns") is not None:
        require_netns()


@pytest.fixture
def lab() -> Iterator[Cleanup]:
    """A lab registry; everything made through it is removed after the test, pass or fail."""
    require_netns()
    registry = Cleanup()
    try:
        yield registry
    finally:
        registry.close()
