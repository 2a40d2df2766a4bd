"""
Tests that README.md is true: its shell examples run as written, in order,
and the library signatures it shows are the code's.

The examples are the C{console} code blocks: each C{$ } line is a command,
and the lines after it, up to the next command, are what it must print
(standard output and error together; a line C{...} stands for any number of
lines).  A command ending in C{&} starts a background job, as in an
interactive shell; C{kill %N} and C{kill $!} end jobs as the shell would.
A C{python} block whose first line is C{# NAME.py}, or a C{text} block
whose first line is C{# NAME.cfg}, is that file, written where the commands
run.  The TCP ports the examples use (8000 to
8999) are replaced throughout by free ones, so the examples never meet
another server.  Blocks fenced as C{text} or C{sh} are not run.
"""

from __future__ import annotations

import ast
import inspect
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from twisted.trial.unittest import SkipTest, SynchronousTestCase

import tcpcomm
from tests.test_plugin import SOURCE_ROOT, freePort, temporaryDirectory

README = SOURCE_ROOT / "README.md"

COMMAND_TIMEOUT = 60.0
"""
Seconds one foreground command may take.
"""

START_TIMEOUT = 20.0
"""
Seconds a background job may take to accept connections on its ports.
"""

PORT = re.compile(r"(?<![\d.:])(8\d{3})(?!\d)|(?<=:)(8\d{3})(?!\d)")
"""
A port number the examples use.
"""

FILE_NAME = re.compile(r"#\s*([\w.-]+\.(?:py|cfg))(?::?\s.*)?$")

SIGNATURES = (
    "# The factories' arguments and their defaults (tests/test_readme.py checks them)."
)
"""
The first line of the README's block of factory signatures.
"""

TOOLS = ("nc", "openssl", "head", "cmp", "od", "tr", "haproxy")
"""
Programs the examples run besides Python's and tcpcomm's own.
"""


@dataclass
class Block:
    """
    A fenced code block of a Markdown file.

    @ivar info: The fence's info string (C{console}, C{python}, ...).
    @ivar lines: The lines between the fences.
    """

    info: str
    lines: list[str]


@dataclass
class Command:
    """
    One C{$ } line of a console block and the output it must print.
    """

    text: str
    expected: list[str] = field(default_factory=list)


def readBlocks(text: str) -> Iterator[Block]:
    """
    The fenced code blocks of Markdown C{text}, in order.
    """
    lines = text.splitlines()
    index = 0
    while index < len(lines):
        line = lines[index]
        if line.startswith("```"):
            info = line[3:].strip()
            end = index + 1
            while end < len(lines) and not lines[end].startswith("```"):
                end += 1
            yield Block(info, lines[index + 1 : end])
            index = end
        index += 1


def readCommands(block: Block) -> list[Command]:
    """
    The commands of a console block, each with the output it must print.
    """
    commands: list[Command] = []
    for line in block.lines:
        if line.startswith("$ "):
            commands.append(Command(line[2:]))
        elif commands:
            commands[-1].expected.append(line)
        else:
            raise ValueError(f"console block does not start with '$ ': {line!r}")
    return commands


def outputMatches(expected: Sequence[str], actual: Sequence[str]) -> bool:
    """
    Whether C{actual} lines match C{expected} lines, where an expected line
    C{...} matches any number of lines.
    """
    if not expected:
        return not actual
    if expected[0] == "...":
        return any(
            outputMatches(expected[1:], actual[start:])
            for start in range(len(actual) + 1)
        )
    return (
        bool(actual)
        and actual[0] == expected[0]
        and outputMatches(expected[1:], actual[1:])
    )


def jobTarget(word: str) -> bool:
    """
    Whether C{word}, an argument of C{kill}, names a shell job (C{%N} or
    C{$!}).
    """
    return word == "$!" or re.fullmatch(r"%\d+", word) is not None


class Shell:
    """
    Runs a README's examples in one directory as one interactive shell
    would, with background jobs ended at the test's clean-up.
    """

    def __init__(self, testCase: SynchronousTestCase, directory: Path) -> None:
        self.testCase = testCase
        self.directory = directory
        self.ports: dict[str, str] = {}
        self.jobs: dict[int, subprocess.Popen[bytes]] = {}
        self.lastJob: subprocess.Popen[bytes] | None = None
        self.files: dict[str, str] = {}
        binDirectory = os.path.dirname(sys.executable)
        self.environment = {
            "PATH": os.pathsep.join([binDirectory, os.environ.get("PATH", "")]),
            "HOME": str(directory),
            "LC_ALL": "C.UTF-8",
        }
        testCase.addCleanup(self.endJobs)

    def localize(self, text: str) -> str:
        """
        C{text} with every example port replaced by its free port.
        """

        def replace(match: re.Match[str]) -> str:
            port = match.group(0)
            if port not in self.ports:
                self.ports[port] = str(freePort())
            return self.ports[port]

        return PORT.sub(replace, text)

    def writeFile(self, name: str, text: str) -> None:
        """
        Write a README file example into the directory.
        """
        localized = self.localize(text)
        self.files[name] = localized
        (self.directory / name).write_text(localized, encoding="utf-8")

    def run(self, command: Command) -> None:
        """
        Run one example command and check what it prints.
        """
        text = self.localize(command.text)
        expected = [self.localize(line) for line in command.expected]
        targets = text.split()[1:]
        if text.startswith("kill ") and all(jobTarget(t) for t in targets):
            self.kill(targets)
        elif text.endswith("&"):
            self.startJob(text[:-1].strip())
        else:
            completed = subprocess.run(
                ["bash", "-c", text],
                cwd=self.directory,
                env=self.environment,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                timeout=COMMAND_TIMEOUT,
            )
            actual = completed.stdout.decode("utf-8", "replace").splitlines()
            if not outputMatches(expected, actual):
                self.testCase.fail(
                    f"$ {command.text}\nprinted (status {completed.returncode}):\n"
                    + "\n".join(actual)
                    + "\n\nbut the README says:\n"
                    + "\n".join(expected)
                    + self.jobLogs()
                )

    def startJob(self, text: str) -> None:
        """
        Start C{text} in the background and wait until every port it (or a
        file it names) listens on accepts connections.
        """
        number = max(self.jobs, default=0) + 1
        log = (self.directory / f".job{number}.log").open("wb")
        with log:
            job = subprocess.Popen(
                ["bash", "-c", f"exec {text}"],
                cwd=self.directory,
                env=self.environment,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.jobs[number] = job
        self.lastJob = job
        sources = [text] + [
            content for name, content in self.files.items() if name in text.split()
        ]
        ports = {
            int(port)
            for port in self.ports.values()
            if any(re.search(rf"(?<!\d){port}(?!\d)", source) for source in sources)
        }
        for port in ports:
            self.waitUntilAccepting(job, port, text)

    def waitUntilAccepting(
        self, job: subprocess.Popen[bytes], port: int, text: str
    ) -> None:
        """
        Poll (bounded) until 127.0.0.1:C{port} accepts connections.
        """
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if job.poll() is not None:
                self.testCase.fail(
                    f"$ {text} &\nexited with {job.returncode}" + self.jobLogs()
                )
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
            except OSError:
                time.sleep(0.05)
            else:
                return
        self.testCase.fail(f"$ {text} &\nnever accepted on {port}" + self.jobLogs())

    def kill(self, targets: Sequence[str]) -> None:
        """
        End jobs named as C{%N} or C{$!} with SIGTERM, and wait for them.
        """
        for target in targets:
            if target == "$!":
                job = self.lastJob
                number = next((n for n, j in self.jobs.items() if j is job), None)
            else:
                number = int(target.lstrip("%"))
                job = self.jobs.get(number)
            if job is None or number is None:
                self.testCase.fail(f"kill {target}: no such job")
            os.kill(job.pid, signal.SIGTERM)
            job.wait(timeout=COMMAND_TIMEOUT)
            del self.jobs[number]

    def jobLogs(self) -> str:
        """
        What every background job printed, for a failure message.
        """
        return "".join(
            f"\n\n--- job {path.name} ---\n" + path.read_text(errors="replace")
            for path in sorted(self.directory.glob(".job*.log"))
        )

    def endJobs(self) -> None:
        """
        Kill (by PID) and reap every job still running, and every daemon
        whose pid file an example left.
        """
        for pidFile in self.directory.glob("*.pid"):
            try:
                os.kill(int(pidFile.read_text().strip()), signal.SIGKILL)
            except (ValueError, OSError):
                pass
        for job in self.jobs.values():
            if job.poll() is None:
                os.killpg(job.pid, signal.SIGKILL)
            job.wait(timeout=COMMAND_TIMEOUT)


class ReadmeExamplesTests(SynchronousTestCase):
    """
    The README's examples, run as a newcomer would run them.
    """

    def test_examplesRunAsWritten(self) -> None:
        """
        Every console example in README.md prints what the README says it
        prints, run in order in one fresh directory.
        """
        missing = [tool for tool in TOOLS if shutil.which(tool) is None]
        if missing:
            message = f"the README's examples need {', '.join(missing)}"
            if os.environ.get("CI") == "true":
                self.fail(message + " (.ci/run installs them)")
            raise SkipTest(message)
        shell = Shell(self, temporaryDirectory(self))
        ran = 0
        for block in readBlocks(README.read_text(encoding="utf-8")):
            if block.info in ("python", "text") and block.lines:
                name = FILE_NAME.match(block.lines[0])
                if name is not None:
                    shell.writeFile(name.group(1), "\n".join(block.lines) + "\n")
            elif block.info == "console":
                for command in readCommands(block):
                    shell.run(command)
                    ran += 1
        self.assertGreater(ran, 10)
        self.assertEqual(shell.jobs, {}, "the README leaves jobs running")


class ReadmeParsingTests(SynchronousTestCase):
    """
    The helpers that read the README's examples.
    """

    def test_commandsAndOutput(self) -> None:
        """
        A console block is split into commands, each with the lines after it.
        """
        block = Block("console", ["$ a &", "$ b", "one", "two", "$ c"])
        self.assertEqual(
            readCommands(block),
            [Command("a &"), Command("b", ["one", "two"]), Command("c")],
        )

    def test_ellipsisMatchesAnyLines(self) -> None:
        """
        An expected C{...} line matches any number of lines, none included;
        other lines must match exactly.
        """
        self.assertTrue(outputMatches(["...", "end"], ["a", "b", "end"]))
        self.assertTrue(outputMatches(["...", "end"], ["end"]))
        self.assertFalse(outputMatches(["...", "end"], ["end", "more"]))
        self.assertFalse(outputMatches(["a"], ["a", "b"]))
        self.assertFalse(outputMatches(["a", "b"], ["a"]))

    def test_portsLocalized(self) -> None:
        """
        Each example port maps to one free port everywhere it appears; other
        numbers are left alone.
        """
        shell = Shell(self, temporaryDirectory(self))
        text = shell.localize("--port 8000 tcp:8000 localhost:8007 x:9 12.8000 80001")
        first, second = shell.ports["8000"], shell.ports["8007"]
        self.assertEqual(
            text, f"--port {first} tcp:{first} localhost:{second} x:9 12.8000 80001"
        )


def signatureExamples() -> Iterator[ast.Call]:
    """
    The calls in the README's block of factory signatures.
    """
    for block in readBlocks(README.read_text(encoding="utf-8")):
        if block.info == "python" and block.lines[:1] == [SIGNATURES]:
            for node in ast.walk(ast.parse("\n".join(block.lines))):
                if isinstance(node, ast.Call):
                    yield node


class ReadmeSignaturesTests(SynchronousTestCase):
    """
    The README's list of the factories' arguments is the code's.
    """

    def test_factoryDefaults(self) -> None:
        """
        Each factory the README lists takes exactly the arguments it shows,
        with the defaults it shows.
        """
        checked = []
        for call in signatureExamples():
            assert isinstance(call.func, ast.Name)
            name = call.func.id
            parameters = inspect.signature(getattr(tcpcomm, name)).parameters
            shown = {keyword.arg: keyword.value for keyword in call.keywords}
            positional = [arg.id for arg in call.args if isinstance(arg, ast.Name)]
            self.assertEqual(
                list(parameters), [*positional, *shown], f"{name}'s arguments"
            )
            for argument, value in shown.items():
                default = parameters[str(argument)].default
                if isinstance(value, ast.Name):
                    self.assertIs(default, getattr(tcpcomm, value.id), argument)
                else:
                    self.assertEqual(default, ast.literal_eval(value), argument)
            checked.append(name)
        factories = ["ChatFactory", "EchoFactory", "LineFactory", "RelayFactory"]
        self.assertEqual(sorted(checked), factories)

    def test_pythonExamplesCompile(self) -> None:
        """
        Every Python example in the README is valid Python.
        """
        blocks = [
            block
            for block in readBlocks(README.read_text(encoding="utf-8"))
            if block.info == "python"
        ]
        self.assertGreater(len(blocks), 3)
        for block in blocks:
            compile("\n".join(block.lines), "README.md", "exec")


class ReadmeFilesTests(SynchronousTestCase):
    """
    Files the README shows that the test suite also uses are the same.
    """

    def test_modbusHandlerIsTheTestedOne(self) -> None:
        """
        The README's C{modbus_registers.py} is C{tests/modbus_registers.py},
        which the interoperability tests serve to pymodbus.
        """
        shown = [
            block.lines
            for block in readBlocks(README.read_text())
            if block.info == "python"
            and block.lines
            and block.lines[0] == "# modbus_registers.py"
        ]
        tested = (SOURCE_ROOT / "tests" / "modbus_registers.py").read_text()
        self.assertEqual(len(shown), 1)
        self.assertEqual("\n".join(shown[0]).strip(), tested.strip())

    def test_haproxyConfigurationIsTheTestedOne(self) -> None:
        """
        The README's C{haproxy.cfg} is C{tests/haproxy.cfg}, which the
        PROXY protocol tests run HAProxy with.
        """
        shown = [
            block.lines
            for block in readBlocks(README.read_text())
            if block.info == "text"
            and block.lines
            and block.lines[0].startswith("# haproxy.cfg")
        ]
        tested = (SOURCE_ROOT / "tests" / "haproxy.cfg").read_text()
        self.assertEqual(len(shown), 1)
        self.assertEqual("\n".join(shown[0]).strip(), tested.strip())

    def test_prometheusConfigurationIsTheTestedOne(self) -> None:
        """
        The README's Prometheus scrape configuration is
        C{tests/prometheus.yml}, whose target the metrics tests scrape.
        """
        shown = [
            block.lines
            for block in readBlocks(README.read_text())
            if block.info == "yaml"
            and block.lines
            and block.lines[0].startswith("# prometheus.yml")
        ]
        tested = (SOURCE_ROOT / "tests" / "prometheus.yml").read_text()
        self.assertEqual(len(shown), 1)
        self.assertEqual("\n".join(shown[0]).strip(), tested.strip())
