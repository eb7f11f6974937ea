"""Shared test settings: hypothesis profiles and the `kernel` marker policy.

Tests marked ``kernel`` need root and a kernel that allows network namespaces, netfilter and BPF.
Elsewhere they skip with the reason; with ``NETPOLC_REQUIRE_KERNEL=1`` (as ``.ci/run`` sets) a
skip becomes a failure, so CI cannot pass without actually running them.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    derandomize=True,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile("dev", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def kernel_required() -> bool:
    return os.environ.get("NETPOLC_REQUIRE_KERNEL") == "1"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    outcome = yield
    report = outcome.get_result()
    if kernel_required() and item.get_closest_marker("kernel") and report.skipped:
        report.outcome = "failed"
        report.longrepr = f"kernel test skipped but NETPOLC_REQUIRE_KERNEL=1: {report.longrepr}"
