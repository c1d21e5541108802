"""A night as JUnit XML: one testcase per matrix cell, per canary and per lock mutant,
with stable names.

GitLab, Jenkins and GitHub test reporters read this.  A cell fails with its
bucket titles as the message and the reproduction commands in system-out; a
canary fails when any of its runs was not caught by a detector the fault
declares; a mutant fails when it survived undeclared, was killed though declared
equivalent, or did not compile (and the mutants' control when it was killed); a
cell none of whose trials ran is skipped.  No seed or time ever enters a name.
"""

import xml.etree.ElementTree as ET

from harness import trials as T
from harness.mutants_campaign import outcome

FAILING = (T.VIOLATIONS, T.HANG, T.CRASH, T.TIMEOUT)


def render(night):
    per = {}
    for r in night["records"]:
        if r["kind"] in ("cell", "canary"):
            per.setdefault((r["kind"], r["cell"]), []).append(r)
    for name in (night.get("matrix") or {}).get("cells", []):
        per.setdefault(("cell", name), [])
    state = {s: b.get("state", "new") for s, b in night["buckets"].items()}
    canaries = {f"canary-{f}": c for f, c in night["canaries"].items()}
    root = ET.Element("testsuites", name="nightly race detection")
    for kind, suite_name in (("cell", "nightly.matrix"), ("canary", "nightly.canaries")):
        suite = ET.SubElement(root, "testsuite", name=suite_name)
        n = fails = skips = 0
        total_t = 0.0
        for (k, cell), rs in sorted(per.items()):
            if k != kind:
                continue
            n += 1
            t = sum(r.get("elapsed_s") or 0 for r in rs)
            total_t += t
            case = ET.SubElement(suite, "testcase", classname=suite_name, name=cell,
                                 time=f"{t:.2f}")
            ran = [r for r in rs if r["status"] not in (T.NOT_RUN, T.INTERRUPTED, T.LOST)]
            out = [f"{r['id']}: {r['status']}  reproduce: {r['command']}" for r in rs]
            if not ran:
                skips += 1
                ET.SubElement(case, "skipped", message="no trial of this cell ran tonight"
                              " (budget, interrupt or lost worker)")
            elif kind == "cell" and any(r["status"] in FAILING for r in ran):
                fails += 1
                titles = []
                for r in ran:
                    for sig, title in r.get("signatures", [])[:1]:
                        text = f"[{state.get(sig, 'new')}] {title}"
                        if text not in titles:
                            titles.append(text)
                bad = [r for r in ran if r["status"] in FAILING]
                f = ET.SubElement(case, "failure", message="; ".join(titles)[:1000],
                                  type="race" if titles else "failure")
                f.text = "\n".join(
                    [f"{len(bad)}/{len(ran)} trials failed"] +
                    [f"{r['id']}: {'; '.join(r.get('problems') or [r['status']])}"
                     f"\n  {r.get('race') or ''}\n  reproduce: {r['command']}" for r in bad])
            elif kind == "canary" and canaries.get(cell, {}).get("escaped"):
                fails += 1
                c = canaries[cell]
                f = ET.SubElement(case, "failure", type="canary-escaped",
                                  message=f"canary escaped {c['escaped']}/{c['runs']} runs (no"
                                  f" {'/'.join(c['expected'])} finding): the harness lost"
                                  " detection power")
                f.text = "\n".join(f"reproduce: {cmd}" for cmd in c["escaped_commands"])
            ET.SubElement(case, "system-out").text = "\n".join(out)
        suite.set("tests", str(n))
        suite.set("failures", str(fails))
        suite.set("errors", "0")
        suite.set("skipped", str(skips))
        suite.set("time", f"{total_t:.2f}")
    mutant_suite(root, night.get("mutants"))
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") \
        + "\n"


def mutant_suite(root, mutants):
    """Suite `nightly.mutants`: the control and each mutant the night ran."""
    if not mutants:
        return
    suite = ET.SubElement(root, "testsuite", name="nightly.mutants")
    s = mutants["summary"]
    cases = [("control", [f"{sc}: {outcome(r)}" for sc, r in mutants["control"].items()],
              "killed" if s["control_killed"] else None, "the unmutated control was killed in "
              + ", ".join(s["control_killed"]) + ": kills there prove nothing")]
    for e in mutants["mutants"]:
        trials = [f"{sc}: {'killed by ' + r['killed_by'] if r['killed'] else 'survived'}"
                  f" ({len(r['trials'])} trial(s))  {t['command']}"
                  for sc, r in e["runs"].items() for t in r["trials"][-1:]]
        bad = ("mutant-survived" if e["id"] in s["gaps"] else
               "wrong-equivalence" if e["id"] in s["wrong_declarations"] else
               "compile-error" if e["id"] in s["compile_errors"] else None)
        cases.append((e["id"], [e["description"]] + trials, bad, e["classification"]))
    fails = 0
    for name, out, bad, message in cases:
        case = ET.SubElement(suite, "testcase", classname="nightly.mutants", name=name)
        if bad:
            fails += 1
            ET.SubElement(case, "failure", type=bad, message=message[:1000])
        ET.SubElement(case, "system-out").text = "\n".join(out)
    for k, v in (("tests", len(cases)), ("failures", fails), ("errors", 0), ("skipped", 0)):
        suite.set(k, str(v))
