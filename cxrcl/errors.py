"""One error type for a user's mistake: the CLI prints its message (one sentence naming the
file and the fix) and exits non-zero, never a traceback."""


class CxrclError(Exception):
    """A problem with the user's input or environment that they can fix."""

    exit_code = 2


class RunStopped(CxrclError):
    """A pre-training run stopped on request (Ctrl-C, SIGTERM) after saving a checkpoint."""

    exit_code = 130
