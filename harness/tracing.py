"""The flight recorder: a per-thread ring of recent operations (op, pfn, order, cycle stamp).

`trace` appends in the kernels; `thread_ring` decodes one thread's ring with
the same field table (harness.layout.RING_FIELDS).
"""

from numba import njit

from harness.atomics import cycle_counter
from harness.layout import (F_TRACE, RING, RING_FIELDS, RING_PER_ROW, R_OP, R_ORDER, R_PFN,
                            R_STAMP, T_RING0, T_RING_POS, T_STATE)
from harness.seams import flag_on

OP_ALLOC, OP_FREE, OP_CAPFREE, OP_CAPSTART, OP_CAPFINISH, OP_CAPTURED = 1, 2, 3, 4, 5, 6
OP_PCP_ALLOC, OP_PCP_FREE = 7, 8        # harness.pcp: from / onto the thread's per-CPU list
OP_NAMES = {OP_ALLOC: "alloc", OP_FREE: "free", OP_CAPFREE: "free-capture",
            OP_CAPSTART: "capture_start", OP_CAPFINISH: "capture_finish",
            OP_CAPTURED: "captured-other", OP_PCP_ALLOC: "pcp-alloc", OP_PCP_FREE: "pcp-free"}
_WIDTH = len(RING_FIELDS)


@njit(nogil=True, cache=True, _nrt=False, forceinline=True)
def trace(z, t, me, op, pfn, order):
    """Append (op, pfn, order, cycle counter) to this thread's ring, when tracing is on."""
    if flag_on(z, F_TRACE):
        _record(t, me, op, pfn, order)


@njit(nogil=True, cache=True, _nrt=False, forceinline=True)
def _record(t, me, op, pfn, order):
    """The append itself, inlined at each site (a handful): as a call it cost about as much
    as the allocator's whole operation (the thread table's descriptor passed word by word,
    the caller's registers spilled around it), where inlined it costs the cycle-counter
    read and four stores.  Off, the flag test skips it."""
    pos = t[me, T_STATE, T_RING_POS]
    slot = pos % RING
    row, col = T_RING0 + slot // RING_PER_ROW, (slot % RING_PER_ROW) * _WIDTH
    t[me, row, col + R_OP] = op
    t[me, row, col + R_PFN] = pfn
    t[me, row, col + R_ORDER] = order
    t[me, row, col + R_STAMP] = cycle_counter()
    t[me, T_STATE, T_RING_POS] = pos + 1


def thread_ring(t, i):
    """Thread `i`'s recorded events, oldest first: {op (name), pfn, order, stamp (raw cycles)}."""
    pos = int(t[i, T_STATE, T_RING_POS])
    out = []
    for p in range(max(0, pos - RING), pos):
        slot = p % RING
        col = (slot % RING_PER_ROW) * _WIDTH
        e = t[i, T_RING0 + slot // RING_PER_ROW, col:col + _WIDTH]
        op = int(e[R_OP])
        out.append({"op": OP_NAMES.get(op, str(op)), "pfn": int(e[R_PFN]),
                    "order": int(e[R_ORDER]), "stamp": int(e[R_STAMP])})
    return out
