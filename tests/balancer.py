"""
A real HAProxy for tests: L{startHAProxy} writes the configuration the
README shows (C{tests/haproxy.cfg}) into a temporary directory with free
loopback ports in place of its own, starts C{haproxy -f CFG -db} as a child
of the test, waits until it listens, and stops it (by PID) at clean-up.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Mapping
from pathlib import Path

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from tests.test_plugin import START_TIMEOUT, Child, freePort, temporaryDirectory

CONFIG = Path(__file__).with_name("haproxy.cfg")
"""
The HAProxy configuration the README shows, listening on 127.0.0.1:8900 and
passing connections to tcpcomm on 127.0.0.1:8000.
"""

FRONTEND = "127.0.0.1:8900"
BACKEND = "127.0.0.1:8000"


def haproxyPath() -> str:
    """
    The C{haproxy} program: on C{PATH}, or Debian's C{/usr/sbin/haproxy}.

    @raise SkipTest: If there is none (under C{CI=true}, a skip fails).
    """
    found = shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin")
    if found is None:
        raise SkipTest(
            "haproxy is not installed (Debian: apt-get install haproxy;"
            " .ci/run installs it)"
        )
    return found


def configuration(
    backendPort: int, frontendPort: int, changes: Mapping[str, str]
) -> str:
    """
    C{tests/haproxy.cfg} with the ports replaced and each of C{changes}
    (old text to new) made; each must be found exactly once.
    """
    text = CONFIG.read_text()
    replacements = {
        FRONTEND: f"127.0.0.1:{frontendPort}",
        BACKEND: f"127.0.0.1:{backendPort}",
        **changes,
    }
    for old, new in replacements.items():
        if text.count(old) != 1:
            raise AssertionError(f"{old!r} is not in {CONFIG.name} exactly once")
        text = text.replace(old, new)
    return text


def startHAProxy(
    testCase: SynchronousTestCase,
    backendPort: int,
    changes: Mapping[str, str] | None = None,
) -> tuple[Child, int]:
    """
    Run HAProxy with C{tests/haproxy.cfg} in front of tcpcomm on
    127.0.0.1:C{backendPort}, on a free frontend port, until C{testCase}
    ends.

    @param changes: Text of the configuration to change, old to new (for
        instance C{{"send-proxy-v2": "send-proxy"}}).
    @return: HAProxy and its frontend port.
    """
    program = haproxyPath()
    directory = temporaryDirectory(testCase)
    for _ in range(5):
        frontendPort = freePort()
        config = directory / "haproxy.cfg"
        config.write_text(configuration(backendPort, frontendPort, changes or {}))
        child = Child(testCase, [program, "-f", str(config), "-db"], directory)
        if _waitUntilListening(child, frontendPort):
            return child, frontendPort
        if "Address already in use" not in child.output():
            testCase.fail(f"haproxy exited with {child.wait()}:\n{child.output()}")
    testCase.fail("haproxy found no free port in 5 tries")


def _waitUntilListening(child: Child, port: int) -> bool:
    """
    Wait (bounded) until 127.0.0.1:C{port} is listened on, without
    connecting (a connection would reach tcpcomm); C{False} if C{child}
    exits first.
    """
    deadline = time.monotonic() + START_TIMEOUT
    wanted = f"0100007F:{port:04X}"
    while time.monotonic() < deadline:
        if child.process.poll() is not None:
            return False
        with open("/proc/net/tcp") as table:
            # local_address, state 0A = LISTEN
            if any(
                fields[1] == wanted and fields[3] == "0A"
                for fields in (line.split() for line in table)
                if len(fields) > 3
            ):
                return True
        time.sleep(0.05)
    raise AssertionError(f"haproxy did not listen on {port}:\n{child.output()}")
