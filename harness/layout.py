"""Memory layout: the zone table and the thread table, int64 rows of 64 bytes, from field tables.

Kernels take just these two arrays (plus scalars): a call then passes two
array descriptors instead of a dozen, which is what keeps a jitted call cheap.
Every row and field offset below is derived from the tables in this module
(`ZONE_ROWS`, `THREAD_ROWS` and one field table per row kind), and the fit
is asserted at import; the layout part of this docstring is rendered from
the same tables (`render_layout`) and a test keeps it exact.

{layout}
"""

import numpy as np

from harness import jitcache  # noqa: F401  (sets the cache before any kernel)
from numba import njit

from harness import hierarchy as H
from harness import stamps

MAX_ORDER = 11
TOP = MAX_ORDER - 1
NAREAS = MAX_ORDER
W = 8                                   # int64 fields in a 64-byte row


def _fields(table):
    """Indices 0.. of a row's field table (names, one per int64 field); asserts it fits a row."""
    assert len(table) <= W, f"{len(table)} fields do not fit a row of {W}: {table}"
    assert len(set(table)) == len(table), table
    return range(len(table))


# ---------------------------------------------------------------- zone table: row kinds

PAGE_FIELDS = ("state", "order", "list", "next", "prev", "owner", "claim", "content")
PG_STATE, PG_ORDER, PG_LIST, PG_NEXT, PG_PREV, PG_OWNER, PG_CLAIM, PG_CONTENT = \
    _fields(PAGE_FIELDS)
# PG_CLAIM: the ownership detector's page word (workers.claims)
# PG_CONTENT: the poison detector's contents of a page that is a block of its own (order 0),
# in the row the allocator touches anyway; a larger block's pages keep theirs in the stamp
# rows below (workers.detectors: `page_stamp`)
TAIL, FREE, CAPTURED, ALLOC, PCP = range(5)     # PCP: on a per-CPU list (harness.pcp)

LIST_FIELDS = ("head", "count", "state", "wanted", "owner", "own", "other", "merged")
(LS_HEAD, LS_COUNT, LS_STATE, LS_WANTED, LS_OWNER, LS_OWN, LS_OTHER,
 LS_MERGED) = _fields(LIST_FIELDS)
UNUSED, OPEN, CLOSED = range(3)      # the phase of a capture list: LS_STATE & PHASE_MASK
PHASE_MASK, GENERATION = 3, 4         # LS_STATE = uses * GENERATION + phase: each reuse of a
                                      # row is a new generation, so a merge that set out for an
                                      # earlier use of the list never lands on a later one

LOCK_FIELDS = ("word", "owner", "acq", "cont", "wait_ns", "class", "tryfail", "isolate")
L_WORD, L_OWNER, L_ACQ, L_CONT, L_WAIT_NS, L_CLASS, L_TRYFAIL, L_ISOLATE = _fields(LOCK_FIELDS)
# L_ISOLATE: on a block lock's row only, the isolated range inside that order-10 block
# (harness.isolate), guarded by that block lock; 0 on every other lock row.

LOCKDEP_FIELDS = ("allowed",)           # bit held * NCLASSES + taken: a declared edge
(LD_ALLOWED,) = _fields(LOCKDEP_FIELDS)
assert H.NCLASSES * H.NCLASSES <= 62, "the allowed-edge bitmask must fit an int64"

CTL_FIELDS = ("stop", "park", "abort")    # stop: between operations; abort: lock waits give up
CTL_STOP, CTL_PARK, CTL_ABORT = _fields(CTL_FIELDS)

META_FIELDS = ("pages", "scheme", "ncap", "list0", "block0", "cap0", "area0", "pool0")
M_PAGES, M_SCHEME, M_NCAP, M_LIST0, M_BLOCK0, M_CAP0, M_AREA0, M_POOL0 = _fields(META_FIELDS)

FLAG_FIELDS = ("lockdep", "trace", "fault", "chaos", "ownership", "poison", "stop_on_violation",
               "capture_audit")
(F_LOCKDEP, F_TRACE, F_FAULT, F_CHAOS, F_OWNERSHIP, F_POISON, F_STOP_ON_VIOLATION,
 F_CAPTURE_AUDIT) = _fields(FLAG_FIELDS)

PCP_FIELDS = ("cpus", "batch", "high", "list0", "lock0")     # per-CPU lists (harness.pcp)
PCP_CPUS, PCP_BATCH, PCP_HIGH, PCP_LIST0, PCP_LOCK0 = _fields(PCP_FIELDS)
PCP_ORDERS = 4                          # orders 0..PAGE_ALLOC_COSTLY_ORDER have per-CPU lists

SCHED_FIELDS = ("mode", "depth", "steps", "seed", "step", "changed")  # harness.sched
SC_MODE, SC_DEPTH, SC_STEPS, SC_SEED, SC_STEP, SC_CHANGED = _fields(SCHED_FIELDS)
SCHED_OFF, SCHED_PCT, SCHED_PCT_SITES = 0, 1, 2

# The detectors' words beside the page rows, so that work over a large block runs through
# consecutive memory: the poison detector's page contents, 16 bits a page, 4 to a word
# (POISON when free, else an allocation tag; workers.detectors), for the pages of blocks of
# 2 or more pages (an order-0 block's is its row's PG_CONTENT), then the ownership
# detector's group words, one per 16 pages (workers.claims).
STAMP_DTYPE = np.uint16                 # a page's contents, as poison sees them
STAMP_BITS = stamps.BITS
STAMP_SHIFT = 2                         # 4 stamps to a word: page pfn's is in word pfn >> 2
assert STAMP_BITS << STAMP_SHIFT == 64 and np.dtype(STAMP_DTYPE).itemsize * 8 == STAMP_BITS
STAMP_ROW_SHIFT = STAMP_SHIFT + 3       # 32 stamps to a row
GROUP_SHIFT = 4                         # ownership groups: 16 pages (workers.claims)

REDZONE_FIELDS = ("must stay zero",)    # the last row: where a stray index -1 lands

SCHEME_ZONE, SCHEME_FINE = 0, 1
SCHEMES = {"zone": SCHEME_ZONE, "fine": SCHEME_FINE}

# The zone table, top to bottom: (name, rows, fields, what).  Sized per zone; the last
# rows are fixed and addressed from the end (`tail_row`).
ZONE_ROWS = (
    ("pages", "pages", PAGE_FIELDS, "struct page, row == pfn"),
    ("stamps", "pages / 32", ("4 stamps",) * W,
     "poison: page contents in blocks of 2+ pages, 16 bits a page, halfword pfn"),
    ("lists", "11 + ncap + 4 * cpus", LIST_FIELDS,
     "free lists 0..10, the capture lists, per-CPU lists"),
    ("locks", "1 + blocks + ncap + 11 + 1 + cpus", LOCK_FIELDS,
     "zone, blocks, capture lists, areas, pool, pcp"),
    ("pcp", 1, PCP_FIELDS, "per-CPU lists: cpus (0: none), batch, high, first list, lock"),
    ("lockdep", 1, LOCKDEP_FIELDS, "declared lock-order edges (hierarchy)"),
    ("ctl", 1, CTL_FIELDS, "control words: runner, lockdep"),
    ("meta", 1, META_FIELDS, "geometry and scheme, fixed at construction"),
    ("flags", 1, FLAG_FIELDS, "detectors, fault and chaos, fixed during a run"),
    ("sched", 1, SCHED_FIELDS, "controlled scheduling: mode, PCT depth, round length, step,"
     " changes taken this round (pct-sites)"),
    ("redzone", 1, REDZONE_FIELDS, "zero; a write at index -1 lands here, not in the flags"),
)
TAIL_ROWS = tuple(name for name, rows, _, _ in ZONE_ROWS if rows == 1)
assert [name for name, *_ in ZONE_ROWS[-len(TAIL_ROWS):]] == list(TAIL_ROWS)
PCP_BACK, LOCKDEP_BACK, CTL_BACK, META_BACK, FLAGS_BACK, SCHED_BACK, REDZONE_BACK = (
    len(TAIL_ROWS) - k for k in range(len(TAIL_ROWS)))
assert REDZONE_BACK == 1, "the redzone must be the last row"


@njit(nogil=True, cache=True, _nrt=False, forceinline=True)
def pcp_row(z):
    return z.shape[0] - PCP_BACK


@njit(nogil=True, cache=True, _nrt=False, forceinline=True)
def lockdep_row(z):
    return z.shape[0] - LOCKDEP_BACK


@njit(nogil=True, cache=True, _nrt=False, forceinline=True)
def ctl_row(z):
    return z.shape[0] - CTL_BACK


@njit(nogil=True, cache=True, _nrt=False, forceinline=True)
def meta_row(z):
    return z.shape[0] - META_BACK


@njit(nogil=True, cache=True, _nrt=False, forceinline=True)
def flags_row(z):
    return z.shape[0] - FLAGS_BACK


@njit(nogil=True, cache=True, _nrt=False, forceinline=True)
def sched_row(z):
    return z.shape[0] - SCHED_BACK


@njit(nogil=True, cache=True, _nrt=False, forceinline=True)
def zone_pages(z):
    """Pages in the zone: also the most blocks any list can hold, so a walk that goes
    further is going round a cycle."""
    return z[meta_row(z), M_PAGES]


@njit(nogil=True, cache=True, _nrt=False, forceinline=True)
def stamp_row0(z):
    """First row of the stamps (right below the page rows): page pfn's stamp is halfword
    pfn from here."""
    return zone_pages(z)


@njit(nogil=True, cache=True, _nrt=False, forceinline=True)
def group_row0(z):
    """First row of the group words: group g's word is word g from here."""
    pages = zone_pages(z)
    return pages + (pages >> STAMP_ROW_SHIFT)


def detector_rows(pages):
    """Rows of the stamps and group words of a zone of `pages` pages."""
    return (pages >> STAMP_ROW_SHIFT) + (pages >> (3 + GROUP_SHIFT))


def ctl_row_py(z):
    """Python-side twin of `ctl_row`."""
    return z.shape[0] - CTL_BACK


# ---------------------------------------------------------------- thread table: row kinds

STATE_FIELDS = ("waiting", "heartbeat", "ring_pos", "rng", "nheld", "lockdep_err", "nviol",
                "parked")
(T_WAITING, T_HEARTBEAT, T_RING_POS, T_RNG, T_NHELD, T_LOCKDEP_ERR, T_NVIOL,
 T_PARKED) = _fields(STATE_FIELDS)

MAX_HELD = W                            # the held-lock stack: one row of lock rows

AUX_FIELDS = ("chaos_rng", "chaos_hits", "slept_holding", "slept_class", "slept_waiting",
              "aborted", "slept_stamp", "unheld_stamp")
(A_CHAOS_RNG, A_CHAOS_HITS, A_SLEPT_HOLDING, A_SLEPT_CLASS, A_SLEPT_WAITING, A_ABORTED,
 A_SLEPT_STAMP, A_UNHELD_STAMP) = _fields(AUX_FIELDS)

WITNESS_FIELDS = ("count", "kind", "lock", "other", "site", "stamp")   # harness.witness
(W_COUNT, W_KIND, W_LOCK, W_OTHER, W_SITE, W_STAMP) = _fields(WITNESS_FIELDS)

TSCHED_FIELDS = ("state", "prio", "round", "points", "waits", "changes", "timeouts")
(TS_STATE, TS_PRIO, TS_ROUND, TS_POINTS, TS_WAITS, TS_CHANGES, TS_TIMEOUTS) = _fields(TSCHED_FIELDS)

CAPSTAT_FIELDS = ("own", "other", "merged", "found")  # the last finished capture list's
CS_OWN, CS_OTHER, CS_MERGED, CS_FOUND = _fields(CAPSTAT_FIELDS)   # statistics, pages found on it

RING_FIELDS = ("event", "stamp")        # one flight-recorder entry: harness.tracing packs
R_EVENT, R_STAMP = _fields(RING_FIELDS)  # op, order and pfn into its event word
RING_PER_ROW = W // len(RING_FIELDS)
RING = 256                              # entries per thread

COUNT_ROWS = 8                          # worker counters (workers.counters asserts its fit)
VIOL_ROWS = 4                           # first violations a thread records (workers.detectors)
COUNT_REF_ROWS = 2                      # page-reference and migration counters

assert H.NCLASSES <= W, "lockdep edge rows hold one column per lock class"
assert RING % RING_PER_ROW == 0

# The thread table of one thread slot, top to bottom: (name, rows, fields, what).
# Slot `me` is written only by its own thread, so harness bookkeeping never races.
THREAD_ROWS = (
    ("state", 1, STATE_FIELDS, "waiting-for lock row + 1, heartbeat, ring position, ..."),
    ("held", 1, ("lock row",) * MAX_HELD, "lockdep's held-lock stack"),
    ("edge", H.NCLASSES, H.CLASS_NAMES,
     "lockdep: [held class, taken class] = first site + 1"),
    ("edge_stamp", H.NCLASSES, H.CLASS_NAMES,
     "lockdep: [held class, taken class] = its first stamp"),
    ("aux", 1, AUX_FIELDS, "chaos RNG, abort mark, lockdep's sleep/unlock records"),
    ("capstat", 1, CAPSTAT_FIELDS, "the last finished capture list's statistics"),
    ("witness", 1, WITNESS_FIELDS, "mutual-exclusion witness: first finding, count"),
    ("sched", 1, TSCHED_FIELDS, "controlled scheduling: state, priority, round, counts"),
    ("count", COUNT_ROWS, ("counter",) * W, "worker counters (workers.counters)"),
    ("viol", VIOL_ROWS, ("violation field",) * W, "first violations found (workers.detectors)"),
    ("ring", RING // RING_PER_ROW, RING_FIELDS * RING_PER_ROW,
     f"flight recorder: {RING_PER_ROW} entries a row (harness.tracing)"),
    ("count_ref", COUNT_REF_ROWS, ("counter",) * W,
     "page-reference and migration counters (workers.counters)"),
)


def _offsets(rows):
    out, at = {}, 0
    for name, n, fields, _ in rows:
        assert len(fields) <= W, (name, fields)
        out[name] = at
        at += n
    return out, at


_T, T_ROWS = _offsets(THREAD_ROWS)
(T_STATE, T_HELD, T_EDGE0, T_EDGE_STAMP0, T_AUX, T_CAPSTAT, T_WITNESS, T_SCHED, T_COUNT0,
 T_VIOL0, T_RING0, T_COUNT_REF0) = (_T[name] for name, *_ in THREAD_ROWS)
assert T_EDGE_STAMP0 - T_EDGE0 == H.NCLASSES, "one lockdep edge row per lock class"
assert T_AUX - T_EDGE_STAMP0 == H.NCLASSES, "one lockdep edge-stamp row per lock class"


def render_layout():
    """The layout part of the module docstring, rendered from the row tables."""
    from textwrap import wrap

    def fields(names):
        names = list(dict.fromkeys(names))
        return wrap("fields: " + ", ".join(names), 96, initial_indent=" " * 8,
                    subsequent_indent=" " * 16) if len(names) > 1 or names[0] != "counter" else []

    out = ["Zone table `z`, shape (rows, 8), shared by all threads, top to bottom (rows):", ""]
    for name, n, names, what in ZONE_ROWS:
        out.append(f"    {name:<8} {str(n):<26} {what}")
        out += fields(names)
    out += ["", "Thread table `t`, shape (threads, T_ROWS, 8); slot `me` is written only by",
            "its own thread, so harness bookkeeping never races:", ""]
    for name, n, names, what in THREAD_ROWS:
        out.append(f"    {name:<10} rows {_T[name]:>3} .. {_T[name] + n - 1:<4} {what}")
        if len(set(names)) > 1:
            out += fields(names)
    out.append(f"    ({T_ROWS} rows a thread)")
    return "\n".join(out)


__doc__ = __doc__.format(layout=render_layout())


# ---------------------------------------------------------------- construction

def new_zone_table(pages, scheme, ncap=64, cpus=0, batch=1, high=1):
    """A fresh zone: as if every order-10 block were freed in increasing pfn order.

    `cpus` > 0 adds per-CPU lists (harness.pcp) for that many CPUs (thread slots)."""
    nblocks = pages >> TOP
    list0 = pages + detector_rows(pages)
    lock0 = list0 + NAREAS + ncap + PCP_ORDERS * cpus
    classes = np.concatenate([[H.ZONE], np.full(nblocks, H.BLOCK), np.full(ncap, H.CAPTURE),
                              np.full(NAREAS, H.AREA), [H.PAGECACHE], np.full(cpus, H.PCP)])
    rows = lock0 + len(classes) + len(TAIL_ROWS)
    z = _line_aligned(rows)
    meta = z[rows - META_BACK]
    meta[M_PAGES], meta[M_SCHEME], meta[M_NCAP], meta[M_LIST0] = pages, SCHEMES[scheme], ncap, list0
    meta[M_BLOCK0] = lock0 + 1
    meta[M_CAP0] = meta[M_BLOCK0] + nblocks
    meta[M_AREA0] = meta[M_CAP0] + ncap
    meta[M_POOL0] = meta[M_AREA0] + NAREAS
    z[rows - LOCKDEP_BACK, LD_ALLOWED] = allowed_mask(scheme)
    pcp = z[rows - PCP_BACK]
    pcp[PCP_CPUS], pcp[PCP_BATCH], pcp[PCP_HIGH] = cpus, batch, high
    pcp[PCP_LIST0], pcp[PCP_LOCK0] = NAREAS + ncap, meta[M_POOL0] + 1
    z[lock0:lock0 + len(classes), L_CLASS] = classes
    pg = z[:pages]
    pg[:, PG_LIST] = pg[:, PG_NEXT] = pg[:, PG_PREV] = pg[:, PG_OWNER] = -1
    lists = z[list0:list0 + NAREAS + ncap + PCP_ORDERS * cpus]
    lists[:, LS_HEAD] = -1
    heads = np.arange(0, pages, 1 << TOP)
    pg[heads, PG_STATE], pg[heads, PG_ORDER], pg[heads, PG_LIST] = FREE, TOP, TOP
    pg[heads, PG_NEXT] = heads - (1 << TOP)       # highest pfn is the head
    pg[heads[0], PG_NEXT] = -1
    pg[heads, PG_PREV] = heads + (1 << TOP)
    pg[heads[-1], PG_PREV] = -1
    lists[TOP, LS_HEAD], lists[TOP, LS_COUNT] = heads[-1], nblocks
    return z


def allowed_mask(scheme):
    """The declared edges of `scheme` as the bitmask lockdep's kernels test."""
    return sum(1 << (held * H.NCLASSES + taken) for held, taken in H.allowed_edges(scheme))


def new_thread_table(nthreads):
    """Per-thread tables for `nthreads` thread slots, all zero, each row a cache line (a
    row that straddled two would share one with the next thread's first row, T_STATE)."""
    return _line_aligned(nthreads * T_ROWS).reshape(nthreads, T_ROWS, W)


def _line_aligned(nrows):
    """A zeroed (nrows, W) table whose rows start on 64-byte cache lines: NumPy aligns to
    16 bytes only."""
    raw = np.zeros(nrows * W + W, np.int64)
    skip = (-raw.ctypes.data % 64) // 8
    return raw[skip:skip + nrows * W].reshape(nrows, W)


class Sections:
    """Named NumPy views of a zone table, for Python-side readers (reports, checks)."""

    def __init__(self, z):
        rows = z.shape[0]
        meta = z[rows - META_BACK]
        self.pages_n = int(meta[M_PAGES])
        self.ncap = int(meta[M_NCAP])
        list0 = int(meta[M_LIST0])
        self.pcp = z[rows - PCP_BACK]
        self.cpus = int(self.pcp[PCP_CPUS])
        self.pages = z[:self.pages_n]
        n = self.pages_n
        g0 = n + (n >> STAMP_ROW_SHIFT)
        self.stamps = z[n:g0].reshape(-1).view(STAMP_DTYPE)           # [pfn] in blocks of 2+
        self.contents = self.pages[:, PG_CONTENT]                    # [pfn] of order-0 blocks
        self.groups = z[g0:g0 + (n >> (3 + GROUP_SHIFT))].reshape(-1)  # [pfn >> GROUP_SHIFT]
        self.lists = z[list0:list0 + NAREAS + self.ncap + PCP_ORDERS * self.cpus]
        self.lock0 = int(meta[M_BLOCK0]) - 1
        self.locks = z[self.lock0:rows - len(TAIL_ROWS)]
        self.meta, self.flags, self.ctl = meta, z[rows - FLAGS_BACK], z[rows - CTL_BACK]
        self.sched, self.redzone = z[rows - SCHED_BACK], z[rows - REDZONE_BACK]
        self.lockdep = z[rows - LOCKDEP_BACK]
