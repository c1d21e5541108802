"""SIGTERM and SIGHUP stop a command the way Ctrl-C does.

A CI cancel or `timeout` sends SIGTERM, a closed terminal SIGHUP; both raise
`Interrupted` (a KeyboardInterrupt) in the main thread, so the one
interrupt path stops the workers, keeps what was measured and writes the
partial report.  The exit status is the shell's convention, 128 + signal.
"""

import signal


class Interrupted(KeyboardInterrupt):
    """An interrupt by signal `signum`."""

    def __init__(self, signum):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def exit_status(exc):
    """128 + the signal number: 130 for Ctrl-C, 143 for SIGTERM, 129 for SIGHUP."""
    return 128 + getattr(exc, "signum", signal.SIGINT)


def signal_name(exc):
    return signal.Signals(getattr(exc, "signum", signal.SIGINT)).name


def _raise(signum, frame):
    raise Interrupted(signum)


def install():
    """Route SIGTERM and SIGHUP to `Interrupted` (main thread only); returns a function
    that puts the previous handlers back."""
    import threading
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = {sig: signal.signal(sig, _raise) for sig in (signal.SIGTERM, signal.SIGHUP)}

    def restore():
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return restore


def reraise_if_interrupted(result):
    """Raise the interrupt a run caught, so a caller that runs many stops too."""
    if result.get("outcome") == "interrupted":
        raise Interrupted((result.get("signal_exit") or 130) - 128)


def shielded(fn):
    """`fn()` run in a daemon thread while the main thread waits for it; its result, or its
    exception re-raised.

    A signal then interrupts the wait at once and never `fn` itself: Numba compiles
    through ctypes callbacks, and an interrupt raised inside one is swallowed and leaves
    the compiler half-done (an unrelated error later, with a traceback).  An interrupted
    `fn` is abandoned; the process is about to exit.
    """
    import threading
    if threading.current_thread() is not threading.main_thread():
        return fn()
    box = {}

    def target():
        try:
            box["value"] = fn()
        except BaseException as exc:        # re-raised in the caller's thread
            box["error"] = exc

    worker = threading.Thread(target=target, name="shielded", daemon=True)
    worker.start()
    while worker.is_alive():
        worker.join(0.1)
    if "error" in box:
        raise box["error"]
    return box["value"]
