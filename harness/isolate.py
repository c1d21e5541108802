"""Kinds of capture list, and isolated ranges (MIGRATE_ISOLATE) as the free path sees them.

A capture list row's OWNER word also says what kind of list it is (`list_mode`):
  FULL      today's capture: the owner's frees, and other threads' frees that meet a
            captured block, join the list;
  OWN_ONLY  the owner's own frees only: a captured block never merges into another
            free or list (Whitcroft's first variant), so a free beside it stays apart;
  ISOLATE   an isolated aligned range of 2**wanted pages at `list_base`: every free
            inside the range is held on the list, never handed to other allocators.
The mode and base are written once, under the capture lock, while the list is still
empty and before any block can reach it.

An isolated range also marks its order-10 block: the block lock row's L_ISOLATE word
(`isolation`), guarded by that block lock, which every free and merge in the block
holds.  So a free reads "is this pfn isolated?" in O(1), and a merge never crosses the
range's boundary (`crosses_isolation`): pages inside stay inside until the range is
taken or released.  One isolated range per order-10 block at a time.
"""

from numba import njit

from harness.layout import L_ISOLATE, LS_OWNER, M_BLOCK0, M_LIST0, PG_LIST, TOP, meta_row

FULL, OWN_ONLY, ISOLATE = range(3)
MODE_SHIFT, BASE_SHIFT = 16, 24              # LS_OWNER = owner | mode << 16 | base << 24
ORDER_SHIFT, PFN_SHIFT = 16, 24              # L_ISOLATE = 1 + list | order << 16 | base << 24


@njit(nogil=True, cache=True, _nrt=False, forceinline=True)
def owner_word(me, mode, base):
    return me | (mode << MODE_SHIFT) | (base << BASE_SHIFT)


@njit(nogil=True, cache=True, _nrt=False, forceinline=True)
def list_mode(z, lst):
    """FULL, OWN_ONLY or ISOLATE: the kind of capture list `lst` (>= 11)."""
    return (z[z[meta_row(z), M_LIST0] + lst, LS_OWNER] >> MODE_SHIFT) & 0xFF


@njit(nogil=True, cache=True, _nrt=False, forceinline=True)
def may_join(z, buddy, target):
    """May a merge take captured block `buddy` off its list?  Not off an OWN_ONLY list,
    unless the merge is for that very list (its owner's own free)."""
    lst = z[buddy, PG_LIST]
    return list_mode(z, lst) != OWN_ONLY or lst == target


@njit(nogil=True, cache=True, _nrt=False, forceinline=True)
def block_row(z, pfn):
    return z[meta_row(z), M_BLOCK0] + (pfn >> TOP)


@njit(nogil=True, cache=True, _nrt=False, forceinline=True)
def isolation(z, pfn):
    """The L_ISOLATE word of pfn's order-10 block (0: nothing isolated there)."""
    return z[block_row(z, pfn), L_ISOLATE]


@njit(nogil=True, cache=True, _nrt=False, forceinline=True)
def encode(lst, order, base):
    return 1 + lst | (order << ORDER_SHIFT) | (base << PFN_SHIFT)


@njit(nogil=True, cache=True, _nrt=False, forceinline=True)
def iso_list(w):
    return (w & 0xFFFF) - 1


@njit(nogil=True, cache=True, _nrt=False, forceinline=True)
def iso_order(w):
    return (w >> ORDER_SHIFT) & 0xFF


@njit(nogil=True, cache=True, _nrt=False, forceinline=True)
def iso_base(w):
    return w >> PFN_SHIFT


@njit(nogil=True, cache=True, _nrt=False, forceinline=True)
def isolated_list(z, pfn):
    """The isolation list holding frees at `pfn`, or -1.  Caller holds pfn's block lock."""
    w = isolation(z, pfn)
    if w == 0 or (pfn >> iso_order(w)) != (iso_base(w) >> iso_order(w)):
        return -1
    return iso_list(w)


@njit(nogil=True, cache=True, _nrt=False, forceinline=True)
def crosses_isolation(z, pfn, order):
    """Would merging block `pfn` of `order` with its buddy join an isolated range with
    pages outside it?  (The merged block, of order + 1, would contain the whole range.)
    Caller holds pfn's block lock."""
    w = isolation(z, pfn)
    return w != 0 and order >= iso_order(w) and \
        (pfn >> (order + 1)) == (iso_base(w) >> (order + 1))
