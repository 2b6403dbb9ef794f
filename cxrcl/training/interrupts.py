"""Graceful stops: Ctrl-C (SIGINT) or SIGTERM (a scheduler's time limit) end the run at the
next step boundary with a checkpoint, so "resumes with --resume" is true even before the first
regular checkpoint. A second Ctrl-C stops at once (the last checkpoint stays as it was)."""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager


class StopRequest:
    """Set by SIGINT/SIGTERM; the training loop checks it between steps."""

    def __init__(self) -> None:
        self.signal: int | None = None

    def __bool__(self) -> bool:
        return self.signal is not None

    @property
    def name(self) -> str:
        return signal.Signals(self.signal).name if self.signal else ""


@contextmanager
def stop_on_signals():
    """Within the block, SIGINT/SIGTERM set the returned :class:`StopRequest` instead of
    killing the process; a second SIGINT raises KeyboardInterrupt as usual."""
    request = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield request
        return

    def handler(signum, frame):
        if request and signum == signal.SIGINT:
            raise KeyboardInterrupt
        request.signal = signum

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield request
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
