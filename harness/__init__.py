"""A real-concurrency stress harness for a Numba buddy page allocator with reclaim capture.

Importing the package is cheap and changes nothing global (it is also loaded
as a pytest plugin): `Zone` and the kernels behind it, Numba and its cache
directory (harness.jitcache) load on first use.
"""

__all__ = ["Zone"]


def __getattr__(name):
    if name == "Zone":
        from harness.api import Zone
        return Zone
    raise AttributeError(f"module 'harness' has no attribute {name!r}")
