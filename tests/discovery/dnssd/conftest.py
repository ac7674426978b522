"""Fixtures of the DNS-SD tests."""

from __future__ import annotations

import pytest

from discovery.dnssd.zone import Directory
from tests.discovery.dnssd.sample import sample_directory


@pytest.fixture
def directory() -> Directory:
    return sample_directory()
