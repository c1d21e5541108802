"""A night as one self-contained HTML page: outcome matrix, buckets, canaries, plots, trends.

No script, no external file: the plots are inline SVG drawn here, so the page
opens anywhere a CI artifact can be viewed.
"""

import html
import math

from harness import trials as T
from harness.mutants_campaign import outcome
from harness.render_markdown import headline, rate, sec, when

COLORS = {T.CLEAN: "#2e9d44", T.VIOLATIONS: "#d7301f", T.HANG: "#f28e1c", T.CRASH: "#7b3294",
          T.TIMEOUT: "#7b3294", T.LOST: "#999999", T.NOT_RUN: "#dddddd",
          T.INTERRUPTED: "#bbbbbb"}
BAR, DOT, LINE = "#3465a4", "#c4302b", "#5c3566"
CSS = """body{font:14px system-ui,sans-serif;margin:24px;color:#222}
table{border-collapse:collapse;margin:8px 0 20px}td,th{border:1px solid #ccc;padding:3px 7px;
text-align:left;vertical-align:top}th{background:#f3f3f3}code{font-size:12px}
.m span.o{display:inline-block;width:18px;height:18px;margin:1px}
.m th{font-weight:normal;font-size:12px}.new{color:#d7301f;font-weight:bold}
.esc{color:#d7301f;font-weight:bold}.plots{display:flex;flex-wrap:wrap;gap:24px}
figure{margin:0}figcaption{font-weight:bold;margin-bottom:4px}"""


def e(x):
    return html.escape(str(x))


def render(night):
    h = night
    parts = [f"<!DOCTYPE html><html lang=en><head><meta charset=utf-8>"
             f"<title>Nightly {e(h['label'])}</title><style>{CSS}</style></head><body>",
             f"<h1>{headline(h).replace('**', '')}</h1>",
             f"<p>Plan: {e(h['plan']['how'])}.</p>",
             "<h2 id=matrix>Outcome matrix</h2>", outcome_matrix(h),
             "<h2 id=buckets>Failure buckets</h2>", bucket_table(h),
             "<h2 id=canaries>Canaries</h2>", canary_table(h),
             "<h2 id=mutants>Lock mutants</h2>", mutant_table(h),
             "<h2 id=plots>Plots</h2><div class=plots>",
             figure("Canary kill rate (95% Wilson interval)", kill_plot(h)),
             figure("Canary time to detection (s, log scale)", ttd_plot(h)),
             figure("Throughput per cell (allocator ops/s, median)", throughput_plot(h)),
             figure("Trend over the last nights", trend_plot(h)), "</div>",
             "<h2 id=vacuity>Vacuity</h2>", vacuity(h), "</body></html>"]
    return "\n".join(parts) + "\n"


def figure(title, svg):
    return f"<figure><figcaption>{e(title)}</figcaption>{svg}</figure>"


def outcome_matrix(h):
    """Cells as a grid (the first half of the axes down, the rest across), each cell's
    trials as coloured squares; canaries in a row of their own."""
    per = {}
    for r in h["records"]:
        if r["kind"] in ("cell", "canary"):
            per.setdefault(r["cell"], []).append(r)
    legend = " ".join(f"<span style='background:{c};padding:0 8px'>&nbsp;</span> {e(s)}"
                      for s, c in COLORS.items())
    cells = [c for c in per if not c.startswith("canary-")]
    canaries = sorted(c for c in per if c.startswith("canary-"))
    grid = axes_of(h, cells)
    if grid:
        rows, cols, at = grid
        out = ["<table class=m><tr><th></th>" + "".join(f"<th>{e(' '.join(c))}</th>"
                                                       for c in cols) + "</tr>"]
        for row in rows:
            out.append(f"<tr><th>{e(' '.join(row))}</th>" + "".join(
                f"<td>{squares(per.get(at.get((row, col)), []))}</td>" for col in cols)
                + "</tr>")
    else:
        out = ["<table class=m>"] + [f"<tr><th>{e(c)}</th><td>{squares(per[c])}</td></tr>"
                                     for c in sorted(cells)]
    out.append("</table>")
    if canaries:
        out.append("<table class=m><tr><th>canary</th>" + "".join(
            f"<th>{e(c.removeprefix('canary-'))}</th>" for c in canaries) + "</tr><tr><th>runs"
            "</th>" + "".join(f"<td>{squares(per[c])}</td>" for c in canaries) + "</tr></table>")
    return "\n".join(out) + f"<p>{legend}</p>"


def axes_of(h, cells):
    """(row keys, column keys, {(row, col): cell}) from the matrix's declared values, or None."""
    values = (h.get("matrix") or {}).get("values") or {}
    if not cells or any(c not in values for c in cells):
        return None
    n = len(values[cells[0]])
    if n < 2 or any(len(values[c]) != n for c in cells):
        return None
    k = (n + 1) // 2

    def label(pairs):
        return tuple(v if a in ("locking",) else f"{a}={v}" for a, v in pairs)
    at = {(label(values[c][:k]), label(values[c][k:])): c for c in cells}
    rows = sorted({r for r, _ in at}, key=lambda r: [cells.index(at[(r, c)]) for rr, c in at
                                                     if rr == r][0])
    cols = sorted({c for _, c in at}, key=lambda c: [cells.index(at[(r, cc)]) for r, cc in at
                                                     if cc == c][0])
    return rows, cols, at


def squares(rs):
    return "".join(f"<span class=o style='background:{COLORS.get(r['status'], '#000')}'"
                   f" title='{e(r['id'])}: {e(r['status'])}'></span>"
                   for r in sorted(rs, key=lambda r: r["id"])) or "-"


def bucket_table(h):
    b = h["buckets"]
    if not b:
        return "<p>No failing trial in the matrix.</p>"
    rows = ["<table><tr><th>state</th><th>bucket</th><th>trials</th><th>kill rate (95% CI)</th>"
            "<th>median TTD</th><th>first seen</th><th>last seen</th><th>reproduced</th>"
            "<th>reproduce with</th></tr>"]
    for x in sorted(b.values(), key=lambda x: (x["state"] not in ("new", "reopened"),
                                               x["title"])):
        cls = " class=new" if x["state"] in ("new", "reopened") else ""
        rows.append(f"<tr><td{cls}>{e(x['state'])}</td><td>{e(x['title'])}"
                    + (f"<br><small>also seen: {e('; '.join(x['also_seen']))}</small>"
                       if x.get("also_seen") else "") + "</td>"
                    f"<td>{x['count']}/{x.get('ran', '-')}</td>"
                    f"<td>{e(rate(x['kill_rate'], x['kill_rate_ci']))}</td>"
                    f"<td>{sec(x['median_ttd_s'])}</td><td>{when(x.get('first_seen'))}</td>"
                    f"<td>{when(x.get('last_seen'))}</td><td>{e(x.get('reproduced', '-'))}</td>"
                    f"<td><code>{e(x['command'])}</code>"
                    + "".join(f" <a href='{e(r)}'>report</a>" for r in x.get("reports", []))
                    + "</td></tr>")
    return "\n".join(rows) + "</table>"


def canary_table(h):
    rows = ["<table><tr><th>fault</th><th>caught</th><th>kill rate (95% CI)</th>"
            "<th>median TTD</th><th>detectors</th></tr>"]
    for x in h["canaries"].values():
        cls = " class=esc" if x["escaped"] else ""
        rows.append(f"<tr><td{cls}>{e(x['fault'])}{' ESCAPED' if x['escaped'] else ''}</td>"
                    f"<td>{x['caught']}/{x['runs']}</td>"
                    f"<td>{e(rate(x['kill_rate'], x['kill_rate_ci']))}</td>"
                    f"<td>{sec(x['median_ttd_s'])}</td><td>{e(', '.join(x['detectors']))}</td>"
                    "</tr>")
    return "\n".join(rows) + "</table>"


def mutant_table(h):
    m = h.get("mutants")
    if not m:
        return "<p>No lock mutant ran tonight.</p>"
    rows = ["<table><tr><th>mutant</th><th>scheme</th><th>outcome</th><th>killed by</th>"
            "<th>time to detection</th></tr>"]
    for x in m["mutants"]:
        cls = " class=esc" if x["id"] in m["summary"]["gaps"] else ""
        for scheme, r in (x["runs"] or {"-": None}).items():
            rows.append(f"<tr><td{cls}><code>{e(x['id'])}</code></td><td>{e(scheme)}</td>"
                        f"<td>{e(x['classification'])}</td>"
                        f"<td>{e(r['killed_by'] if r and r['killed'] else '-')}</td>"
                        f"<td>{sec(r['ttd_s']) if r and r['killed'] else '-'}</td></tr>")
    return "\n".join(rows) + "</table><p>Control (unmutated code): " + e(", ".join(
        f"{sc} {outcome(r)}" for sc, r in m["control"].items())) + "</p>"


def vacuity(h):
    if not h["vacuity"]:
        return "<p>Every cell reached its race windows.</p>"
    return "<ul>" + "".join(f"<li>{e(c)}: {e('; '.join(w))}</li>"
                            for c, w in h["vacuity"].items()) + "</ul>"


# ---------------------------------------------------------------- SVG

def svg(w, hgt, body):
    return (f"<svg xmlns='http://www.w3.org/2000/svg' width={w} height={hgt}"
            f" viewBox='0 0 {w} {hgt}' style='background:#fafafa;border:1px solid #ddd'>"
            f"{body}</svg>")


def text(x, y, s, anchor="start", size=11):
    return f"<text x='{x:.1f}' y='{y:.1f}' font-size='{size}' text-anchor='{anchor}'>{e(s)}</text>"


def hbars(items, fmt, color, xmax=None, whiskers=None, width=460):
    """Horizontal bars: items = [(label, value)], optional whiskers[label] = (lo, hi)."""
    if not items:
        return svg(width, 40, text(10, 24, "no data"))
    left, row = 190, 18
    hgt = 20 + row * len(items)
    top = xmax or max(v for _, v in items) or 1
    scale = (width - left - 60) / top
    body = []
    for k, (label, v) in enumerate(items):
        y = 10 + k * row
        body.append(text(left - 6, y + 12, label[:30], "end", 10))
        body.append(f"<rect x='{left}' y='{y + 2}' width='{max(0.5, v * scale):.1f}'"
                    f" height='{row - 6}' fill='{color}'/>")
        if whiskers and whiskers.get(label) and whiskers[label][0] is not None:
            lo, hi = whiskers[label]
            body.append(f"<line x1='{left + lo * scale:.1f}' x2='{left + hi * scale:.1f}'"
                        f" y1='{y + 8}' y2='{y + 8}' stroke='#000' stroke-width='1.5'/>")
        body.append(text(left + v * scale + 4 + (30 if whiskers else 0), y + 12, fmt(v), size=10))
    return svg(width, hgt, "".join(body))


def kill_plot(h):
    c = h["canaries"]
    return hbars([(f, x["kill_rate"] or 0) for f, x in c.items()], lambda v: f"{v:.0%}", BAR,
                 xmax=1.0, whiskers={f: x["kill_rate_ci"] for f, x in c.items()})


def ttd_plot(h, width=460):
    c = [(f, x["ttd_s"]) for f, x in h["canaries"].items()]
    vals = [t for _, ts in c for t in ts if t and t > 0]
    if not vals:
        return svg(width, 40, text(10, 24, "no detection"))
    lo, hi = math.log10(min(vals)) - 0.2, math.log10(max(vals)) + 0.2
    left, row = 190, 18
    scale = (width - left - 20) / max(hi - lo, 1e-9)
    body = []
    for k, (f, ts) in enumerate(c):
        y = 10 + k * row
        body.append(text(left - 6, y + 12, f[:30], "end", 10))
        for t in ts:
            if t and t > 0:
                body.append(f"<circle cx='{left + (math.log10(t) - lo) * scale:.1f}'"
                            f" cy='{y + 8}' r='4' fill='{DOT}'/>")
    axis_y = 14 + row * len(c)
    for p in range(math.ceil(lo), math.floor(hi) + 1):
        x = left + (p - lo) * scale
        body.append(f"<line x1='{x:.1f}' x2='{x:.1f}' y1='6' y2='{axis_y - 4}' stroke='#ccc'/>")
        body.append(text(x, axis_y + 8, f"{10 ** p:g}", "middle", 9))
    return svg(width, axis_y + 14, "".join(body))


def throughput_plot(h):
    per = {}
    for r in h["records"]:
        if r["kind"] == "cell" and r["status"] == T.CLEAN and r.get("allocator_ops_per_s"):
            per.setdefault(r["cell"], []).append(r["allocator_ops_per_s"])
    items = [(c, sorted(v)[len(v) // 2]) for c, v in sorted(per.items())]
    return hbars(items, lambda v: f"{v / 1e6:.2f}M", BAR)


def trend_plot(h, width=460, height=180):
    tr = h.get("trends") or []
    if not tr:
        return svg(width, 40, text(10, 24, "no history yet"))
    left, top, bottom = 40, 14, height - 30
    n = len(tr)
    xs = [left + (width - left - 20) * (k / max(1, n - 1)) for k in range(n)]
    body = []
    series = (("failing trials", [t["failing_trials"] for t in tr], DOT),
              ("buckets", [t["buckets"] for t in tr], LINE))
    ymax = max([v for _, vs, _ in series for v in vs] + [1])
    for name, vs, color in series:
        pts = " ".join(f"{x:.1f},{bottom - (bottom - top) * v / ymax:.1f}" for x, v in zip(xs, vs))
        body.append(f"<polyline points='{pts}' fill='none' stroke='{color}' stroke-width='2'/>")
        for x, v in zip(xs, vs):
            body.append(f"<circle cx='{x:.1f}' cy='{bottom - (bottom - top) * v / ymax:.1f}'"
                        f" r='3' fill='{color}'/>")
    body.append(f"<line x1='{left}' x2='{width - 10}' y1='{bottom}' y2='{bottom}' stroke='#999'/>")
    body.append(text(left - 4, top + 4, f"{ymax}", "end", 9))
    body.append(text(left - 4, bottom, "0", "end", 9))
    for x, t in zip(xs, tr):
        body.append(text(x, bottom + 12, str(t["night"])[5:16], "middle", 8))
    body.append(text(left, height - 4, "red: failing trials   purple: buckets", size=10))
    return svg(width, height, "".join(body))
