"""``qplan`` entry point. ``qplan --model 70b --gpu 24GB`` plans; other verbs live in
``planner/commands/<verb>.py``, each with ``add_arguments(parser)`` and ``run(args) -> int``.

Exit codes: 0 success / fits, 1 does not fit or regression found, 2 bad input (one line, no traceback),
130 interrupted. A closed or full stdout (``qplan check x.yaml | head -2``) does not change the exit code:
what could not be printed is dropped, and files are written all the same.
"""

from __future__ import annotations

import argparse
import os
import sys

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
    "models": "models",
    "gpus": "gpus",
}


class OneLineParser(argparse.ArgumentParser):
    def error(self, message):  # argparse's default prints usage; keep bad input to one line
        from planner.errors import QPlanError

        raise QPlanError(message)


def _parser(verb: str) -> argparse.ArgumentParser:
    import importlib

    parser = OneLineParser(prog=f"qplan {verb}" if verb != "plan" else "qplan")
    module = importlib.import_module(f"planner.commands.{COMMANDS[verb]}")
    module.add_arguments(parser)
    parser.set_defaults(_run=module.run)
    return parser


class _DropOnBrokenPipe:
    """stdout that drops what it cannot write once its reader has gone (or its disk is full), so the command
    runs to its end: files are written and the exit code keeps its meaning."""

    def __init__(self, stream):
        self._stream, self.broken = stream, False

    def write(self, text: str) -> int:
        if not self.broken:
            try:
                return self._stream.write(text)
            except OSError as err:
                self._break(err)
        return len(text)

    def flush(self) -> None:
        if not self.broken:
            try:
                self._stream.flush()
            except OSError as err:
                self._break(err)

    def _break(self, err: OSError) -> None:
        """Send the rest to /dev/null (the recipe of Python's ``signal`` documentation for SIGPIPE); a full
        or failing stdout, unlike a reader that left, is worth one line on stderr."""
        self.broken = True
        if not isinstance(err, BrokenPipeError):
            print(f"qplan: cannot write to stdout: {err.strerror or err}", file=sys.stderr)
        os.dup2(os.open(os.devnull, os.O_WRONLY), self._stream.fileno())

    def __getattr__(self, name):
        return getattr(self._stream, name)


def main(argv: list[str] | None = None) -> int:
    stdout = sys.stdout
    sys.stdout = _DropOnBrokenPipe(stdout)
    try:
        return _main(argv)
    except KeyboardInterrupt:
        print("qplan: interrupted", file=sys.stderr)
        return 130
    finally:
        sys.stdout.flush()
        sys.stdout = stdout


def _main(argv: list[str] | None) -> int:
    from planner.errors import QPlanError
    from planner.files import exit_on_sigterm

    exit_on_sigterm()
    argv = list(sys.argv[1:] if argv is None else argv)
    verb = argv[0] if argv and argv[0] in COMMANDS else "plan"
    if argv and argv[0] in COMMANDS:
        argv = argv[1:]
    if argv[:1] in (["-h"], ["--help"]) and verb == "plan":
        print("qplan verbs: " + ", ".join(COMMANDS) + "  (qplan VERB --help)\n")
    if argv[:1] == ["--version"] and verb == "plan":
        from planner import __version__

        print(f"qplan {__version__}")
        return 0
    try:
        args = _parser(verb).parse_args(argv)
        code = int(args._run(args) or 0)
    except QPlanError as err:
        print(f"qplan: error: {err}", file=sys.stderr)
        code = 2
    except RecursionError:
        print("qplan: error: input nested too deeply to read", file=sys.stderr)
        code = 2
    return code


if __name__ == "__main__":
    sys.exit(main())
