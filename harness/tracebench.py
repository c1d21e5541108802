"""Cost per event of flight-recorder timestamps: `python -m harness bench --stamps`.

Each alternative writes one ring entry (op and stamp, as harness.tracing does) per event
in a tight nogil loop, on 1 thread and on 2 threads at once (each its own ring, as in a
run), and prints ns per event, best of 3.  What each keeps of cross-thread order:
  cycle counter     rdtsc: synchronized across cores, but not ordered with the memory
                    accesses around it, so two threads' events close in time can swap
  global ticket     fetch_add on one shared word: a total order consistent with every
                    other synchronization (a locked instruction), exact
  seq + coarse      per-thread sequence plus CLOCK_MONOTONIC_COARSE (ms ticks): exact
                    within a thread only; across threads, order within a tick is lost
"""

import threading
import time

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from harness.atomics import cycle_counter, fetch_add, monotonic_ns

CLOCK_MONOTONIC_COARSE = 6
EVENTS = 5_000_000


@intrinsic
def coarse_ns(typingctx):
    """CLOCK_MONOTONIC_COARSE in ns (the kernel's last tick: a vDSO read, no TSC)."""

    def codegen(context, builder, sig, args):
        i64, i32 = ir.IntType(64), ir.IntType(32)
        ts = cgutils.alloca_once(builder, ir.LiteralStructType([i64, i64]))
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(i32, [i32, ts.type]),
                                            "clock_gettime")
        builder.call(fn, [ir.Constant(i32, CLOCK_MONOTONIC_COARSE), ts])
        s = builder.load(cgutils.gep_inbounds(builder, ts, 0, 0))
        n = builder.load(cgutils.gep_inbounds(builder, ts, 0, 1))
        return builder.add(builder.mul(s, ir.Constant(i64, 1_000_000_000)), n)

    return types.int64(), codegen


@njit(nogil=True)
def ring_none(ring, ticket, n):
    for i in range(n):
        ring[(i & 255) * 4] = i
        ring[(i & 255) * 4 + 3] = i


@njit(nogil=True)
def ring_cycles(ring, ticket, n):
    for i in range(n):
        ring[(i & 255) * 4] = i
        ring[(i & 255) * 4 + 3] = cycle_counter()


@njit(nogil=True)
def ring_ticket(ring, ticket, n):
    for i in range(n):
        ring[(i & 255) * 4] = i
        ring[(i & 255) * 4 + 3] = fetch_add(ticket, 0, 1)


@njit(nogil=True)
def ring_seq_coarse(ring, ticket, n):
    for i in range(n):
        ring[(i & 255) * 4] = i
        ring[(i & 255) * 4 + 3] = (coarse_ns() << 20) | (i & ((1 << 20) - 1))


@njit(nogil=True)
def ring_clock(ring, ticket, n):
    for i in range(n):
        ring[(i & 255) * 4] = i
        ring[(i & 255) * 4 + 3] = monotonic_ns()


ALTERNATIVES = {"no stamp (the stores alone)": ring_none, "cycle counter (rdtsc)": ring_cycles,
                "global ticket (fetch_add)": ring_ticket,
                "per-thread seq + coarse clock": ring_seq_coarse,
                "clock_gettime(MONOTONIC)": ring_clock}


def per_event_ns(kernel, nthreads, events=EVENTS):
    ticket = np.zeros(16, np.int64)
    rings = [np.zeros(1024 + 64, np.int64) for _ in range(nthreads)]
    threads = [threading.Thread(target=kernel, args=(rings[i], ticket, events))
               for i in range(nthreads)]
    t0 = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return (time.perf_counter() - t0) / events * 1e9


def run(repeats=3):
    """{alternative: [ns per event on 1 thread, on 2 threads at once]}, best of `repeats`."""
    out = {}
    for name, kernel in ALTERNATIVES.items():
        kernel(np.zeros(1024, np.int64), np.zeros(16, np.int64), 10)       # compile
        out[name] = [min(per_event_ns(kernel, n) for _ in range(repeats)) for n in (1, 2)]
    return out


def format_stamps(result):
    return "\n".join(["flight-recorder stamp, ns per event (best of the repeats):"] +
                     [f"  {name:<32} 1 thread {one:6.2f}   2 threads at once {two:6.2f}"
                      for name, (one, two) in result.items()])
