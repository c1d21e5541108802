"""Converting flight-recorder timestamps (cycle counter) to CLOCK_MONOTONIC nanoseconds.

The runner takes a (cycles, ns) pair when a run starts and when it ends;
timestamps in between convert linearly.  With no cycle counter the two are
the same clock and the conversion is the identity.
"""

import time

from numba import njit

from harness.atomics import cycle_counter, monotonic_ns


@njit(nogil=True, cache=True)
def _pair():
    return cycle_counter(), monotonic_ns()


def clock_pair():
    """(cycles, ns) read back to back."""
    return _pair()


class Clock:
    """Linear map from cycle-counter readings to monotonic ns, between two pairs."""

    def __init__(self):
        self.start = clock_pair()
        self.end = None

    def stop(self):
        time.sleep(0.001)
        self.end = clock_pair()

    def ns(self, cycles):
        (c0, n0), (c1, n1) = self.start, self.end or clock_pair()
        if c1 == c0:
            return n0
        return int(n0 + (cycles - c0) * (n1 - n0) / (c1 - c0))
