"""The README's worked examples are qplan's own output: every fenced block that starts with ``$ qplan ARGS``
is what ``qplan ARGS`` prints at 80 columns. A line ``...`` in a block stands for lines left out: the lines
above it must open the output and the lines below it must close it.

    python tools/readme_examples.py           # rewrite the blocks from the tool (keeps each block's elision)
    tests/test_readme.py                      # fails when a block and the tool disagree
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shlex
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCK = re.compile(r"```\n\$ qplan (?P<args>[^\n]*)\n(?P<body>.*?)```\n", re.S)
WIDTH = "80"


def qplan_output(args: str) -> list[str]:
    from planner.cli import main

    out = io.StringIO()
    old = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = WIDTH
    try:
        with contextlib.redirect_stdout(out):
            main(shlex.split(args))
    finally:
        if old is None:
            os.environ.pop("COLUMNS")
        else:
            os.environ["COLUMNS"] = old
    return [line.rstrip() for line in out.getvalue().splitlines()]


def expected_body(body: str, output: list[str]) -> str:
    """The block's body as the tool prints it now, keeping the block's ``...`` elision at the same place."""
    lines = [line.rstrip() for line in body.splitlines()]
    if "..." not in lines:
        return "\n".join(output) + "\n"
    cut = lines.index("...")
    head, tail = len(lines[:cut]), len(lines[cut + 1:])
    return "\n".join(output[:head] + ["..."] + output[len(output) - tail:]) + "\n"


def blocks(text: str) -> list[tuple[str, str, str]]:
    """(args, body as written, body as the tool prints it now) for every example block."""
    return [(m["args"], m["body"], expected_body(m["body"], qplan_output(m["args"]))) for m in BLOCK.finditer(text)]


def rewrite(text: str) -> str:
    def one(m: re.Match) -> str:
        return f"```\n$ qplan {m['args']}\n{expected_body(m['body'], qplan_output(m['args']))}```\n"
    return BLOCK.sub(one, text)


if __name__ == "__main__":
    sys.path.insert(0, str(README.parent))  # this checkout's planner
    README.write_text(rewrite(README.read_text()))
