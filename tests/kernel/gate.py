"""Skip-or-fail decision for tests that need the kernel (root + namespaces)."""

from __future__ import annotations

import os
from collections.abc import Mapping

import pytest

from . import netns

REQUIRE_ENV = "EGRESS_RULES_REQUIRE_KERNEL"


def require_kernel(environ: Mapping[str, str] | None = None) -> None:
    """Return if kernel tests can run; otherwise skip, or fail when required.

    ``EGRESS_RULES_REQUIRE_KERNEL=1`` turns the skip into a failure so that a CI
    job that must exercise the kernel cannot silently pass by skipping.
    """
    ok, reason = netns.kernel_tests_available()
    if ok:
        return
    env = os.environ if environ is None else environ
    if env.get(REQUIRE_ENV) == "1":
        pytest.fail(f"kernel tests required ({REQUIRE_ENV}=1) but unavailable: {reason}")
    pytest.skip(f"kernel tests unavailable: {reason}")
