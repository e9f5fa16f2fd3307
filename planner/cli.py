"""``qplan`` entry point. ``qplan --model 70b --gpu 24GB`` plans; other verbs live in
``planner/commands/<verb>.py``, each with ``add_parser(subparsers)`` and ``run(args) -> int``.

Exit codes: 0 success / fits, 1 does not fit or regression found, 2 bad input (one line, no traceback).
"""

from __future__ import annotations

import argparse
import importlib
import sys

from planner.errors import QPlanError

# verb -> module under planner.commands; modules are imported only when their verb is used,
# so planning never pays for torch.
COMMANDS = {
    "plan": "plan",
    "schema": "schema",
    "calibrate": "calibrate",
    "validate": "validate",
    "regress": "regress",
    "check": "check",
    "measure": "measure",
}


def _parser(verb: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"qplan {verb}" if verb != "plan" else "qplan")
    module = importlib.import_module(f"planner.commands.{COMMANDS[verb]}")
    module.add_arguments(parser)
    parser.set_defaults(_run=module.run)
    return parser


class OneLineParser(argparse.ArgumentParser):
    def error(self, message):  # argparse's default prints usage; keep bad input to one line
        raise QPlanError(message)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    verb = argv[0] if argv and argv[0] in COMMANDS else "plan"
    if argv and argv[0] in COMMANDS:
        argv = argv[1:]
    if argv[:1] in (["-h"], ["--help"]) and verb == "plan":
        print("qplan verbs: " + ", ".join(COMMANDS) + "  (qplan VERB --help)\n")
    try:
        parser = _parser(verb)
        parser.__class__ = OneLineParser
        args = parser.parse_args(argv)
        return int(args._run(args) or 0)
    except QPlanError as err:
        print(f"qplan: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("qplan: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
