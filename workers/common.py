"""Names harness.bench still imports from here; the workers' code lives in its own modules:
config, counters, detectors, held, pagecache, park, roles, pool."""

from workers.config import CFG_CDF0, CFG_FIELDS, CFG_HELD, order_cdf  # noqa: F401
from workers.counters import C_OPS  # noqa: F401
from workers.pagecache import POOL_RING  # noqa: F401
