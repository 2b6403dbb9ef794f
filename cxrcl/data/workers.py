"""A bounded, ordered process pool and the progress bar of the data commands.

:func:`ordered_map` keeps at most ``4 * workers`` tasks in flight, so decoded images are never
all held in memory when one side is faster than the other.
"""

from __future__ import annotations

import multiprocessing
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from itertools import islice


def _ignore_sigint() -> None:
    """Pool initializer: Ctrl-C is handled by the main process, which stops the pool."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)


def ordered_map(fn: Callable, tasks: Iterable, workers: int, max_pending: int | None = None) -> Iterator:
    """``map(fn, tasks)`` over a Pool of ``workers`` processes, in order, with bounded memory.

    At most ``max_pending`` tasks (default ``4 * workers``) are submitted and not yet consumed,
    so neither the task list nor the results pile up when one side is faster than the other
    (``Pool.imap`` buffers every finished result). ``fn`` must be picklable (module level).
    """
    if workers <= 1:
        yield from map(fn, tasks)
        return
    limit = max(1, max_pending or 4 * workers)
    it = iter(tasks)
    with multiprocessing.Pool(workers, initializer=_ignore_sigint) as pool:
        window: deque = deque()
        for task in it:
            window.append(pool.apply_async(fn, (task,)))
            if len(window) >= limit:
                break
        while window:
            result = window.popleft().get()
            for task in it:
                window.append(pool.apply_async(fn, (task,)))
                break
            yield result


def batched(items: Iterable, k: int) -> Iterator[list]:
    it = iter(items)
    while batch := list(islice(it, k)):
        yield batch


def progress_bar(total: int, enabled: bool, desc: str, initial: int = 0):
    from tqdm.auto import tqdm
    return tqdm(total=total, initial=initial, desc=desc, unit="img", disable=not enabled, leave=False)
