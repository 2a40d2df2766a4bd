"""
pytest's hooks for this suite: under C{CI=true} (as C{.ci/run} runs it) a
skipped test fails, with the reason it gave, so that CI cannot pass by
skipping what it was meant to run.  Elsewhere a skip is still a skip.
"""

from __future__ import annotations

import os
from collections.abc import Generator

import pytest

__all__ = ["inCI", "pytest_runtest_makereport"]


def inCI() -> bool:
    """
    Whether C{CI} is set to anything but empty, C{0} or C{false}.
    """
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """
    Under CI, report a skipped test (not an expected failure) as failed.
    """
    report = yield
    if report.skipped and not hasattr(report, "wasxfail") and inCI():
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else ""
        report.outcome = "failed"
        report.longrepr = f"skipped under CI={os.environ['CI']}: {reason}"
    return report
