"""Ctrl-C that a library cannot swallow.

Some imports catch every exception, ``KeyboardInterrupt`` included (scipy's array-API shim importing numpy's
f2py is one), so a Ctrl-C that lands there is lost and the job runs on. :func:`install` makes the SIGINT handler
also record the interrupt, and long loops (sampling steps, decoded meshes) call :func:`raise_if_interrupted`.
A Ctrl-C that lands in a finaliser (``__del__``, common while a large library imports) cannot propagate and
Python would print it as "Exception ignored ... Traceback"; it is recorded the same way and stays silent.
"""

from __future__ import annotations

import signal
import sys
import threading

_interrupted = threading.Event()


def _on_sigint(signum: int, frame: object) -> None:
    _interrupted.set()
    raise KeyboardInterrupt


_next_hook = sys.unraisablehook


def _unraisable(info: sys.UnraisableHookArgs) -> None:
    """A ``KeyboardInterrupt`` raised inside a finaliser: recorded, no traceback; others go to the previous hook."""
    if isinstance(info.exc_value, KeyboardInterrupt):
        _interrupted.set()
        return
    _next_hook(info)


def install() -> None:
    """Record Ctrl-C as well as raising it (main thread only; a SIGINT ignored by the parent stays ignored)."""
    global _next_hook
    _interrupted.clear()
    if sys.unraisablehook is not _unraisable:
        _next_hook, sys.unraisablehook = sys.unraisablehook, _unraisable
    if (
        threading.current_thread() is threading.main_thread()
        and signal.getsignal(signal.SIGINT) is not signal.SIG_IGN
    ):
        signal.signal(signal.SIGINT, _on_sigint)


def raise_if_interrupted() -> None:
    """Raise ``KeyboardInterrupt`` if a Ctrl-C arrived since :func:`install`, even one something swallowed."""
    if _interrupted.is_set():
        raise KeyboardInterrupt
