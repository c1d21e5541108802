"""The flight recorder: a per-thread ring of recent operations (op, pfn, order, cycle stamp).

`trace` appends in the kernels; `thread_ring` decodes one thread's ring with
the same field table (harness.layout.RING_FIELDS).  An entry is two words, four to a
64-byte row: the event word (op | CARRIED | order << ORDER_SHIFT | pfn << PFN_SHIFT; pfn
below 2**24 = MAX_PAGES, so it fits with room to spare) and the stamp: at most two stores
an event, and a new cache line every fourth event.

Stamps.  An event reads the cycle counter (about 10 ns a read in this VM: a fifth of an
allocation from a per-CPU list), except a per-CPU list event (pcp-alloc, pcp-free) at a
ring position that is not a multiple of CARRY_SPAN: its event word is marked CARRIED and
it stores no stamp (one store, no load); the decoder gives it the stamp of the thread's
previous event that read the counter.  So the oldest carried events of a full ring, up
to CARRY_SPAN - 1, whose stamp has gone round, are not decoded.  A carried stamp is a
lower bound: the event happened after it and before the thread's next event that read
the counter.

Cross-thread order stays exact in a correct run: a block reaches a thread's per-CPU list
events only through that thread's own buddy allocation (a refill, an event that reads
the counter, after every other thread's event on its pages) and leaves them only
through a free of its own or a drainer's (events that read the counter, after the
carried one).  Only a run where two threads take the same block (what the detectors
report) can put another thread's event inside a carried event's window; harness.race
then says the order was not recorded.
"""

from numba import njit, uint64

from harness.atomics import cycle_counter
from harness.layout import (F_TRACE, RING, RING_FIELDS, RING_PER_ROW, R_EVENT, R_STAMP,
                            T_RING0, T_RING_POS, T_STATE)
from harness.seams import flag_on

OP_ALLOC, OP_FREE, OP_CAPFREE, OP_CAPSTART, OP_CAPFINISH, OP_CAPTURED = 1, 2, 3, 4, 5, 6
OP_PCP_ALLOC, OP_PCP_FREE = 7, 8        # harness.pcp: from / onto the thread's per-CPU list
CARRIED = 1 << 8                        # in an event word: no stamp stored; the thread's
                                        # previous counter read is its stamp
ORDER_SHIFT, ORDER_MASK = 9, 0x7F       # an event word: op | CARRIED | order | pfn
PFN_SHIFT = 16                          # (pfn >> PFN_SHIFT: arithmetic, so -1 survives)
CARRY_SPAN = 16                         # at most CARRY_SPAN - 1 carried stamps in a row
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
def _entry(pos):
    """(row, column) in a thread's table of the entry written at ring position `pos` >= 0
    (unsigned: no sign fix-ups)."""
    slot = uint64(pos) % uint64(RING)
    return uint64(T_RING0) + slot // uint64(RING_PER_ROW), \
        (slot % uint64(RING_PER_ROW)) * uint64(_WIDTH)


@njit(nogil=True, cache=True, _nrt=False, forceinline=True)
def _record(t, me, op, pfn, order):
    """The append itself, inlined at each site (a handful): as a call it cost about as much
    as the allocator's whole operation (the thread table's descriptor passed word by word,
    the caller's registers spilled around it), where inlined it costs the cycle-counter
    read and two stores, or for a carried event one store (see the module's docstring).
    `op` is a constant at every site, so the choice folds away but at the per-CPU list's
    two.  Off, the flag test skips it."""
    pos = t[me, T_STATE, T_RING_POS]
    row, col = _entry(pos)
    event = op | (order << ORDER_SHIFT) | (pfn << PFN_SHIFT)
    if (op == OP_PCP_ALLOC or op == OP_PCP_FREE) and uint64(pos) % uint64(CARRY_SPAN) != 0:
        t[me, row, col + uint64(R_EVENT)] = event | CARRIED
    else:
        t[me, row, col + uint64(R_EVENT)] = event
        t[me, row, col + uint64(R_STAMP)] = cycle_counter()
    t[me, T_STATE, T_RING_POS] = pos + 1


def thread_ring(t, i):
    """Thread `i`'s recorded events, oldest first: {op (name), pfn, order, stamp (raw
    cycles)}; an event whose stamp was carried also has "carried": True and "until": the
    stamp of the thread's next event that read the counter (None: none recorded since)."""
    pos = int(t[i, T_STATE, T_RING_POS])
    out = []
    stamp = None
    for p in range(max(0, pos - RING), pos):
        row, col = (int(x) for x in _entry.py_func(p))
        e = t[i, row, col:col + _WIDTH]
        word = int(e[R_EVENT])
        op, carried = word & (CARRIED - 1), bool(word & CARRIED)
        if not carried:
            stamp = int(e[R_STAMP])
        elif stamp is None:
            continue                    # its stamp went round the ring before it
        out.append({"op": OP_NAMES.get(op, str(op)), "pfn": word >> PFN_SHIFT,
                    "order": (word >> ORDER_SHIFT) & ORDER_MASK, "stamp": stamp})
        if carried:
            out[-1]["carried"] = True
    until = None
    for e in reversed(out):
        if e.get("carried"):
            e["until"] = until
        else:
            until = e["stamp"]
    return out
