"""The worker config array: one int64 array of run settings, shared read-only by all workers."""

import numpy as np
from numba import njit

from harness.layout import MAX_ORDER
from harness.rng import bounded

# (name, int64 slots), in order; offsets are derived below.
CONFIG_FIELDS = (
    ("cdf", MAX_ORDER),          # cumulative weights (of 2**20) of the allocators' orders
    ("rcdf", MAX_ORDER),         # cumulative weights of the reclaimers' wanted orders
    ("held", 1),                 # blocks an allocator holds at most
    ("cache_pct", 1),            # % of freed order-0 pages that go to the page cache
    ("capture", 1),              # reclaimers use capture lists
    ("batch_mul", 1),            # a reclaim takes max(batch_min, batch_mul << order) pages
    ("batch_min", 1),
    ("rheld", 1),                # blocks a reclaimer holds at most
    ("policy", 1),               # reclaim policy: an index into POLICIES
    ("lookup_every", 1),         # an allocator looks a cached page up every N (a power of
                                 # two) operations; 0: never (no page cache, nothing to find)
)
_OFF = {}
_at = 0
for _name, _n in CONFIG_FIELDS:
    _OFF[_name] = _at
    _at += _n
CFG_FIELDS = 32                  # the array's length
assert _at <= CFG_FIELDS, (_at, CFG_FIELDS)
CFG_CDF0, CFG_RCDF0, CFG_HELD, CFG_CACHE_PCT, CFG_CAPTURE, CFG_BATCH_MUL, CFG_BATCH_MIN, \
    CFG_RHELD, CFG_POLICY, CFG_LOOKUP_EVERY = (_OFF[name] for name, _ in CONFIG_FIELDS)

# Reclaim policies (harness.config.POLICIES names them in this order).
POLICY_OFF, POLICY_CAPTURE_OWN, POLICY_CAPTURE, POLICY_MIGRATE, POLICY_MIGRATE_CAPTURE = range(5)
LOOKUP_EVERY = 16
assert LOOKUP_EVERY & (LOOKUP_EVERY - 1) == 0, "a mask, not a division, in the hot loop"


def order_cdf(mix):
    """Cumulative weights (out of 2**20) of orders 0..10 from {order: weight}, for draw_order."""
    w = np.array([float(mix.get(k, 0)) for k in range(MAX_ORDER)])
    return np.round(np.cumsum(w) / w.sum() * (1 << 20)).astype(np.int64)


def worker_config(cfg):
    """The config array of a run (cfg: harness.runner.RunConfig)."""
    a = np.zeros(CFG_FIELDS, np.int64)
    a[CFG_CDF0:CFG_CDF0 + MAX_ORDER] = order_cdf(cfg.alloc_mix)
    a[CFG_RCDF0:CFG_RCDF0 + MAX_ORDER] = order_cdf(cfg.reclaim_mix)
    a[CFG_HELD], a[CFG_RHELD] = cfg.held, cfg.reclaimer_held
    a[CFG_CACHE_PCT], a[CFG_CAPTURE] = cfg.cache_pct, cfg.capture
    a[CFG_BATCH_MUL], a[CFG_BATCH_MIN] = cfg.batch_mul, cfg.batch_min
    from harness.config import POLICIES
    a[CFG_POLICY] = POLICIES.index(cfg.policy)
    a[CFG_LOOKUP_EVERY] = LOOKUP_EVERY if cfg.cache_pct > 0 else 0
    return a


@njit(nogil=True, cache=True, _nrt=False, forceinline=True)
def draw_order(cfg, base, x):
    """An order drawn from the 11 cumulative weights at cfg[base:] with random state `x`."""
    r = bounded(x, 1 << 20)
    k = 0
    while k < 10 and cfg[base + k] <= r:
        k += 1
    return k
