"""The one exception type that reaches users: the CLI prints its message on one line and exits 2."""


class QPlanError(Exception):
    """A problem with what the user asked for (bad size, unknown model, broken config...)."""
