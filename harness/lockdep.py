"""The lock-order validator's analysis: observed class graph vs the declared hierarchy.

Kernels record, per thread, the first site that took class B while holding
class A, and the cycle-counter stamp when it did (harness.lockdep_record;
trylocks record nothing).  Here the rows are merged into one class graph
(each edge keeps its earliest stamp), searched for cycles (a cycle is a
possible deadlock even if none happened, as in Linux lockdep), diffed
against harness.hierarchy, and rendered as text or Graphviz.  Each problem
carries `stamp`, the raw cycle counter at which it became detectable: for a
cycle the latest first stamp of its edges, for an edge its first stamp, for
a sleep or a bad unlock its first occurrence.
"""

from harness import hierarchy as H
from harness.layout import (A_SLEPT_CLASS, A_SLEPT_HOLDING, A_SLEPT_STAMP, A_SLEPT_WAITING,
                            A_UNHELD_STAMP, T_AUX, T_EDGE0, T_EDGE_STAMP0, T_LOCKDEP_ERR,
                            T_STATE)

NAMES = H.CLASS_NAMES


def observed_edges(t):
    """{(held, taken): {"site": name, "threads": [...], "stamp": cycles}} merged over thread
    rows; site and stamp are those of the thread that made the edge first."""
    edges = {}
    for i in range(t.shape[0]):
        for held in range(H.NCLASSES):
            for taken in range(H.NCLASSES):
                site = int(t[i, T_EDGE0 + held, taken])
                if site:
                    stamp = int(t[i, T_EDGE_STAMP0 + held, taken])
                    e = edges.setdefault((held, taken), {"site": H.SITES[site - 1],
                                                         "threads": [], "stamp": stamp})
                    e["threads"].append(i)
                    if stamp < e["stamp"]:
                        e["site"], e["stamp"] = H.SITES[site - 1], stamp
    return edges


def find_cycles(edges):
    """Every elementary cycle of the class graph, each as a list of classes (small graph)."""
    succ = {}
    for a, b in edges:
        succ.setdefault(a, set()).add(b)
    cycles = []

    def walk(start, node, path):
        for nxt in sorted(succ.get(node, ())):
            if nxt == start:
                cycles.append(path[:])
            elif nxt > start and nxt not in path:
                walk(start, nxt, path + [nxt])

    for start in sorted(succ):
        walk(start, start, [start])
    return cycles


def analyze(t, scheme, lock_name=str):
    """All findings of one run's thread table, as a JSON-ready dict."""
    edges = observed_edges(t)
    allowed = H.allowed_edges(scheme)
    problems = []
    for cycle in find_cycles(edges):
        chain = [(cycle[k], cycle[(k + 1) % len(cycle)]) for k in range(len(cycle))]
        kind = "same-class-nesting" if len(cycle) == 1 else "circular-dependency"
        problems.append({
            "kind": kind, "cycle": [NAMES[c] for c in cycle],
            "chain": [{"held": NAMES[a], "taken": NAMES[b], **edges[(a, b)]} for a, b in chain],
            "summary": ("two locks of class " + NAMES[cycle[0]] + " held at once"
                        if kind == "same-class-nesting" else
                        "possible circular locking dependency " +
                        " -> ".join(NAMES[c] for c in cycle + cycle[:1])),
            "stamp": max(edges[e]["stamp"] for e in chain)})
    for (a, b), e in sorted(edges.items()):
        if (a, b) not in allowed and a != b:
            problems.append({"kind": "undeclared-edge", "held": NAMES[a], "taken": NAMES[b],
                             **e, "summary": f"{NAMES[a]} -> {NAMES[b]} at {e['site']}"
                             f" (threads {e['threads']}) is not in the declared order"})
    for i in range(t.shape[0]):
        n = int(t[i, T_AUX, A_SLEPT_HOLDING])
        if n:
            problems.append({"kind": "sleep-while-holding", "thread": i, "count": n,
                             "summary": f"thread {i} slept {n} times in a lock wait while holding"
                             f" a {NAMES[int(t[i, T_AUX, A_SLEPT_CLASS])]} lock"
                             f" (last waiting for {lock_name(int(t[i, T_AUX, A_SLEPT_WAITING]))})",
                             "stamp": int(t[i, T_AUX, A_SLEPT_STAMP])})
        bad = int(t[i, T_STATE, T_LOCKDEP_ERR])
        if bad:
            problems.append({"kind": "unlock-not-held", "thread": i, "count": bad,
                             "summary": f"thread {i} released {bad} locks it did not hold",
                             "stamp": int(t[i, T_AUX, A_UNHELD_STAMP])})
    declared = sorted(allowed)
    return {
        "scheme": scheme,
        "declared": [[NAMES[a], NAMES[b]] for a, b in declared],
        "observed": [{"held": NAMES[a], "taken": NAMES[b], **e}
                     for (a, b), e in sorted(edges.items())],
        "missing": [[NAMES[a], NAMES[b]] for a, b in declared if (a, b) not in edges],
        "problems": problems,
    }


def render(analysis):
    """Lockdep-style text: each problem, then the observed graph against the declaration."""
    out = []
    for p in analysis["problems"]:
        if p["kind"] == "circular-dependency":
            out += ["=" * 60, "WARNING: possible circular locking dependency detected",
                    "-" * 60, "the dependency chain is:"]
            for k, e in enumerate(p["chain"]):
                out.append(f"-> #{k} ({e['taken']}) taken while holding ({e['held']})"
                           f" at {e['site']}, threads {e['threads']}")
            a, b = p["chain"][0]["held"], p["chain"][0]["taken"]
            out += ["", " Possible unsafe locking scenario:", "",
                    "       CPU0                    CPU1",
                    "       ----                    ----",
                    f"  lock({a});",
                    f"                               lock({b});",
                    f"                               lock({a});",
                    f"  lock({b});", "", " *** DEADLOCK ***", ""]
        else:
            out.append(f"{p['kind']}: {p['summary']}")
    out.append(f"lock order ({analysis['scheme']} scheme), observed against declared:")
    declared = {tuple(d) for d in analysis["declared"]}
    for e in analysis["observed"]:
        mark = "ok " if (e["held"], e["taken"]) in declared else "BAD"
        out.append(f"  [{mark}] {e['held']:>9} -> {e['taken']:<9} first at {e['site']}"
                   f" (threads {e['threads']})")
    for a, b in analysis["missing"]:
        out.append(f"  [ - ] {a:>9} -> {b:<9} declared, not exercised in this run")
    if not analysis["observed"] and not analysis["missing"]:
        out.append("  (no nested locking)")
    return "\n".join(out)


def to_dot(analysis):
    """The observed graph for Graphviz; undeclared edges red, declared-but-unseen dashed."""
    declared = {tuple(d) for d in analysis["declared"]}
    lines = [f'digraph "lock order ({analysis["scheme"]})" {{', "  rankdir=TB;"]
    for e in analysis["observed"]:
        ok = (e["held"], e["taken"]) in declared
        lines.append(f'  "{e["held"]}" -> "{e["taken"]}" [label="{e["site"]}"'
                     f'{"" if ok else ", color=red, fontcolor=red"}];')
    for a, b in analysis["missing"]:
        lines.append(f'  "{a}" -> "{b}" [style=dashed, label="declared"];')
    lines.append("}")
    return "\n".join(lines) + "\n"
