"""A real-concurrency stress harness for a Numba buddy page allocator with reclaim capture."""

import hashlib
import os
from pathlib import Path


def _set_jit_cache_dir():
    """Key Numba's on-disk cache by a hash of all kernel sources.

    Numba invalidates a cached function only when its own file changes, not when
    a kernel it inlines does; a per-source-tree directory makes stale code impossible.
    """
    root = Path(__file__).resolve().parent.parent
    digest = hashlib.sha256()
    for folder in ("harness", "workers"):
        for path in sorted((root / folder).glob("*.py")):
            digest.update(path.name.encode() + path.read_bytes())
    base = os.environ.get("HARNESS_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "buddy-stress-harness")
    path = os.path.join(base, digest.hexdigest()[:16])
    import numba
    numba.config.CACHE_DIR = path


_set_jit_cache_dir()

from harness.api import Zone  # noqa: E402

__all__ = ["Zone"]
