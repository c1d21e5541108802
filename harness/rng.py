"""Seeded per-thread random numbers for kernels: xorshift64*, state kept in a local int64.

Usage in a kernel: `x = step(x); r = bounded(x, n)`; store `x` back to the
thread's row when the loop ends, so the same seed replays the same stream.
"""

from harness import jitcache  # noqa: F401  (sets the cache before any kernel)
from numba import njit


@njit(nogil=True, cache=True, _nrt=False, forceinline=True)
def step(x):
    """The next xorshift64 state (never 0 for a non-zero start)."""
    x ^= (x >> 12) & 0x000FFFFFFFFFFFFF      # logical shifts on a signed int64
    x ^= x << 25
    x ^= (x >> 27) & 0x0000001FFFFFFFFF
    return x


@njit(nogil=True, cache=True, _nrt=False, forceinline=True)
def bounded(x, n):
    """A random int in 0..n-1 from state `x` (n < 2**31): multiply-shift, no division."""
    r = ((x * 2685821657736338717) >> 33) & 0x7FFFFFFF
    return (r * n) >> 31


def seed_state(seed, stream):
    """Non-zero 63-bit start state for stream `stream` of run seed `seed` (splitmix64)."""
    x = (seed * 0x9E3779B97F4A7C15 + stream * 0xBF58476D1CE4E5B9 + 0x94D049BB133111EB) % (1 << 64)
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) % (1 << 64)
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) % (1 << 64)
    return (x ^ (x >> 31)) % (1 << 63) or 1
