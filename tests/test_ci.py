"""
Tests for what C{.ci/run} relies on in the suite itself: under C{CI=true}
no test may skip silently (C{tests/conftest.py}).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

CONFTEST = Path(__file__).resolve().parent / "conftest.py"

SKIPPING = """\
from twisted.trial.unittest import SkipTest, SynchronousTestCase


class SkippingTests(SynchronousTestCase):
    def test_passes(self) -> None:
        pass

    def test_skips(self) -> None:
        raise SkipTest("needs a unicorn")
"""


def runPytest(testCase: SynchronousTestCase, ci: str | None) -> tuple[int, str]:
    """
    Run pytest, with this suite's C{conftest.py}, on a file holding one
    passing and one skipping trial test, with C{CI} set to C{ci} (or unset).

    @return: pytest's exit status and output.
    """
    directory = Path(tempfile.mkdtemp(prefix="tcpcomm-ci-"))
    testCase.addCleanup(shutil.rmtree, directory, ignore_errors=True)
    shutil.copy(CONFTEST, directory / "conftest.py")
    (directory / "test_skipping.py").write_text(SKIPPING, encoding="utf-8")
    env = {"PATH": os.environ.get("PATH", os.defpath)}
    if ci is not None:
        env["CI"] = ci
    completed = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rA"],
        cwd=directory,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return completed.returncode, completed.stdout + completed.stderr


class SkipUnderCITests(SynchronousTestCase):
    """
    C{tests/conftest.py} fails skipped tests under CI, and only there.
    """

    def test_skipFailsUnderCI(self) -> None:
        """
        With C{CI=true} a skipped test is reported as failed, with its
        reason, and pytest exits 1.
        """
        status, output = runPytest(self, "true")
        self.assertEqual(status, 1, output)
        self.assertIn("1 failed, 1 passed", output)
        self.assertIn("skipped under CI=true: ", output)
        self.assertIn("needs a unicorn", output)

    def test_skipAllowedOutsideCI(self) -> None:
        """
        Without C{CI}, or with C{CI=false}, a skipped test is a skip and
        pytest exits 0.
        """
        for ci in (None, "false"):
            status, output = runPytest(self, ci)
            self.assertEqual(status, 0, output)
            self.assertIn("1 passed, 1 skipped", output)
