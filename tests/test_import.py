"""Importing the package changes nothing global; the JIT cache is keyed by the kernel sources only.

The import checks run in fresh interpreters (this one has long since loaded
Numba).  The cache-key checks work on a copy of the source tree.
"""

import os
import shutil
import subprocess
import sys
import textwrap

import pytest

from harness import jitcache

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def python(code, env=None, timeout=120):
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def clean_env():
    return {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}


# ---------------------------------------------------------------- import hygiene

@pytest.mark.parametrize("module", ["harness", "harness.pytest_plugin"])
def test_import_loads_no_numba_and_sets_no_cache(module):
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(f"""
            import os, sys
            import {module}
            print('numba' in sys.modules, os.environ.get('NUMBA_CACHE_DIR'))
            print(sorted(m for m in sys.modules if m.startswith(('harness', 'workers'))))
        """)], cwd=ROOT, capture_output=True, text=True, timeout=60, env=clean_env())
    assert out.returncode == 0, out.stderr
    first, loaded = out.stdout.splitlines()
    assert first == "False None"
    assert loaded in ("['harness']", "['harness', 'harness.pytest_plugin']")


def test_zone_is_still_importable_from_the_package():
    out = python("""
        import harness, sys
        from harness import Zone
        assert 'numba' in sys.modules
        assert harness.Zone is Zone and Zone.__module__ == 'harness.api'
        try:
            harness.Nope
        except AttributeError as exc:
            print(exc)
    """)
    assert "has no attribute 'Nope'" in out


def test_kernels_cache_in_the_keyed_directory_whatever_the_import_order(tmp_path):
    # harness.layout decorates kernels before anything imports harness.atomics;
    # they must still cache under <HARNESS_CACHE_DIR>/<key>, never in __pycache__.
    out = python("""
        import sys
        import harness.layout
        from harness import Zone
        import harness.runner, numba
        from numba.core.dispatcher import Dispatcher
        from harness import jitcache
        print(numba.config.CACHE_DIR == jitcache.directory())
        print(numba.config.CACHE_DIR)
        wrong, seen = [], set()
        for name, mod in list(sys.modules.items()):
            if name.split('.')[0] in ('harness', 'workers'):
                for attr, obj in vars(mod).items():
                    if isinstance(obj, Dispatcher) and hasattr(obj._cache, '_cache_path'):
                        seen.add(obj.py_func.__module__)
                        if not obj._cache._cache_path.startswith(numba.config.CACHE_DIR):
                            wrong.append((name, attr, obj._cache._cache_path))
        print(wrong)
        print(sorted(seen))
    """, env={"HARNESS_CACHE_DIR": str(tmp_path)})
    same, where, wrong, seen = out.splitlines()
    assert same == "True"
    assert where == os.path.join(str(tmp_path), jitcache.key())
    assert wrong == "[]"
    # Every module that defines a cached kernel is one of the keyed sources.
    sources = set(jitcache.kernel_sources())
    for module in eval(seen):
        assert module.replace(".", "/") + ".py" in sources, module


# ---------------------------------------------------------------- the cache key

@pytest.fixture
def tree(tmp_path):
    for pkg in jitcache.PACKAGES:
        shutil.copytree(os.path.join(ROOT, pkg), tmp_path / pkg,
                        ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path


def touch(path, text="\n# edited\n"):
    with open(path, "a") as f:
        f.write(text)


def test_kernel_sources_are_the_jitted_files_and_what_they_read():
    sources = jitcache.kernel_sources()
    for rel in ("harness/atomics.py", "harness/zone.py", "harness/locks.py", "harness/layout.py",
                "workers/allocator.py", "workers/reclaimer.py"):
        assert rel in sources                    # they define jitted code
    # No jitted code, but the kernels compile in their fault ids and lock sites.
    assert "harness/faults.py" in sources and "harness/hierarchy.py" in sources
    for rel in ("harness/cli.py", "harness/config.py", "harness/report.py", "harness/verdict.py",
                "harness/result.py", "harness/pytest_plugin.py", "harness/jitcache.py",
                "harness/__init__.py", "harness/api.py"):
        assert rel not in sources


@pytest.mark.parametrize("rel", ["harness/cli.py", "harness/report.py", "harness/config.py",
                                 "harness/pytest_plugin.py"])
def test_key_ignores_a_non_kernel_file(tree, rel):
    before = jitcache.key(tree)
    touch(tree / rel)
    assert jitcache.key(tree) == before


@pytest.mark.parametrize("rel", ["harness/zone.py", "harness/atomics.py", "workers/detectors.py",
                                 "harness/hierarchy.py", "harness/faults.py"])
def test_key_follows_a_kernel_file(tree, rel):
    before = jitcache.key(tree)
    touch(tree / rel)
    assert jitcache.key(tree) != before


def test_a_file_that_gains_a_kernel_joins_the_key(tree):
    before = jitcache.key(tree)
    touch(tree / "harness/report.py",
          "\nfrom numba import njit\n\n@njit(cache=True)\ndef twice(x):\n    return 2 * x\n")
    assert "harness/report.py" in jitcache.kernel_sources(tree)
    assert jitcache.key(tree) != before


def test_key_of_an_explicit_file_list(tree):
    files = ["harness/zone.py", "harness/locks.py"]
    before = jitcache.key(tree, sources=files)
    touch(tree / "harness/atomics.py")
    assert jitcache.key(tree, sources=files) == before
    touch(tree / "harness/locks.py")
    assert jitcache.key(tree, sources=files) != before


def test_base_honours_harness_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path))
    assert jitcache.base() == str(tmp_path)
    assert jitcache.directory() == os.path.join(str(tmp_path), jitcache.key())
    monkeypatch.delenv("HARNESS_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert jitcache.base() == str(tmp_path / "xdg" / "buddy-stress-harness")
