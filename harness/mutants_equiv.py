"""Equivalent lock mutants: mutants that no detector can kill because nothing can go wrong.

Every surviving mutant of `python -m harness mutants` is either declared here,
with the reason it cannot change what any thread observes, or reported as a
real gap in detection.  A declared mutant that is killed anyway is reported
too: then the reason here is wrong.  tests/test_mutants.py checks that every
id names a generated mutant.
"""

_OWNER_FIELD = ("PG_OWNER of an allocated head is written by the thread that allocated it"
                " and read by no kernel, detector or invariant: once the head is ALLOC no other"
                " thread touches the block (a free of its buddy sees ALLOC and stops), so the"
                " write is the owner's alone with or without the lock")
_NEW_LIST = ("the capture list was just switched UNUSED -> OPEN by this thread's CAS and is"
             " empty: another thread reaches a list only through a block captured on it, and"
             " none is until the owner frees into it, so its fields are the owner's alone")
_BAD_INPUT = ("guards against bad input (a block that is not allocated at that order, a"
              " capture list that is not open): the workers free only blocks they hold, into"
              " their own open list, so under stress the check never fails; the API tests"
              " cover the EINVAL path")

_FREE_ROW = ("the list is CLOSED and empty: a capture_start finds it not UNUSED and a merge"
             " not OPEN, so nothing else touches the row; the fine scheme makes this same"
             " store with no lock held, by design (a release store)")

EQUIVALENT = {
    "early-unlock/alloc_block/blk": _OWNER_FIELD,
    "early-unlock/alloc_block/zone": _OWNER_FIELD,
    "early-unlock/capture_finish/blk#1": _OWNER_FIELD,
    "drop-lock/capture_start/lk": _NEW_LIST,
    "drop-lock/capture_start/zone": _NEW_LIST,
    "early-unlock/capture_finish/zone": _FREE_ROW,
    "early-unlock/capture_start/lk": _NEW_LIST,
    "early-unlock/capture_start/zone": _NEW_LIST,
    "drop-recheck/free_block/blk": _BAD_INPUT,
    "drop-recheck/capture_finish/lk": _BAD_INPUT,
}
