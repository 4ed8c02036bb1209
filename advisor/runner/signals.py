"""Every signal that ends advisor stops the engine it started.

Python turns only SIGINT into KeyboardInterrupt; SIGTERM, SIGHUP (the terminal closed, an ssh session dropped) and
SIGQUIT (Ctrl-\\) would end the interpreter at once, skipping the ``finally`` that stops the engine: it would run
on, unlisted and unstoppable by ``advisor stop``. Inside ``stopping_on_signals()`` all four raise KeyboardInterrupt
instead, so the one clean-up path runs (Python's signal module: handlers run in the main thread between bytecodes).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

#: The signals that end a process by default and that a user or a session manager sends to stop it
#: (signal(7): Term or Core action). SIGKILL cannot be caught; nothing can clean up after it.
ENDING = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT") if hasattr(signal, name))


class Stopped(KeyboardInterrupt):
    """A KeyboardInterrupt raised for a signal; ``signum`` says which."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _raise(signum: int, frame: object) -> None:
    raise Stopped(signum)


@contextmanager
def stopping_on_signals(signals: tuple[int, ...] = ENDING) -> Iterator[None]:
    """Within the block, each of ``signals`` raises ``Stopped`` (a KeyboardInterrupt); the previous handlers are
    restored on the way out. Outside the main thread (where Python cannot install handlers) it does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {}
    try:
        for signum in signals:
            previous[signum] = signal.signal(signum, _raise)
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
