"""Lock mutants: faults generated from the kernel source itself, one source edit each.

Four operators, read off the kernels' syntax tree (`ast`; the lock calls are the
verbs of harness.lockverbs):

  drop-lock      an acquisition is not made, and neither is the release that pairs
                 with it at run time (the pair is removed, not each call: a lone
                 missing release only hangs, a lone missing acquisition only trips
                 the unlock-not-owner witness; the missing pair is the real mistake).
                 The `if not verb(...): <give up>` around the call becomes
                 `mutant_skipped = True` (the acquisition "succeeded"; `elif` becomes
                 `else`, and `if c and not verb(...)` becomes `if c:`), and every
                 release of the same lock variable in the function skips once when
                 the flag is set.  (No walrus: Numba 0.68 cannot type one.)
  swap-locks     two acquisitions in one statement list with no lock taken or
                 released between them, taken in the other order (the first
                 statement moves after the second).  Only pairs that both take a lock
                 in one scheme: zone_enter and a fine verb never do.
  drop-recheck   the statement right after an acquisition that re-validates what was
                 seen before the lock was taken (an `if` that releases and leaves, or
                 the re-read of a value computed before the lock) is deleted.
  early-unlock   a release moves before the last write to the zone table above it
                 in its statement list (a statement, or a branch that writes and does
                 not release that lock itself; the search stops at the acquisition of
                 the lock and at a loop).

Each mutant knows the locking schemes in which its edit takes effect (fine verbs
act only in the fine scheme, zone verbs only in the zone scheme); an edit inside
the seam of a seeded fault (`if skip_merging:`) runs only with that fault on, so
it has no scheme and its `note` says why.  Mutant ids are stable names
(`drop-lock/alloc_block/blk#2`), not line numbers, so the equivalence table
(harness.mutants_equiv) survives unrelated edits.
"""

import ast
import dataclasses
import os
import shutil
from pathlib import Path

from harness.jitcache import PACKAGES, ROOT, _is_kernel

KERNEL_FILES = ("harness/zone.py",)     # the allocator under test; detectors and the
                                        # page-cache pool are the harness's own code
SCHEMES = ("fine", "zone")
ACQUIRE = {"zone_enter": ("zone",), "fine_lock": ("fine",), "fine_trylock": ("fine",),
           "lock": SCHEMES}
RELEASE = {"zone_leave": ("zone",), "fine_unlock": ("fine",), "unlock": SCHEMES}
LOCK_ARG = 3                            # verb(z, t, me, lk, ...): the lock row
WRITER_CALLS = frozenset({"cas", "store_release"})     # atomics that write the zone table
FLAG = "mutant_skipped"
OPERATORS = ("drop-lock", "swap-locks", "drop-recheck", "early-unlock")


@dataclasses.dataclass(frozen=True)
class Mutant:
    id: str
    operator: str
    file: str                   # relative to the source root
    function: str
    line: int                   # of the edited construct, in the original file
    description: str
    schemes: tuple              # schemes in which the edit takes effect; () = none
    source: str                 # the whole mutated file
    note: str = ""              # why `schemes` is empty

    def row(self):
        return {"id": self.id, "operator": self.operator, "file": self.file,
                "function": self.function, "line": self.line,
                "description": self.description, "schemes": list(self.schemes),
                "note": self.note}


# ---------------------------------------------------------------- reading the tree

def _verb(node, table):
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in table:
        return node.func.id
    return None


def _key(call):
    """The lock a verb call names: "zone" for the zone verbs, else its lock argument."""
    if call.func.id in ("zone_enter", "zone_leave"):
        return "zone"
    return ast.unparse(call.args[LOCK_ARG])


def _own_exprs(stmt):
    """The expressions a statement evaluates itself (not those of nested statements)."""
    if isinstance(stmt, (ast.If, ast.While)):
        return [stmt.test]
    if isinstance(stmt, ast.For):
        return [stmt.iter]
    if isinstance(stmt, (ast.Expr, ast.Assign, ast.AugAssign, ast.AnnAssign, ast.Return)):
        return [stmt.value] if stmt.value is not None else []
    return []


def _calls(stmt, table):
    """Verb calls of `table` in a statement's own expressions, in source order."""
    out = [n for e in _own_exprs(stmt) for n in ast.walk(e) if _verb(n, table)]
    return sorted(out, key=lambda n: (n.lineno, n.col_offset))


def _bodies(fn, flags):
    """(statement list, fault flag it runs under or None) for every list in `fn`."""
    def walk(body, under):
        yield body, under
        for st in body:
            if isinstance(st, ast.If):
                yield from walk(st.body, under or _fault_test(st.test, flags))
                if st.orelse:
                    yield from walk(st.orelse, under)
            elif isinstance(st, (ast.While, ast.For)):
                yield from walk(st.body, under)
                if st.orelse:
                    yield from walk(st.orelse, under)
            elif isinstance(st, ast.With):
                yield from walk(st.body, under)
    yield from walk(fn.body, None)


def _fault_test(test, flags):
    """The fault flag an `if` test requires to be set (its body is that fault's seam)."""
    if isinstance(test, ast.Name) and test.id in flags:
        return flags[test.id]
    if isinstance(test, ast.BoolOp) and isinstance(test.op, ast.And):
        for v in test.values:
            if isinstance(v, ast.Name) and v.id in flags:
                return flags[v.id]
    return None


def _fault_flags(fn):
    """Local name -> fault constant, for `name = fault(z, F.FAULT_X)` in `fn`."""
    out = {}
    for n in ast.walk(fn):
        if isinstance(n, ast.Assign) and len(n.targets) == 1 and \
                isinstance(n.targets[0], ast.Name) and isinstance(n.value, ast.Call) and \
                isinstance(n.value.func, ast.Name) and n.value.func.id == "fault":
            out[n.targets[0].id] = ast.unparse(n.value.args[1]).split(".")[-1]
    return out


def _writers(tree):
    """Names of calls that write the zone table: the atomics, and kernels of this file
    that do (transitively)."""
    fns = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
    writes = set(WRITER_CALLS)
    changed = True
    while changed:
        changed = False
        for name, fn in fns.items():
            if name not in writes and any(_writes_node(n, writes) for n in ast.walk(fn)):
                writes.add(name)
                changed = True
    return writes


def _writes_node(n, writers):
    if isinstance(n, ast.Subscript) and isinstance(n.ctx, ast.Store) and \
            isinstance(n.value, ast.Name) and n.value.id == "z":
        return True
    return isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id in writers


def _writes(stmt, writers):
    return any(_writes_node(n, writers) for n in ast.walk(stmt))


def _release_unit(stmt):
    """The release call a statement is made of (`unlock(...)` or `if c: unlock(...)`)."""
    if isinstance(stmt, ast.Expr) and _verb(stmt.value, RELEASE):
        return stmt.value
    if isinstance(stmt, ast.If) and not stmt.orelse and len(stmt.body) == 1:
        return _release_unit(stmt.body[0])
    return None


def _lock_class(fn, key, line):
    """"block lock" for `blk = block_lock(...)` (the assignment of `key` nearest above)."""
    if key == "zone":
        return "zone lock"
    best = None
    for n in ast.walk(fn):
        if isinstance(n, ast.Assign) and n.lineno < line and len(n.targets) == 1 and \
                isinstance(n.targets[0], ast.Name) and n.targets[0].id == key and \
                isinstance(n.value, ast.Call) and isinstance(n.value.func, ast.Name):
            if best is None or n.lineno > best.lineno:
                best = n
    name = best.value.func.id.replace("_", " ") if best is not None else key
    return f"{name} ({key})"


def _exits(body):
    return any(isinstance(n, (ast.Continue, ast.Break, ast.Return))
               for st in body for n in ast.walk(st))


def _has_release(body):
    return any(_verb(n, RELEASE) for st in body for n in ast.walk(st))


def _assigned_names(stmts):
    return {t.id for st in stmts for n in ast.walk(st) if isinstance(n, ast.Assign)
            for t in n.targets if isinstance(t, ast.Name)}


# ---------------------------------------------------------------- editing the text

class _Text:
    """A file's bytes with edits at ast positions, applied bottom-up."""

    def __init__(self, source):
        self.data = source.encode()
        self.starts = [0]
        for line in self.data.splitlines(keepends=True):
            self.starts.append(self.starts[-1] + len(line))
        self.edits = []

    def at(self, line, col):
        return self.starts[line - 1] + col

    def span(self, node):
        return self.at(node.lineno, node.col_offset), self.at(node.end_lineno, node.end_col_offset)

    def lines(self, first, last):
        """Byte span of whole lines first..last (1-based, inclusive)."""
        return self.starts[first - 1], self.starts[last]

    def stmt_lines(self, stmt):
        """A statement's whole lines; it must own them (nothing else on them)."""
        a, b = self.lines(stmt.lineno, stmt.end_lineno)
        s, e = self.span(stmt)
        if self.data[a:s].strip() or self.data[e:b].strip() and \
                not self.data[e:b].strip().startswith(b"#"):
            raise ValueError(f"line {stmt.lineno}: a statement that shares its lines")
        return a, b

    def text(self, a, b):
        return self.data[a:b].decode()

    def replace(self, a, b, text):
        self.edits.append((a, b, text.encode()))

    def result(self):
        out = self.data
        spans = sorted(self.edits, reverse=True)
        for (a, b, _), (c, d, _) in zip(spans[1:], spans):
            if b > c and not (a == b == c == d):
                raise ValueError("overlapping edits")
        for a, b, text in spans:
            out = out[:a] + text + out[b:]
        return out.decode()


def _indent(stmt):
    return " " * stmt.col_offset


# ---------------------------------------------------------------- the operators

class _Function:
    """What the operators need to know about one kernel."""

    def __init__(self, rel, source, tree, fn):
        self.rel, self.source, self.tree, self.fn = rel, source, tree, fn
        self.flags = _fault_flags(fn)
        self.bodies = list(_bodies(fn, self.flags))
        self.writers = _writers(tree)

    def text(self):
        return _Text(self.source)

    def schemes(self, verbs, under):
        """(schemes where all `verbs` take a lock, note): none inside a fault's seam."""
        if under:
            return (), f"runs only with seeded fault {under} switched on"
        common = set(SCHEMES)
        for v in verbs:
            common &= set(ACQUIRE.get(v) or RELEASE[v])
        return tuple(s for s in SCHEMES if s in common), ""

    def first_stmt(self):
        body = self.fn.body
        doc = isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) and \
            isinstance(body[0].value.value, str)
        return body[1] if doc and len(body) > 1 else body[0]


# Each operator yields (operator, lock key, line, description, schemes, note, edited text)
# for every site it finds in one kernel.

def drop_lock(f):
    """Every acquisition, with the release that pairs with it at run time."""
    name = f.fn.name
    for body, under in f.bodies:
        for st in body:
            for call in _calls(st, ACQUIRE):
                key = _key(call)
                tx = f.text()
                tx.replace(*tx.stmt_lines(st), _taken(tx, st, call))
                first = f.first_stmt()
                a, _ = tx.stmt_lines(first)
                tx.replace(a, a, f"{_indent(first)}{FLAG} = False\n")
                for rel in (n for n in ast.walk(f.fn) if isinstance(n, ast.Expr)
                            and _verb(n.value, RELEASE) and _key(n.value) == key
                            and not st.lineno <= n.lineno <= st.end_lineno):   # gone with st
                    a, b = tx.stmt_lines(rel)
                    ind = _indent(rel)
                    tx.replace(a, b, f"{ind}if {FLAG}:\n{ind}    {FLAG} = False\n{ind}else:\n"
                               f"{ind}    {tx.text(*tx.span(rel))}\n")
                schemes, note = f.schemes([call.func.id], under)
                yield ("drop-lock", key, call.lineno,
                       f"{name}: the {_lock_class(f.fn, key, call.lineno)} taken by"
                       f" {call.func.id} at line {call.lineno} is not taken, nor released",
                       schemes, note, tx)


def _taken(tx, st, call):
    """The text that replaces `if [c and] not verb(...): <give up>` when the verb succeeds
    without taking anything: it only sets the flag."""
    test = st.test if isinstance(st, ast.If) else None
    parts = test.values if isinstance(test, ast.BoolOp) and isinstance(test.op, ast.And) \
        else [test]
    last = parts[-1]
    if st.orelse or not (isinstance(last, ast.UnaryOp) and isinstance(last.op, ast.Not)
                         and last.operand is call):
        raise ValueError(f"line {call.lineno}: an acquisition not of the form"
                         " `if [c and] not verb(...):` without else")
    ind = _indent(st)
    elif_ = tx.text(*tx.span(st)).startswith("elif")
    rest = " and ".join(ast.unparse(p) for p in parts[:-1])
    if rest:
        return f"{ind}{'elif' if elif_ else 'if'} {rest}:\n{ind}    {FLAG} = True\n"
    return f"{ind}else:\n{ind}    {FLAG} = True\n" if elif_ else f"{ind}{FLAG} = True\n"


def swap_locks(f):
    """Every two adjacent acquisitions of one scheme, in the other order."""
    name = f.fn.name
    for body, under in f.bodies:
        held = [(i, _calls(st, ACQUIRE)) for i, st in enumerate(body)]
        held = [(i, c[0]) for i, c in held if c]
        for (i, c1), (j, c2) in zip(held, held[1:]):
            between = body[i + 1:j]
            if any(_has_release([st]) or any(_verb(n, ACQUIRE) for n in ast.walk(st))
                   for st in between):
                continue
            k1, k2 = _key(c1), _key(c2)
            schemes, note = f.schemes([c1.func.id, c2.func.id], under)
            if k1 == k2 or not (schemes or note):
                continue            # never both a lock in one scheme: nothing to reorder
            tx = f.text()
            a, b = tx.stmt_lines(body[i])
            _, e = tx.stmt_lines(body[j])
            tx.replace(a, b, "")
            tx.replace(e, e, tx.text(a, b))
            yield ("swap-locks", f"{k1}+{k2}", c1.lineno,
                   f"{name}: takes the {_lock_class(f.fn, k2, c2.lineno)} (line {c2.lineno})"
                   f" before the {_lock_class(f.fn, k1, c1.lineno)} (line {c1.lineno})",
                   schemes, note, tx)


def drop_recheck(f):
    """Every re-validation right after an acquisition."""
    name = f.fn.name
    for body, under in f.bodies:
        for i, st in enumerate(body[:-1]):
            calls = _calls(st, ACQUIRE)
            if not calls:
                continue
            nxt = body[i + 1]
            if not isinstance(nxt, ast.If) or nxt.orelse:
                continue
            before = _assigned_names(s for s in ast.walk(f.fn) if isinstance(s, ast.stmt)
                                     and s.end_lineno < st.lineno)
            guard = _has_release(nxt.body) and _exits(nxt.body)
            reread = len(nxt.body) == 1 and isinstance(nxt.body[0], ast.Assign) and \
                _assigned_names(nxt.body) & before
            if not (guard or reread):
                continue
            tx = f.text()
            tx.replace(*tx.stmt_lines(nxt), "")
            what = (f"the re-check `{ast.unparse(nxt.test)}`" if guard else
                    f"the re-read `{ast.unparse(nxt.body[0])}`")
            schemes, note = f.schemes([calls[-1].func.id],
                                      under or _fault_test(nxt.test, f.flags))
            yield ("drop-recheck", _key(calls[-1]), nxt.lineno,
                   f"{name}: {what} at line {nxt.lineno}, after the"
                   f" {_lock_class(f.fn, _key(calls[-1]), st.lineno)} is taken, is deleted",
                   schemes, note, tx)


def early_unlock(f):
    """Every release that has a write above it under its lock, moved before that write."""
    name = f.fn.name
    for body, under in f.bodies:
        for r, st in enumerate(body):
            call = _release_unit(st)
            if call is None:
                continue
            key = _key(call)
            inner = _fault_test(st.test, f.flags) if isinstance(st, ast.If) else None
            reads = {n.id for n in ast.walk(st) if isinstance(n, ast.Name)
                     and isinstance(n.ctx, ast.Load)}
            target = None
            for w in range(r - 1, -1, -1):
                if any(_key(c) == key for c in _calls(body[w], ACQUIRE)) or \
                        isinstance(body[w], (ast.While, ast.For)):
                    break           # nothing written under the lock here; a loop is no write
                if _assigned_names([body[w]]) & reads:
                    break           # the release needs this value: it cannot move above it
                if any(_verb(n, RELEASE) and _key(n) == key for n in ast.walk(body[w])):
                    continue        # another path's release: its writes are not ours
                if _writes(body[w], f.writers):
                    target = body[w]
                    break
            if target is None:
                continue
            tx = f.text()
            a, b = tx.stmt_lines(st)
            c, _ = tx.stmt_lines(target)
            tx.replace(a, b, "")
            tx.replace(c, c, tx.text(a, b))
            schemes, note = f.schemes([call.func.id], under or inner)
            yield ("early-unlock", key, st.lineno,
                   f"{name}: the {_lock_class(f.fn, key, st.lineno)} is released (line"
                   f" {st.lineno}) before the write at line {target.lineno}"
                   f" `{ast.unparse(target).splitlines()[0]}`", schemes, note, tx)


OPERATOR_FUNCS = (drop_lock, swap_locks, drop_recheck, early_unlock)


# ---------------------------------------------------------------- the mutants

def generate(root=ROOT, files=KERNEL_FILES):
    """Every mutant of `files` (paths relative to `root`), in a deterministic order.

    Raises ValueError if an edit cannot be made cleanly or a mutant does not parse.
    """
    found = []
    for rel in files:
        source = (Path(root) / rel).read_text()
        tree = ast.parse(source, filename=rel)
        for fn in tree.body:
            if not _is_kernel(fn):
                continue
            f = _Function(rel, source, tree, fn)
            for op in OPERATOR_FUNCS:
                for operator, key, line, description, schemes, note, tx in op(f):
                    text = tx.result()
                    base = f"{operator}/{fn.name}/{key}"
                    if text == source:
                        raise ValueError(f"{base} (line {line}): the edit changed nothing")
                    ast.parse(text, filename=rel)
                    found.append((base, Mutant(base, operator, rel, fn.name, line, description,
                                               schemes, text, note)))
    total = {}
    for base, _ in found:
        total[base] = total.get(base, 0) + 1
    out, nth = [], {}
    for base, m in found:          # several sites of one lock in one kernel: #1, #2, ...
        nth[base] = nth.get(base, 0) + 1
        out.append(m if total[base] == 1 else dataclasses.replace(m, id=f"{base}#{nth[base]}"))
    return out


def counts(mutants):
    """Mutants per operator (every operator present, zero or not)."""
    return {op: sum(m.operator == op for m in mutants) for op in OPERATORS}


def snapshot(dest, root=None):
    """Copy the package source tree (harness/, workers/) of `root` (default: this one)
    under `dest`; returns dest."""
    dest, root = Path(dest), Path(root or ROOT)
    for pkg in PACKAGES:
        shutil.copytree(root / pkg, dest / pkg,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
                        dirs_exist_ok=True)
    return str(dest)


def materialize(mutant, dest, root=None):
    """Copy the package source tree under `dest` with the mutant's one edit; returns dest.

    Everything a trial imports comes from there (cwd and PYTHONPATH), so the
    JIT cache key (harness.jitcache) is the mutant's own.
    """
    dest = Path(snapshot(dest, root))
    target = dest / mutant.file
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    tmp.write_text(mutant.source)
    os.replace(tmp, target)
    return str(dest)


def diff(mutant, root=ROOT):
    """A unified diff of the mutant against the original file."""
    import difflib
    before = (Path(root) / mutant.file).read_text().splitlines(keepends=True)
    after = mutant.source.splitlines(keepends=True)
    return "".join(difflib.unified_diff(before, after, f"a/{mutant.file}", f"b/{mutant.file}",
                                        n=2))
