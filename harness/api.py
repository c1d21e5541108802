"""`Zone`: the Python face of the allocator kernels (DESIGN section 3).

It checks arguments, maps capture handles (0, 1, 2, ... never reused) to
capture-list rows, and turns kernel status codes into `ValueError`.  Calls go
through thread slot 0; a Zone object is not meant for concurrent Python use
(the stress workers call the kernels directly, each with its own slot).

By default a Zone has no per-CPU lists, so it follows DESIGN section 3 exactly.
`Zone(..., pcp=True, cpus=N)` adds them (harness.pcp has their semantics):
`alloc`/`free` then take `cpu=` (the thread slot the call runs as), and
`drain_pages`, `pcp_list` and `pcp_counts` appear.
"""

from harness import bare
from harness import layout as L
from harness import pcp as P
from harness import migrate as M
from harness import zone as Z
from harness.isolate import ISOLATE, OWN_ONLY
from harness.invariants import check_zone


class Zone:
    """A buddy zone of `pages` page frames under the `locking` scheme ("fine" or "zone")."""

    def __init__(self, pages=1 << 16, locking="fine", capture_lists=64, lockdep=False,
                 pcp=False, cpus=1, pcp_batch=16, pcp_high=96):
        if isinstance(pages, bool) or not isinstance(pages, int) or pages <= 0 \
                or pages % (1 << L.TOP):
            raise ValueError(f"pages must be a positive multiple of {1 << L.TOP}, got {pages!r}")
        if locking not in L.SCHEMES:
            raise ValueError(f"locking must be one of {sorted(L.SCHEMES)}, got {locking!r}")
        for name, v in (("cpus", cpus), ("pcp_batch", pcp_batch), ("pcp_high", pcp_high)):
            if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= 1 << 16:
                raise ValueError(f"{name} must be an int in 1..65536, got {v!r}")
        if pcp_batch > pcp_high:
            raise ValueError(f"pcp_batch ({pcp_batch}) cannot exceed pcp_high ({pcp_high})")
        if lockdep and bare.active():
            raise ValueError(f"lockdep=True needs the full build: unset {bare.ENV}")
        self.pages, self.locking, self.pcp = pages, locking, bool(pcp)
        self.cpus = cpus if pcp else 1
        self.table = L.new_zone_table(pages, locking, capture_lists, cpus if pcp else 0,
                                      pcp_batch, pcp_high)
        self.threads = L.new_thread_table(self.cpus)
        self.sections = L.Sections(self.table)
        self.sections.flags[L.F_LOCKDEP] = bool(lockdep)
        self._lists = {}            # open capture handle -> list row
        self._ranges = {}           # open isolation handle -> (base, order)
        self._next_handle = 0

    def _order(self, order, low=0):
        if isinstance(order, bool) or not isinstance(order, int) or not low <= order <= L.TOP:
            raise ValueError(f"order must be an int in {low}..{L.TOP}, got {order!r}")

    def _list(self, c):
        try:
            return self._lists[c]
        except (KeyError, TypeError):
            raise ValueError(f"capture list {c!r} is unknown or already finished") from None

    def _cpu(self, cpu):
        if isinstance(cpu, bool) or not isinstance(cpu, int) or not 0 <= cpu < self.cpus:
            raise ValueError(f"cpu must be an int in 0..{self.cpus - 1}, got {cpu!r}")

    def _percpu(self):
        if not self.pcp:
            raise ValueError("this zone has no per-CPU lists (Zone(..., pcp=True))")

    def alloc(self, order, cpu=0):
        """Allocate a block of 2**order pages; its first pfn, or None when nothing fits."""
        self._order(order)
        self._cpu(cpu)
        kernel = P.alloc if self.pcp else Z.alloc_block     # without lists: the buddy itself
        pfn = kernel(self.table, self.threads, cpu, order)
        return None if pfn == Z.NONE else pfn

    def free(self, pfn, order, capture=None, cpu=0):
        """Free an allocated block; with `capture`, into that open capture list."""
        self._order(order)
        self._cpu(cpu)
        if isinstance(pfn, bool) or not isinstance(pfn, int) or not 0 <= pfn < self.pages:
            raise ValueError(f"pfn must be an int in 0..{self.pages - 1}, got {pfn!r}")
        target = -1 if capture is None else self._list(capture)
        kernel = P.free if self.pcp else Z.free_block
        if kernel(self.table, self.threads, cpu, pfn, order, target) == Z.EINVAL:
            raise ValueError(f"pfn {pfn} is not the head of an allocated block of order {order}")

    def drain_pages(self, cpu=None):
        """Return CPU `cpu`'s per-CPU blocks to the buddy (all CPUs' when None, in turn)."""
        self._percpu()
        if cpu is None:
            return P.drain_all_pages(self.table, self.threads, 0)
        self._cpu(cpu)
        return P.drain_cpu(self.table, self.threads, cpu, cpu)

    def pcp_list(self, cpu, order):
        """The pfns on CPU `cpu`'s list of `order` (0..3), head first."""
        self._percpu()
        self._cpu(cpu)
        if isinstance(order, bool) or not isinstance(order, int) or \
                not 0 <= order < L.PCP_ORDERS:
            raise ValueError(f"order must be an int in 0..{L.PCP_ORDERS - 1}, got {order!r}")
        row = int(self.sections.pcp[L.PCP_LIST0]) + cpu * L.PCP_ORDERS + order
        pages, out, p = self.sections.pages, [], int(self.sections.lists[row, L.LS_HEAD])
        while p >= 0:
            out.append(p)
            p = int(pages[p, L.PG_NEXT])
        return out

    def pcp_counts(self, cpu):
        """Blocks on CPU `cpu`'s lists, orders 0..3 (the lists' counts)."""
        self._percpu()
        self._cpu(cpu)
        row = int(self.sections.pcp[L.PCP_LIST0]) + cpu * L.PCP_ORDERS
        return [int(n) for n in self.sections.lists[row:row + L.PCP_ORDERS, L.LS_COUNT]]

    def capture_start(self, order, own_only=False):
        """Open an empty capture list for a reclaimer that wants a block of `order` (> 3);
        `own_only`: only the owner's own frees join it (harness.isolate.OWN_ONLY)."""
        self._order(order, low=Z.COSTLY_ORDER + 1)
        row = Z.capture_start(self.table, self.threads, 0, order)
        if row < 0:
            raise RuntimeError("all capture lists are in use; finish one first")
        if own_only:
            M.set_list_mode(self.table, self.threads, 0, row, OWN_ONLY, 0)
        handle = self._next_handle
        self._next_handle += 1
        self._lists[handle] = row
        return handle

    def isolate(self, base, order):
        """Isolate the aligned range of 2**order pages at `base` (order > 3): its free blocks
        and every later free inside it are held on a list with the returned handle.  None
        (nothing changed) when the range cannot be isolated: a block larger than the range
        covers it, a captured block lies in it, or its order-10 block has an isolated range."""
        self._order(order, low=Z.COSTLY_ORDER + 1)
        if isinstance(base, bool) or not isinstance(base, int) or not 0 <= base < self.pages \
                or base % (1 << order):
            raise ValueError(f"base must be a pfn aligned to 2**{order}, got {base!r}")
        row = Z.capture_start(self.table, self.threads, 0, order)
        if row < 0:
            raise RuntimeError("all capture lists are in use; finish one first")
        M.set_list_mode(self.table, self.threads, 0, row, ISOLATE, base)
        if M.isolate_range(self.table, self.threads, 0, row, base, order) == M.REFUSED:
            Z.capture_finish(self.table, self.threads, 0, row)
            return None
        handle = self._next_handle
        self._next_handle += 1
        self._lists[handle] = row
        self._ranges[handle] = (base, order)
        return handle

    def end_isolation(self, c):
        """End isolation `c`: the range's block (allocated) when its list held it whole, else
        None and every held block is freed normally."""
        row = self._list(c)
        if c not in self._ranges:
            raise ValueError(f"capture list {c!r} is not an isolated range")
        base, order = self._ranges.pop(c)
        pfn = M.end_isolation(self.table, self.threads, 0, row, base, order)
        del self._lists[c]
        return None if pfn == Z.NONE else pfn

    def captured(self, c):
        """The blocks on capture list `c`, head first, as (pfn, order) pairs."""
        pages, lists = self.sections.pages, self.sections.lists
        out, p = [], int(lists[self._list(c), L.LS_HEAD])
        while p >= 0:
            out.append((p, int(pages[p, L.PG_ORDER])))
            p = int(pages[p, L.PG_NEXT])
        return out

    def capture_finish(self, c):
        """Close list `c`: the carved block's pfn (now allocated), or None; the rest is freed."""
        row = self._list(c)
        if c in self._ranges:
            raise ValueError(f"capture list {c!r} is an isolated range: use end_isolation")
        pfn = Z.capture_finish(self.table, self.threads, 0, row)
        del self._lists[c]
        return None if pfn == Z.NONE else pfn

    def free_counts(self):
        """Blocks on each free list, orders 0..10."""
        return [int(n) for n in self.sections.lists[:L.NAREAS, L.LS_COUNT]]

    def free_list(self, order):
        """The pfns on free list `order`, head first."""
        self._order(order)
        pages, out, p = self.sections.pages, [], int(self.sections.lists[order, L.LS_HEAD])
        while p >= 0:
            out.append(p)
            p = int(pages[p, L.PG_NEXT])
        return out

    def lock_order(self):
        """Lock-order analysis of everything done so far (needs `lockdep=True`)."""
        from harness.lockdep import analyze
        return analyze(self.threads, self.locking)

    def check(self):
        """[] when every structural invariant holds, else a list of violation dicts."""
        return check_zone(self.table)
