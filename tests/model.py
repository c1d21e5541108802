"""Sequential reference model of the buddy zone with reclaim capture.

Deliberately simple: plain Python lists for the free and capture lists
(index 0 is the head), dicts for per-block state.  Every public method
validates its arguments before touching any state, so a ValueError always
leaves the model unchanged.
"""

MAX_ORDER = 11                 # orders 0..10
TOP = MAX_ORDER - 1
PAGE_ALLOC_COSTLY_ORDER = 3


class ModelZone:
    """Buddy allocator zone: LIFO free lists plus per-reclaimer capture lists."""

    def __init__(self, pages):
        """Create a zone as if every order-10 block was freed in increasing pfn order."""
        if type(pages) is not int or pages <= 0 or pages % (1 << TOP):
            raise ValueError(f"pages must be a positive multiple of {1 << TOP}, got {pages!r}")
        self.pages = pages
        self.free_lists = [[] for _ in range(MAX_ORDER)]   # order -> [pfn], head first
        self.free_order = {}        # pfn -> order, for blocks on a free list
        self.allocated = {}         # pfn -> order, for allocated blocks
        self.captures = {}          # handle -> {"wanted": order, "blocks": [(pfn, order)]}
        self.captured_in = {}       # pfn -> (handle, order), for captured blocks
        self.next_handle = 0
        self.isolations = {}        # handle -> (base, order): isolated ranges
        self.own_only = set()       # handles of capture lists that take only own frees
        for pfn in range(0, pages, 1 << TOP):
            self._add_free(pfn, TOP)

    # ---- validation -------------------------------------------------------

    @staticmethod
    def _check_order(order, low=0):
        if type(order) is not int or not low <= order <= TOP:
            raise ValueError(f"order must be an int in {low}..{TOP}, got {order!r}")

    def _check_handle(self, c):
        if c not in self.captures:
            raise ValueError(f"capture list {c!r} is unknown or already finished")

    # ---- list primitives --------------------------------------------------

    def _add_free(self, pfn, order):
        self.free_lists[order].insert(0, pfn)
        self.free_order[pfn] = order

    def _del_free(self, pfn):
        self.free_lists[self.free_order.pop(pfn)].remove(pfn)

    def _add_captured(self, c, pfn, order):
        self.captures[c]["blocks"].insert(0, (pfn, order))
        self.captured_in[pfn] = (c, order)

    def _del_captured(self, pfn):
        c, order = self.captured_in.pop(pfn)
        self.captures[c]["blocks"].remove((pfn, order))

    def _expand(self, pfn, k, order):
        """Split block (pfn, k) down to `order`; upper halves go to the free list heads."""
        while k > order:
            k -= 1
            self._add_free(pfn + (1 << k), k)

    def _crosses(self, pfn, order):
        """Would merging (pfn, order) with its buddy cross an isolated range's boundary?"""
        return any(order >= o and pfn >> (order + 1) == base >> (order + 1)
                   for base, o in self.isolations.values())

    def _isolated_at(self, pfn):
        return next((c for c, (base, o) in self.isolations.items()
                     if pfn >> o == base >> o), None)

    def _merge(self, pfn, order, c):
        """__free_one_page (c is None) / __capture_one_page (c is a handle)."""
        while order < TOP:
            buddy = pfn ^ (1 << order)
            if self._crosses(pfn, order):
                break
            if self.free_order.get(buddy) == order:
                self._del_free(buddy)
            elif buddy in self.captured_in and self.captured_in[buddy][1] == order:
                owner = self.captured_in[buddy][0]
                if owner in self.own_only and owner != c:
                    break                            # an own-only list keeps its blocks
                if c is None:                        # switch to capture mode there
                    c = owner
                self._del_captured(buddy)
            else:
                break
            pfn &= buddy
            order += 1
        if c is None:
            self._add_free(pfn, order)
        else:
            self._add_captured(c, pfn, order)

    # ---- public API -------------------------------------------------------

    def alloc(self, order):
        """Allocate a block of 2**order pages; return its pfn, or None if nothing fits."""
        self._check_order(order)
        k = next((k for k in range(order, MAX_ORDER) if self.free_lists[k]), None)
        if k is None:
            return None
        pfn = self.free_lists[k][0]
        self._del_free(pfn)
        self._expand(pfn, k, order)
        self.allocated[pfn] = order
        return pfn

    def free(self, pfn, order, capture=None):
        """Free an allocated block; with capture=c it is the reclaimer's free into list c."""
        self._check_order(order)
        if capture is not None:
            self._check_handle(capture)
        if type(pfn) is not int or not 0 <= pfn < self.pages:
            raise ValueError(f"pfn {pfn!r} out of range 0..{self.pages - 1}")
        if self.allocated.get(pfn) != order:
            raise ValueError(f"pfn {pfn} is not the head of an allocated order-{order} block")
        del self.allocated[pfn]
        iso = self._isolated_at(pfn)                 # MIGRATE_ISOLATE: held on its list
        self._merge(pfn, order, capture if iso is None else iso)

    def capture_start(self, order, own_only=False):
        """Open an empty capture list for a reclaimer wanting a block of `order` (> 3)."""
        self._check_order(order, low=PAGE_ALLOC_COSTLY_ORDER + 1)
        c = self.next_handle
        self.next_handle += 1
        self.captures[c] = {"wanted": order, "blocks": []}
        if own_only:
            self.own_only.add(c)
        return c

    def isolate(self, base, order):
        """Isolate the aligned range (base, order): move its free blocks (increasing pfn) to
        the head of a new list; None if a larger block covers it, a captured block is in
        it, or its order-10 block already has an isolated range."""
        self._check_order(order, low=PAGE_ALLOC_COSTLY_ORDER + 1)
        if type(base) is not int or not 0 <= base < self.pages or base % (1 << order):
            raise ValueError(f"base must be a pfn aligned to 2**{order}, got {base!r}")
        end = base + (1 << order)
        for k in range(order + 1, MAX_ORDER):
            q = base & ~((1 << k) - 1)
            if self.free_order.get(q, -1) >= k or self.allocated.get(q, -1) >= k or \
                    self.captured_in.get(q, (None, -1))[1] >= k:
                return None
        if any(base <= p < end for p in self.captured_in) or \
                any(b >> TOP == base >> TOP for b, _ in self.isolations.values()):
            return None
        c = self.capture_start(order)
        self.isolations[c] = (base, order)
        for p in sorted(p for p in self.free_order if base <= p < end):
            o = self.free_order[p]
            self._del_free(p)
            self._add_captured(c, p, o)
        return c

    def end_isolation(self, c):
        """End isolation c: its range stops being isolated, then the list is finished."""
        if c not in self.isolations:
            raise ValueError(f"{c!r} is not an isolated range")
        del self.isolations[c]
        self.own_only.discard(c)
        return self.capture_finish(c)

    def captured(self, c):
        """Return the blocks of capture list c as [(pfn, order)], head first."""
        self._check_handle(c)
        return list(self.captures[c]["blocks"])

    def capture_finish(self, c):
        """Close list c: carve the first big-enough block, free the rest; return pfn or None."""
        self._check_handle(c)
        if c in self.isolations:
            raise ValueError(f"capture list {c!r} is an isolated range: use end_isolation")
        self.own_only.discard(c)
        wanted = self.captures[c]["wanted"]
        blocks = self.captures.pop(c)["blocks"]
        for pfn, _ in blocks:
            del self.captured_in[pfn]
        hit = next((i for i, (_, o) in enumerate(blocks) if o >= wanted), None)
        result = None
        if hit is not None:
            result, k = blocks.pop(hit)
            self._expand(result, k, wanted)
            self.allocated[result] = wanted
        for pfn, order in blocks:
            self._merge(pfn, order, None)
        return result

    def free_counts(self):
        """Number of blocks on each free list, orders 0..10."""
        return [len(lst) for lst in self.free_lists]

    def free_list(self, order):
        """The pfns on free list `order`, head first."""
        self._check_order(order)
        return list(self.free_lists[order])


PCP_ORDERS = PAGE_ALLOC_COSTLY_ORDER + 1      # orders 0..3 have per-CPU lists


class ModelPcpZone(ModelZone):
    """ModelZone with per-CPU lists (harness.pcp's sequential semantics, counts in blocks).

    alloc(order <= 3, cpu): an empty list of the CPU is first refilled with up to
    `batch` blocks, allocated from the buddy one at a time and appended in that
    order; then the head is taken.  free(order <= 3, cpu) without capture pushes
    at the head; above `high` blocks, `batch` blocks leave from the tail, each
    freed through the buddy (`_merge`).  drain(cpu) frees every block of the
    CPU's lists, order 0 to 3, each tail first; drain() does CPU 0, 1, ...
    """

    def __init__(self, pages, cpus, batch, high):
        super().__init__(pages)
        self.cpus, self.batch, self.high = cpus, batch, high
        self.pcp = [[[] for _ in range(PCP_ORDERS)] for _ in range(cpus)]   # head first

    def _check_cpu(self, cpu):
        if type(cpu) is not int or not 0 <= cpu < self.cpus:
            raise ValueError(f"cpu must be an int in 0..{self.cpus - 1}, got {cpu!r}")

    def _spill(self, cpu, order, n):
        lst, done = self.pcp[cpu][order], 0
        while lst and done < n:
            self._merge(lst.pop(), order, None)
            done += 1
        return done

    def alloc(self, order, cpu=0):
        self._check_order(order)
        self._check_cpu(cpu)
        if order >= PCP_ORDERS:
            return super().alloc(order)
        lst = self.pcp[cpu][order]
        if not lst:
            for _ in range(self.batch):
                pfn = super().alloc(order)
                if pfn is None:
                    break
                del self.allocated[pfn]
                lst.append(pfn)
        if not lst:
            return None
        pfn = lst.pop(0)
        self.allocated[pfn] = order
        return pfn

    def free(self, pfn, order, capture=None, cpu=0):
        self._check_order(order)
        self._check_cpu(cpu)
        if capture is not None or order >= PCP_ORDERS:
            return super().free(pfn, order, capture)
        if type(pfn) is not int or not 0 <= pfn < self.pages:
            raise ValueError(f"pfn {pfn!r} out of range 0..{self.pages - 1}")
        if self.allocated.get(pfn) != order:
            raise ValueError(f"pfn {pfn} is not the head of an allocated order-{order} block")
        del self.allocated[pfn]
        lst = self.pcp[cpu][order]
        lst.insert(0, pfn)
        if len(lst) > self.high:
            self._spill(cpu, order, self.batch)

    def drain(self, cpu=None):
        """Blocks returned to the buddy from CPU `cpu`'s lists (every CPU's when None)."""
        cpus = range(self.cpus) if cpu is None else [cpu]
        return sum(self._spill(c, order, len(self.pcp[c][order]))
                   for c in cpus for order in range(PCP_ORDERS))

    def pcp_list(self, cpu, order):
        return list(self.pcp[cpu][order])
