"""The mutual-exclusion witness: every lock says who broke it, and how.

Checked at every acquisition and release (a load of the lock's owner field,
on the cache line the lock word already brought in):

    acquire   the recorded owner must be nobody: otherwise two threads hold the
              lock at once (mutual exclusion lost), and both are named;
    release   the releaser must be the owner: otherwise a thread drops a lock it
              does not hold (held by another thread, or by nobody);
    recursive a thread about to wait for a lock it already holds would wait for
              itself forever: reported as recursive locking, and the wait is
              not entered (the thread is marked aborted, like an aborted wait);
    not held  with lockdep on, a list's links are changed only by the holder of
              the lock that guards them (`lockdep_assert_held`,
              harness.lockverbs.assert_list_locked): the site field then holds
              the list's number.

A finding goes to the thread's own witness row (first one kept, all counted),
which `thread_witness` decodes; the run stops when it stops on violations.
"""

from numba import njit

from harness.atomics import cycle_counter, store_release
from harness.layout import (CTL_STOP, F_STOP_ON_VIOLATION, T_WITNESS, W_COUNT, W_KIND, W_LOCK,
                            W_OTHER, W_SITE, W_STAMP, ctl_row, flags_row)
from harness.outline import out_of_line

(WK_EXCLUSION_LOST, WK_RELEASE_NOT_OWNER, WK_RECURSIVE, WK_NOT_HELD, WK_NOT_OPEN,
 WK_BLOCK_NOT_HELD) = 1, 2, 3, 4, 5, 6
KIND_NAMES = {WK_EXCLUSION_LOST: "mutual_exclusion_lost",
              WK_RELEASE_NOT_OWNER: "release_by_non_owner",
              WK_RECURSIVE: "recursive_locking",
              WK_NOT_HELD: "list_changed_without_its_lock",
              WK_NOT_OPEN: "capture_list_changed_while_not_open",
              WK_BLOCK_NOT_HELD: "block_changed_without_its_lock"}


@njit(nogil=True, cache=True, _nrt=False, forceinline=False)
@out_of_line
def witness(z, t, me, kind, lk, other, site):
    """Record finding `kind` on lock row `lk` (`other`: the other thread slot, -1 for nobody)."""
    n = t[me, T_WITNESS, W_COUNT]
    if n == 0:
        t[me, T_WITNESS, W_KIND] = kind
        t[me, T_WITNESS, W_LOCK] = lk
        t[me, T_WITNESS, W_OTHER] = other
        t[me, T_WITNESS, W_SITE] = site
        t[me, T_WITNESS, W_STAMP] = cycle_counter()
    t[me, T_WITNESS, W_COUNT] = n + 1
    if z[flags_row(z), F_STOP_ON_VIOLATION] != 0:
        store_release(z, (ctl_row(z), CTL_STOP), 1)


def thread_witness(t, i):
    """Thread `i`'s first witness finding as a dict (stamp in raw cycles), or None."""
    row = t[i, T_WITNESS]
    if not row[W_COUNT]:
        return None
    return {"kind": KIND_NAMES.get(int(row[W_KIND]), str(int(row[W_KIND]))), "thread": i,
            "lock_row": int(row[W_LOCK]), "other": int(row[W_OTHER]),
            "site": int(row[W_SITE]), "count": int(row[W_COUNT]), "stamp": int(row[W_STAMP])}


def describe(w, lock_name, site_name=None):
    """One line naming the lock and both threads."""
    lock, me, other = lock_name(w["lock_row"]), w["thread"], w["other"]
    who = "nobody" if other < 0 else f"thread {other}"
    if w["kind"] == "mutual_exclusion_lost":
        return (f"mutual exclusion lost on {lock}: thread {me} acquired it while {who}"
                f" was recorded as its owner")
    if w["kind"] == "release_by_non_owner":
        return f"thread {me} released {lock}, which was held by {who}"
    if w["kind"] == "list_changed_without_its_lock":
        return (f"thread {me} changed list {w['site']} without holding {lock}, which guards"
                f" it ({'free' if other < 0 else 'held by thread ' + str(other)})")
    if w["kind"] == "block_changed_without_its_lock":
        return (f"thread {me} changed the pages of pfn {w['site']} without holding {lock}, which"
                f" guards them ({'free' if other < 0 else 'held by thread ' + str(other)})")
    if w["kind"] == "capture_list_changed_while_not_open":
        return (f"thread {me} changed capture list {w['site']} while it is not open (closed by"
                f" its finishing owner, or unused), under {lock}; its last owner is {who}")
    where = f" at {site_name}" if site_name else ""
    return f"recursive locking: thread {me} takes {lock}{where}, which it already holds"
