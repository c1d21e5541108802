"""Memory layout: the zone table and the thread table, both int64 rows of 64 bytes.

Kernels take just these two arrays (plus scalars): a call then passes two
array descriptors instead of a dozen, which is what keeps a jitted call cheap.

Zone table `z`, shape (rows, 8), shared by all threads:

    rows 0 .. pages-1            struct page, row == pfn   (PG_* fields)
    rows LIST0 ..                11 free lists, then the capture lists (LS_* fields)
    rows LOCK0 ..                locks: zone, one per order-10 block, one per capture
                                 list, one per free-list order, the page-cache pool
    row  rows-2                  ctl: the run-wide stop word, written by the runner
    row  rows-1                  meta: configuration, fixed during a run (M_* fields)

Thread table `t`, shape (threads, T_ROWS, 8); slot `me` is written only by
its own thread (so harness bookkeeping never races):

    row T_STATE                  waiting-for lock row, heartbeat, ring position, ...
    row T_HELD                   lockdep held-lock stack (lock rows)
    rows T_EDGE0 + held class    lockdep: first site + 1 that took class `f` holding it
    row T_AUX                    chaos RNG state and hits; lockdep's slept-while-holding record
    rows T_COUNT0 ..             worker counters (see workers.counters)
    rows T_VIOL0 ..              the first violations this thread detected (V_* fields)
    rows T_RING0 ..              flight recorder: 2 entries a row of (op, pfn, order, ns)
"""

import numpy as np
from numba import njit

from harness import hierarchy as H

MAX_ORDER = 11
TOP = MAX_ORDER - 1
NAREAS = MAX_ORDER
W = 8                                   # int64 fields in a 64-byte row

# struct page
PG_STATE, PG_ORDER, PG_LIST, PG_NEXT, PG_PREV, PG_OWNER, PG_STAMP, PG_CLAIM = range(W)
TAIL, FREE, CAPTURED, ALLOC = range(4)

# list rows (free lists 0..10, then capture lists)
LS_HEAD, LS_COUNT, LS_STATE, LS_WANTED, LS_OWNER, LS_OWN, LS_OTHER, LS_MERGED = range(W)
UNUSED, OPEN, CLOSED = range(3)      # the phase of a capture list: LS_STATE & PHASE_MASK
PHASE_MASK, GENERATION = 3, 4         # LS_STATE = uses * GENERATION + phase: each reuse of a
                                      # row is a new generation, so a merge that set out for an
                                      # earlier use of the list never lands on a later one

# ctl and meta rows
CTL_STOP, CTL_PARK, CTL_ABORT = 0, 1, 2   # stop: between operations; abort: lock waits give up
(M_PAGES, M_SCHEME, M_NCAP, M_LIST0, M_BLOCK0, M_CAP0, M_AREA0, M_POOL0) = range(W)
(F_LOCKDEP, F_TRACE, F_FAULT, F_CHAOS, F_OWNERSHIP, F_POISON, F_STOP_ON_VIOLATION,
 F_CAPTURE_AUDIT) = range(8)
SCHEME_ZONE, SCHEME_FINE = 0, 1
SCHEMES = {"zone": SCHEME_ZONE, "fine": SCHEME_FINE}

# thread table
T_STATE, T_HELD = 0, 1
T_WAITING, T_HEARTBEAT, T_RING_POS, T_RNG, T_NHELD, T_LOCKDEP_ERR, T_NVIOL, T_PARKED = range(8)
MAX_HELD = W
T_EDGE0 = 2
T_AUX = 7                               # chaos RNG and lockdep's sleep-while-holding record
A_CHAOS_RNG, A_CHAOS_HITS, A_SLEPT_HOLDING, A_SLEPT_CLASS, A_SLEPT_WAITING, A_ABORTED = range(6)
T_COUNT0, COUNT_ROWS = 8, 8
T_VIOL0, VIOL_ROWS = T_COUNT0 + COUNT_ROWS, 4
RING = 256
T_RING0 = T_VIOL0 + VIOL_ROWS
T_ROWS = T_RING0 + RING // 2


@njit(nogil=True, cache=True, _nrt=False, forceinline=True)
def meta_row(z):
    return z.shape[0] - 2


@njit(nogil=True, cache=True, _nrt=False, forceinline=True)
def flags_row(z):
    return z.shape[0] - 1


@njit(nogil=True, cache=True, _nrt=False, forceinline=True)
def ctl_row(z):
    return z.shape[0] - 3


def ctl_row_py(z):
    """Python-side twin of `ctl_row`."""
    return z.shape[0] - 3


def new_zone_table(pages, scheme, ncap=64):
    """A fresh zone: as if every order-10 block were freed in increasing pfn order."""
    nblocks = pages >> TOP
    list0 = pages
    lock0 = list0 + NAREAS + ncap
    classes = np.concatenate([[H.ZONE], np.full(nblocks, H.BLOCK), np.full(ncap, H.CAPTURE),
                              np.full(NAREAS, H.AREA), [H.PAGECACHE]])
    rows = lock0 + len(classes) + 3
    raw = np.zeros(rows * W + W, np.int64)
    skip = (-raw.ctypes.data % 64) // 8           # 64-byte aligned rows
    z = raw[skip:skip + rows * W].reshape(rows, W)
    meta = z[rows - 2]
    meta[M_PAGES], meta[M_SCHEME], meta[M_NCAP], meta[M_LIST0] = pages, SCHEMES[scheme], ncap, list0
    meta[M_BLOCK0] = lock0 + 1
    meta[M_CAP0] = meta[M_BLOCK0] + nblocks
    meta[M_AREA0] = meta[M_CAP0] + ncap
    meta[M_POOL0] = meta[M_AREA0] + NAREAS
    z[lock0:lock0 + len(classes), 5] = classes    # L_CLASS
    pg = z[:pages]
    pg[:, PG_LIST] = pg[:, PG_NEXT] = pg[:, PG_PREV] = pg[:, PG_OWNER] = -1
    lists = z[list0:list0 + NAREAS + ncap]
    lists[:, LS_HEAD] = -1
    heads = np.arange(0, pages, 1 << TOP)
    pg[heads, PG_STATE], pg[heads, PG_ORDER], pg[heads, PG_LIST] = FREE, TOP, TOP
    pg[heads, PG_NEXT] = heads - (1 << TOP)       # highest pfn is the head
    pg[heads[0], PG_NEXT] = -1
    pg[heads, PG_PREV] = heads + (1 << TOP)
    pg[heads[-1], PG_PREV] = -1
    lists[TOP, LS_HEAD], lists[TOP, LS_COUNT] = heads[-1], nblocks
    return z


def new_thread_table(nthreads):
    """Per-thread tables for `nthreads` thread slots, all zero."""
    return np.zeros((nthreads, T_ROWS, W), np.int64)


class Sections:
    """Named NumPy views of a zone table, for Python-side readers (reports, checks)."""

    def __init__(self, z):
        meta = z[-2]
        self.pages_n = int(meta[M_PAGES])
        self.ncap = int(meta[M_NCAP])
        list0 = int(meta[M_LIST0])
        self.pages = z[:self.pages_n]
        self.lists = z[list0:list0 + NAREAS + self.ncap]
        self.lock0 = int(meta[M_BLOCK0]) - 1
        self.locks = z[self.lock0:z.shape[0] - 3]
        self.meta, self.flags, self.ctl = z[-2], z[-1], z[-3]
