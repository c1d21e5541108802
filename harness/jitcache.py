"""Where Numba caches compiled kernels: one directory per version of the kernel sources.

Numba invalidates a cached function only when its own file changes, not when a
kernel it inlines (or a constant it compiles in) comes from another file that
changed.  So the cache directory is `<base>/<hash of the kernel sources>`,
which makes stale machine code impossible; files that no kernel depends on
(the CLI, reports, grading) are left out of the hash, so editing them costs no
recompile.  The base is `$HARNESS_CACHE_DIR`, else
`${XDG_CACHE_HOME:-~/.cache}/buddy-stress-harness`.

Kernel sources (`kernel_sources`): every file of harness/ and workers/ that
defines jitted code (a function decorated with njit, jit, intrinsic, ...),
plus every package file whose names that jitted code reads (fault ids, lock
sites, layout constants), plus what those files import from the package.

Imported first by harness.atomics, which the kernel modules import, so the
directory is set before their decorators run; importing `harness` alone
touches nothing.

One kernel per argument types, not per constant (`compile_for_plain_types`):
Numba compiles a jitted callee for the types of the caller's arguments, and a
constant argument has a literal type of its own (`Literal[int](-1)`), so every
call site with a different constant compiled the callee and everything below it
once more (`violation` 21 times, `free_block` 3 times, each with its callees).
Kernels of this package are compiled for the plain types instead; none needs a
constant's value at typing time.
"""

import ast
import hashlib
import os
import sys
from pathlib import Path

from harness import bare

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("harness", "workers")
JIT_DECORATORS = frozenset({"njit", "jit", "intrinsic", "generated_jit", "vectorize",
                            "guvectorize", "cfunc", "overload", "overload_method",
                            "register_jitable"})


def base():
    """The directory that holds one cache directory per version of the kernel sources."""
    return os.environ.get("HARNESS_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"),
        "buddy-stress-harness")


def _decorator_name(node):
    if isinstance(node, ast.Call):
        node = node.func
    if isinstance(node, ast.Attribute):
        return node.attr
    return node.id if isinstance(node, ast.Name) else None


def _is_kernel(node):
    return isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and any(
        _decorator_name(d) in JIT_DECORATORS for d in node.decorator_list)


def _loaded_names(nodes):
    return {n.id for node in nodes for n in ast.walk(node)
            if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}


def _package_imports(tree, rel, files):
    """Local name -> package file (relative path) it was imported from."""
    out = {}

    def module_file(dotted):
        path = dotted.replace(".", "/")
        for cand in (path + ".py", path + "/__init__.py"):
            if cand in files:
                return cand
        return None

    here = rel.rsplit("/", 1)[0].split("/")
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                target = module_file(a.name)
                if target:
                    out[a.asname or a.name.split(".")[0]] = target
        elif isinstance(node, ast.ImportFrom):
            parts = here[:len(here) - node.level + 1] if node.level else []
            module = ".".join(parts + ([node.module] if node.module else []))
            for a in node.names:
                target = module_file(f"{module}.{a.name}") or module_file(module)
                if target:
                    out[a.asname or a.name] = target
    return out


def kernel_sources(root=ROOT):
    """The files (relative paths, sorted) whose contents the compiled kernels depend on."""
    root = Path(root)
    files = {f"{pkg}/{p.name}": p for pkg in PACKAGES for p in sorted((root / pkg).glob("*.py"))}
    trees = {rel: ast.parse(p.read_bytes(), filename=str(p)) for rel, p in files.items()}
    chosen, kernel_files = set(), set()
    for rel, tree in trees.items():
        kernels = [n for n in ast.walk(tree) if _is_kernel(n)]
        if not kernels:
            continue
        kernel_files.add(rel)
        # Names the kernels read, and what module-level assignments they read feed on.
        assigned = {}
        for node in tree.body:
            if isinstance(node, (ast.Assign, ast.AnnAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for t in targets:
                    for n in ast.walk(t):
                        if isinstance(n, ast.Name):
                            assigned.setdefault(n.id, set()).update(_loaded_names([node.value]))
        used, todo = set(), list(_loaded_names(kernels))
        while todo:
            name = todo.pop()
            if name not in used:
                used.add(name)
                todo.extend(assigned.get(name, ()))
        imports = _package_imports(tree, rel, files)
        chosen.update(imports[name] for name in used if name in imports)
    # Files that only provide constants: their own package imports may feed those.
    todo = sorted(chosen - kernel_files)
    chosen |= kernel_files
    while todo:
        rel = todo.pop()
        for dep in set(_package_imports(trees[rel], rel, files).values()):
            if dep not in chosen:
                chosen.add(dep)
                todo.append(dep)
    chosen.discard("harness/__init__.py")
    return sorted(chosen)


def key(root=ROOT, sources=None):
    """A short hash of the kernel sources' names and contents."""
    root = Path(root)
    digest = hashlib.sha256()
    for rel in (kernel_sources(root) if sources is None else sorted(sources)):
        digest.update(rel.encode() + b"\0" + (root / rel).read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def directory():
    """This source tree's cache directory (its own one for the bounds-checked and the bare
    build, harness.boundscheck and harness.bare)."""
    bounds = os.environ.get("NUMBA_BOUNDSCHECK", "") not in ("", "0")
    return os.path.join(base(), key() + ("-boundscheck" if bounds else "")
                        + ("-bare" if bare.active() else ""))


def install():
    """Point Numba's cache at `directory()`, also for kernels already decorated.

    A dispatcher picks its cache location when its decorator runs; a kernel
    module imported before harness.atomics (harness.layout is, through
    harness.api) is re-pointed here, before anything has been compiled.
    """
    import numba
    from numba.core.dispatcher import Dispatcher

    path = directory()
    numba.config.CACHE_DIR = path
    if "-boundscheck" in os.path.basename(path):
        from harness.boundscheck import install as name_kernels
        name_kernels()
    if bare.active():
        bare.install()
    for name, module in list(sys.modules.items()):
        if module is None or name.split(".")[0] not in PACKAGES:
            continue
        for obj in list(vars(module).values()):
            cache = getattr(obj, "_cache", None)
            where = getattr(cache, "_cache_path", None)
            if isinstance(obj, Dispatcher) and where and not where.startswith(path):
                obj.enable_caching()
    return path


def compile_for_plain_types():
    """Make calls between this package's kernels resolve to one compilation per plain
    argument types (literal types widened: Literal[int](0) -> int64)."""
    from numba.core import types
    from numba.core.dispatcher import Dispatcher

    if getattr(Dispatcher.get_call_template, "plain_types", False):
        return
    literal = Dispatcher.get_call_template

    def get_call_template(self, args, kws):
        if self.py_func.__module__.split(".")[0] in PACKAGES:
            args = tuple(types.unliteral(a) for a in args)
            kws = {k: types.unliteral(v) for k, v in kws.items()}
        return literal(self, args, kws)

    get_call_template.plain_types = True
    Dispatcher.get_call_template = get_call_template


compile_for_plain_types()
CACHE_DIR = install()
