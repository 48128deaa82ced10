"""Fixtures for the identity tests: test CAs minted at run time (never committed)."""

from __future__ import annotations

import pytest

from ztid.bundle import BundleSet
from ztid.testing import TestCA


@pytest.fixture(scope="session")
def ca_a() -> TestCA:
    return TestCA.create("a.test")


@pytest.fixture(scope="session")
def ca_a_inter() -> TestCA:
    return TestCA.create("ai.test", intermediate=True)


@pytest.fixture(scope="session")
def ca_b() -> TestCA:
    return TestCA.create("b.test")


@pytest.fixture(scope="session")
def bundles(ca_a: TestCA, ca_a_inter: TestCA, ca_b: TestCA) -> BundleSet:
    return BundleSet([ca_a.bundle(), ca_a_inter.bundle(), ca_b.bundle()])
