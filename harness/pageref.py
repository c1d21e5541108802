"""Page references of page-cache pages: `get_page_unless_zero`, `put_page`, `page_ref_freeze`.

A cached page's count is 1 (the cache's own reference) plus one per reader.  It
is 0 for every page that is not in the cache, and for a cached page that a
reclaimer or a migration has frozen: freezing is a CAS from the expected count
(1: no reader) to 0, so it fails while anybody reads the page, and a lookup takes
a reference only if the count is not zero, so nobody starts reading a frozen
page.  A page is freed only while frozen, hence never under its reader.

The counts live in the page-cache array (workers.pagecache), one int64 per pfn
from `pool[REF0]`; all updates are atomic, none needs a lock.
"""

from numba import njit

from harness.atomics import cas, fetch_add, load_acquire, store_release

REF0 = 4                        # pool[REF0]: index of pfn 0's count (workers.pagecache layout)


@njit(nogil=True, cache=True, _nrt=False, forceinline=True)
def ref_index(pool, pfn):
    return pool[REF0] + pfn


@njit(nogil=True, cache=True, _nrt=False, forceinline=True)
def page_count(pool, pfn):
    return load_acquire(pool, ref_index(pool, pfn))


@njit(nogil=True, cache=True, _nrt=False, forceinline=True)
def get_unless_zero(pool, pfn):
    """Take a reference unless the count is zero (frozen or not cached); True if taken."""
    i = ref_index(pool, pfn)
    c = load_acquire(pool, i)
    while c > 0:
        old = cas(pool, i, c, c + 1)
        if old == c:
            return True
        c = old
    return False


@njit(nogil=True, cache=True, _nrt=False, forceinline=True)
def get_page(pool, pfn):
    """An unconditional reference: only for a page the caller already holds a reference on."""
    fetch_add(pool, ref_index(pool, pfn), 1)


@njit(nogil=True, cache=True, _nrt=False, forceinline=True)
def put_page(pool, pfn):
    """Drop a reference taken by get_unless_zero (never the cache's own)."""
    fetch_add(pool, ref_index(pool, pfn), -1)


@njit(nogil=True, cache=True, _nrt=False, forceinline=True)
def freeze(pool, pfn, expected):
    """`page_ref_freeze`: count `expected` -> 0 atomically; False (unchanged) otherwise."""
    return cas(pool, ref_index(pool, pfn), expected, 0) == expected


@njit(nogil=True, cache=True, _nrt=False, forceinline=True)
def unfreeze(pool, pfn, count):
    """`page_ref_unfreeze`: publish `count` on a frozen page (stores before it are visible)."""
    store_release(pool, ref_index(pool, pfn), count)
