"""Ctrl-C that a library cannot swallow.

Some imports catch every exception, ``KeyboardInterrupt`` included (scipy's array-API shim importing numpy's
f2py is one), so a Ctrl-C that lands there is lost and the job runs on. :func:`install` makes the SIGINT handler
also record the interrupt, and long loops (sampling steps, decoded meshes) call :func:`raise_if_interrupted`.
"""

from __future__ import annotations

import signal
import threading

_interrupted = threading.Event()


def _on_sigint(signum: int, frame: object) -> None:
    _interrupted.set()
    raise KeyboardInterrupt


def install() -> None:
    """Record Ctrl-C as well as raising it (main thread only; a SIGINT ignored by the parent stays ignored)."""
    _interrupted.clear()
    if (
        threading.current_thread() is threading.main_thread()
        and signal.getsignal(signal.SIGINT) is not signal.SIG_IGN
    ):
        signal.signal(signal.SIGINT, _on_sigint)


def raise_if_interrupted() -> None:
    """Raise ``KeyboardInterrupt`` if a Ctrl-C arrived since :func:`install`, even one something swallowed."""
    if _interrupted.is_set():
        raise KeyboardInterrupt
