"""The child process traces run in (:func:`planner.trace.trace_many`): reads ``(config, [settings...], steps,
full)`` pickled on stdin, writes ``("ok", [Trace...])`` or ``("unavailable", reason)`` pickled on stdout.

    python -m planner.trace.child < request.pickle > result.pickle
"""

from __future__ import annotations

import pickle
import sys


def main() -> int:
    from planner.trace import TraceUnavailable, trace_in_this_process

    config, many, steps, full = pickle.load(sys.stdin.buffer)
    try:
        result = ("ok", [trace_in_this_process(config, settings, steps, full) for settings in many])
    except TraceUnavailable as error:
        result = ("unavailable", str(error))
    except Exception as error:  # noqa: BLE001 - whatever stops the step (a library refusing the setup, say) is one line
        detail = str(error).strip().splitlines()
        result = ("unavailable", f"{type(error).__name__}: {detail[0][:300] if detail else 'no message'}")
    pickle.dump(result, sys.stdout.buffer)
    return 0


if __name__ == "__main__":
    sys.exit(main())
