"""The one exception of the trace: it cannot run here (no compiler, an op without a fake kernel, ...)."""

from planner.errors import QPlanError


class TraceUnavailable(QPlanError):
    """The trace could not run; the message is one line, for a note beside a fallback estimate."""
