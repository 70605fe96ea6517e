"""Holding Ctrl-C back while bookkeeping is half-done.

Python raises ``KeyboardInterrupt`` between any two bytecodes. The engine's
bookkeeping (free sequence ids, live sequences, KV cell holders) spans several
statements, and an interrupt between two of them would leave it inconsistent:
a slot lost for good, or cells dropped twice. ``deferred()`` wraps such a
section: a SIGINT that arrives inside it is remembered and delivered when the
section ends, where the state is whole again.

A SIGTERM (``kill``, ``pkill``) is held back the same way. Inside llama.cpp a signal's
Python handler runs in whatever callback C calls next (activation capture, the log), where
ctypes drops the exception it raises: the kill went unheeded and the decode lost its rows.

Signals reach only the main thread, so elsewhere ``deferred()`` does nothing.
"""
from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Iterator

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextmanager
def deferred() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[tuple[int, object]] = []
    # A handler installed outside Python (getsignal gives None) cannot be put back: leave it alone.
    previous = {sig: signal.signal(sig, lambda s, frame: caught.append((s, frame)))
                for sig in _SIGNALS if signal.getsignal(sig) is not None}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for sig, frame in caught[:1]:  # one delivery is enough: the first stops the work
            handler = previous[sig]
            if callable(handler):
                handler(sig, frame)
            elif handler == signal.SIG_DFL and sig == signal.SIGINT:
                raise KeyboardInterrupt
            elif handler == signal.SIG_DFL:
                signal.raise_signal(sig)  # its default action (SIGTERM ends the process), now that it may
