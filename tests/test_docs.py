"""
Tests that the markdown pages (README.md and docs/) render as written.
"""

from __future__ import annotations

import re
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from tests.test_plugin import SOURCE_ROOT

SEPARATOR = re.compile(r"^\|(\s*:?-+:?\s*\|)+$")
"""
A table's header separator row, C{|---|---|}.
"""


def brokenTableRows(text: str) -> list[int]:
    """
    The (1-based) numbers of the lines in the markdown C{text} that start a
    table (a C{|} line after a line that is not one) without a header
    separator after them: rows cut off from their table, by a blank line
    say, which markdown shows as a paragraph of pipes.
    """
    lines = text.splitlines()
    broken = []
    fenced = False
    for number, line in enumerate(lines, 1):
        if line.startswith("```"):
            fenced = not fenced
        if fenced or not line.startswith("|"):
            continue
        if number > 1 and lines[number - 2].startswith("|"):
            continue
        following = lines[number] if number < len(lines) else ""
        if not SEPARATOR.match(following):
            broken.append(number)
    return broken


def markdownPages() -> list[Path]:
    """
    README.md and every page in docs/.
    """
    return [SOURCE_ROOT / "README.md", *sorted((SOURCE_ROOT / "docs").glob("*.md"))]


class TablesTests(SynchronousTestCase):
    """
    Tests for L{brokenTableRows} and the tables of the project's pages.
    """

    def test_rowsAfterBlankLineFound(self) -> None:
        """
        A row cut off from its table by a blank line is found; a whole table,
        or pipes in a code block, are not.
        """
        text = "| a | b |\n|---|:-:|\n| 1 | 2 |\n\n| 3 | 4 |\n```\n| x |\n```\n"
        self.assertEqual(brokenTableRows(text), [5])

    def test_pagesTablesWhole(self) -> None:
        """
        Every table in README.md and docs/ is one block under its header.
        """
        pages = markdownPages()
        self.assertGreater(len(pages), 1)
        for page in pages:
            self.assertEqual(
                brokenTableRows(page.read_text(encoding="utf-8")), [], page.name
            )
