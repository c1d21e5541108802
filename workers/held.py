"""A worker's held blocks: the first `n` rows of its own `held` array, (pfn, order, tag)."""

import numpy as np
from numba import njit

from workers.counters import C_ALLOCS, count
from workers.detectors import claim_block, make_tag, poison_claim

HELD_FIELDS = ("pfn", "order", "tag")
H_PFN, H_ORDER, H_TAG = range(len(HELD_FIELDS))


def new_held(capacity):
    return np.zeros((capacity, len(HELD_FIELDS)), np.int64)


@njit(nogil=True, cache=True, _nrt=False, forceinline=True)
def held_put(held, n, pfn, order, tag):
    """Append a block to the first `n` rows of `held`; returns the new count."""
    held[n, H_PFN], held[n, H_ORDER], held[n, H_TAG] = pfn, order, tag
    return n + 1


@njit(nogil=True, cache=True, _nrt=False, forceinline=True)
def keep_block(z, t, me, held, n, pfn, order, seq, claimed):
    """A block just allocated: count it, claim it (unless the allocation `claimed` it
    already: harness.pcp.alloc from the lists) and stamp it with tag `seq`, hold it.

    Returns the new number of held blocks."""
    count(t, me, C_ALLOCS, 1)
    tag = make_tag(me, seq)
    if claimed:
        poison_claim(z, t, me, pfn, order, tag)
    else:
        claim_block(z, t, me, pfn, order, tag)
    return held_put(held, n, pfn, order, tag)


@njit(nogil=True, cache=True, _nrt=False, forceinline=True)
def held_take(held, n, j):
    """Remove row `j` of the first `n` (the last row moves into its place): (pfn, order, tag)."""
    pfn, order, tag = held[j, H_PFN], held[j, H_ORDER], held[j, H_TAG]
    held[j, H_PFN], held[j, H_ORDER], held[j, H_TAG] = \
        held[n - 1, H_PFN], held[n - 1, H_ORDER], held[n - 1, H_TAG]
    return pfn, order, tag
