"""Turn Ctrl-C and SIGTERM into a clean stop at the next training step.

A killed run loses at most the steps since its last checkpoint; a *signalled* one loses
nothing. While :class:`GracefulStop` is active, the first SIGINT or SIGTERM only records the
signal; the trainer sees it before its next step, writes ``last.ckpt`` at that step boundary
(so ``--resume`` continues exactly), tests the best model and writes its results marked
``complete: false``. A second signal interrupts at once (:class:`SecondSignal`, a
KeyboardInterrupt: the command exits as that signal). torchrun forwards SIGTERM
to every worker, and the trainer's stop vote keeps the processes in step.
"""

from __future__ import annotations

import signal
import threading

__all__ = ["GracefulStop", "SecondSignal"]

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class SecondSignal(KeyboardInterrupt):
    """A second SIGINT / SIGTERM inside :class:`GracefulStop`: stop at once. ``signal_name``
    says which, so the command exits as that signal's 128 + number."""

    def __init__(self, signal_name: str):
        super().__init__(signal_name)
        self.signal_name = signal_name


class GracefulStop:
    """Context manager: ``.requested`` names the first signal received inside it, else None.

    Handlers are installed only in the main thread (elsewhere Python forbids it, and the
    context does nothing); the previous handlers come back on exit.

    Example:
        >>> import os
        >>> with GracefulStop() as stop:
        ...     os.kill(os.getpid(), signal.SIGTERM)
        ...     stop.requested
        'SIGTERM'
    """

    def __init__(self):
        self.requested: str | None = None
        self._previous: dict[int, object] = {}

    def _handle(self, signum, frame):
        if self.requested is not None:
            raise SecondSignal(signal.Signals(signum).name)  # the user does not want to wait
        self.requested = signal.Signals(signum).name

    def __enter__(self) -> GracefulStop:
        if threading.current_thread() is threading.main_thread():
            for sig in _SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
