"""A real-concurrency stress harness for a Numba buddy page allocator with reclaim capture."""

from harness.api import Zone

__all__ = ["Zone"]
