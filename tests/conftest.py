"""The test session prices analytically unless a test asks for a trace: ``qplan check``, ``preflight()`` and
the callback trace by default wherever torch, transformers, peft and bitsandbytes are installed, as they are
here (``planner.trace.available``); tests/test_trace.py exercises the traced path itself."""

import os

os.environ.setdefault("QPLAN_TRACE", "never")
