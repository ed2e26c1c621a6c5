"""The report: the pictures around an operation, the HTML page and the SVG of a finding."""
from __future__ import annotations

import re
from dataclasses import dataclass

from ... import _engine
from ...engine import ReplayResult, config_tuple, replay
from ...names import ARCH_NAMES, EVENT_NAMES, KNOB_BY_NAME, errno_name
from ...trace import Trace, op_text, op_to_list
from ..render import NO_OWNER, describe_event
from .forest import build_forest, involved
from .paths import ORACLES, kernel_path
from .state import Focus, dump_state, violation_focus
from .svg import CSS_SVG, esc, measure_forest, merge_measures, render_svg, wrap_text
from .tree import Ctx, hsize


@dataclass
class Picture:
    op_index: int | None   # the operation drawn (None: the end state of a clean trace)
    before: str | None     # SVG
    after: str | None      # SVG
    focus: Focus
    note: str = ""
    walker_level: int | None = None  # the level a drawn walk_step reads
    spaces: str = ""       # HTML: the drawn mms' VMAs and the shmem page caches, in the state drawn last


def _interesting(states: list[dict], focus: Focus) -> set[int]:
    """Tables that stay drawn in a big tree: named by the violation, held by actors, linked by a gmap, and
    every table whose entries differ between the two states."""
    out = set(focus.tables)
    if focus.entry:
        out.add(focus.entry[0])
    tabs: list[dict[int, tuple]] = []
    for s in states:
        cur: dict[int, tuple] = {}
        for m in s["mms"].values():
            for t in m["tables"]:
                cur[t["addr"]] = tuple(t["entries"])
        for v in s["vms"].values():
            for t in v["tables"]:
                cur[t["addr"]] = tuple(t["entries"])
                out |= {e[2] for e in t["entries"] if e[1] == 1}
        for c in s["cpus"]:
            for k in ("table", "pmd_table"):
                if k in c:
                    out.add(c[k])
        tabs.append(cur)
    if len(tabs) == 2:
        a, b = tabs
        out |= {k for k in set(a) | set(b) if a.get(k) != b.get(k)}
    return out


def op_focus(row, state: dict) -> Focus:
    """For an operation that is not the violating one: the address it works on (drawn as a path)."""
    name, *args = op_to_list(row)
    f = Focus()
    if name in ("mmap", "munmap", "madvise", "fault", "split", "shm_mmap", "hugetlb_mmap") and args[0] in state["procs"]:
        f.mm, f.hva = state["procs"][args[0]]["mm"], args[1]
    elif name in ("walk_begin", "rmap_begin", "unmap_mapping_begin") and args[1] in state["procs"]:
        f.mm, f.hva = state["procs"][args[1]]["mm"], args[2]
    elif name in ("guest_fault", "guest_fault_begin"):
        f.vm, f.gpa = (args[0], args[1]) if name == "guest_fault" else (args[1], args[2])
    elif name == "memslot":
        f.vm, f.gpa = args[0], args[2]
    return f


def _event_levels(result: ReplayResult) -> dict[int, int]:
    """Host table address -> level, from the table_alloc / table_free events (the last one wins)."""
    out: dict[int, int] = {}
    for ev in result.events or []:
        name = EVENT_NAMES[ev[1]] if ev[1] < len(EVENT_NAMES) else ""
        if name in ("table_alloc", "table_free", "table_defer") and ev[4] != NO_OWNER:
            out[ev[3]] = ev[2]
    return out


def picture(trace: Trace, knobs: dict | None, result: ReplayResult, op: int | None) -> Picture:
    v = result.violation
    focus = violation_focus(v) if v and (op is None or op == v.op_index) else Focus()
    if op is None and v is not None:
        op = v.op_index
    n = len(trace.ops)
    if op is None or op >= n:
        state = dump_state(trace, knobs, n)["state"]
        mms, vms = involved(trace, state, None, focus)
        ctx = Ctx(trace.arch, focus, None, _interesting([state], focus), "state", _event_levels(result))
        svg = render_svg(build_forest(trace, state, ctx, mms, vms), "state",
                         "the state at the end of the trace (before teardown)")
        note = "the violation happened in teardown; this is the state before it" if v and v.op_index >= n else ""
        return Picture(None, None, svg, focus, note, spaces=address_spaces(state, mms))
    b = dump_state(trace, knobs, op)["state"]
    if not focus.kind:
        focus = op_focus(trace.ops[op], b)
    a_out = dump_state(trace, knobs, op + 1)
    a = a_out["state"]
    mms, vms = involved(trace, b, op, focus)
    mms_a, vms_a = involved(trace, a, op, focus)
    interesting = _interesting([b, a], focus)
    levels = _event_levels(result)
    fb = build_forest(trace, b, Ctx(trace.arch, focus, a, interesting, "before", levels), mms, vms)
    fa = build_forest(trace, a, Ctx(trace.arch, focus, b, interesting, "after", levels),
                      [m for m in mms_a if m in a["mms"]] or mms_a, vms_a)
    shared = merge_measures(measure_forest(fb), measure_forest(fa))
    before = render_svg(fb, "before", f"before op {op}", shared)
    after = render_svg(fa, "after", f"after op {op}", shared)
    name, *args = op_to_list(trace.ops[op])
    wl = next((c["level"] for c in b["cpus"] if name == "walk_step" and c["cpu"] == args[0] and "level" in c), None)
    return Picture(op, before, after, focus, walker_level=wl,
                   spaces=address_spaces(a, [m for m in mms_a if m in a["mms"]] or list(a["mms"])))


VMA_FLAG_NAMES = ((1, "VM_HUGEPAGE"), (2, "hugetlb PMD_SIZE"), (4, "hugetlb PUD_SIZE"), (8, "VM_NOHUGEPAGE"),
                  (16, "VM_GROWSDOWN"))  # ptf.h VMA_* bits


def address_spaces(state: dict, mms: list[int]) -> str:
    """What the trees do not show: each mm's VMAs (anon_vma, shmem object and offset) and each shmem object's
    page cache (which blocks are a PMD-size folio after collapse_file, which hold small pages)."""
    rows = []
    for m in mms:
        md = state["mms"][m]
        for start, end, flags, anon, shm, pgoff in md["vmas"]:
            names = [n for bit, n in VMA_FLAG_NAMES if flags & bit]
            backing = f"shmem {shm} @ pgoff {pgoff:#x}" if shm >= 0 else (f"anon_vma {anon}" if anon else "anonymous")
            rows.append(f'<tr><td>mm {m}</td><td class="mono">{start:#x}-{end:#x}</td><td>{hsize(end - start)}</td>'
                        f'<td>{esc(backing)}</td><td>{esc(", ".join(names))}</td></tr>')
    out = []
    if rows:
        out.append('<h2 id="vmas">VMAs</h2><table class="kv"><tr><td><b>mm</b></td><td><b>range</b></td>'
                   '<td><b>size</b></td><td><b>backing</b></td><td><b>flags</b></td></tr>' + "".join(rows) + "</table>")
    caches = []
    for obj, blocks in state.get("shm", []):
        desc = [f"block {i}: " + (f"PMD-size folio at pfn {huge:#x}" if huge else f"{cached} small pages")
                for i, huge, cached in blocks]
        caches.append(f'<tr><td>shmem {obj}</td><td class="mono">{esc("; ".join(desc) or "empty")}</td></tr>')
    if caches:
        out.append('<h2 id="shmem">shmem page caches</h2><table class="kv">' + "".join(caches) + "</table>")
    return "".join(out)


CSS_PAGE = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;color:#1b2733;background:#fff}
header{padding:12px 12px 10px;border-bottom:1px solid #dde3ea;background:#f7f9fb}
h1{font-size:19px;margin:0 0 4px} h2{font-size:16px;margin:18px 0 8px}
.meta{color:#55626f;font-size:13px} .meta b{color:#1b2733}
code,.mono{font-family:ui-monospace,"DejaVu Sans Mono",monospace;font-size:12.5px}
main{padding:4px 12px 30px}
.verdict{display:inline-block;padding:1px 8px;border-radius:10px;font-weight:bold;font-size:12px}
.verdict.violation{background:#fbd5d5;color:#9a0000} .verdict.clean{background:#d7f0d9;color:#1b5e20}
.finding{border:1px solid #f0b4b4;background:#fff8f8;border-radius:6px;padding:10px 14px;margin:12px 0}
.finding .msg{font-family:ui-monospace,"DejaVu Sans Mono",monospace;font-size:13px;color:#8a0000}
.paths{font-family:ui-monospace,"DejaVu Sans Mono",monospace;font-size:12.5px;color:#26456e}
.paths span{background:#eef3fb;border-radius:3px;padding:0 4px;margin-right:2px;white-space:nowrap}
.figs{display:flex;gap:10px;align-items:flex-start;flex-wrap:wrap}
.figs.pair figure{flex:1 1 0} .figs.pair figure svg{max-width:100%;height:auto;display:block}
.figs.stack{flex-direction:column} .figs.stack figure{max-width:100%;overflow-x:auto}
figure{margin:0;border:1px solid #dde3ea;border-radius:6px;padding:4px}
figcaption{font-weight:bold;font-size:13px;margin:0 0 4px 4px}
.legend{font-size:12px;color:#55626f;margin:6px 0 0} .legend span{margin-right:12px;white-space:nowrap}
.sw{display:inline-block;width:11px;height:11px;border:1px solid #888;vertical-align:-1px;margin-right:3px}
.ops{border:1px solid #dde3ea;border-radius:6px}
.ops > summary{padding:6px 10px;font-weight:bold;cursor:pointer;background:#f7f9fb}
details.op{border-top:1px solid #eef1f4;padding:2px 10px}
details.op > summary{cursor:pointer;font-family:ui-monospace,"DejaVu Sans Mono",monospace;font-size:12.5px;
  list-style-position:inside}
details.op.bad{background:#fff1f1} details.op.bad > summary{color:#9a0000;font-weight:bold}
details.op.rel{box-shadow:inset 3px 0 0 #e69500} details.op.rel > summary::after{content:" \u2190 related";
  color:#b36b00;font-size:11px}
details.op.err > summary .res{color:#a15c00}
.res{color:#2e7d32} .idx{color:#8894a0;display:inline-block;width:3.5em;text-align:right;margin-right:6px}
.ev{font-family:ui-monospace,"DejaVu Sans Mono",monospace;font-size:12px;margin:2px 0 6px 4.3em;color:#333;
  white-space:pre-wrap}
.ops .paths{margin-left:4.3em;font-size:11.5px}
.noev{color:#8894a0;font-style:italic}
table.kv{border-collapse:collapse;font-size:13px} table.kv td{padding:1px 10px 1px 0;vertical-align:top}
.nondefault{color:#9a0000;font-weight:bold}
a{color:#1565c0}
"""

LEGEND = [("#fbd5d5;border-color:#d32f2f", "offending table / entry (named by the violation)"),
          ("#fff;border-color:#e69500", "entries the walk to the address reads"),
          ("#fff3c4", "entry changed by the operation"), ("#fff;border-color:#2e7d32", "new table"),
          ("#f4f4f4;border-style:dashed", "folded level (pass-through, one entry)"),
          ("#f0f0f0;border-style:dashed", "unlinked / waiting for RCU"),
          ("#f6efdc;border-style:dashed", "deposited PTE table"),
          ("#fff5f5;border-color:#c62828;border-style:dashed", "freed table"),
          ("#f1e8f8;border-color:#7b3fa0", "gmap segment entry sharing a host PTE table (arrow)")]


ACTOR_FAMILY = {"walk_begin": "walk", "walk_step": "walk", "walk_end": "walk", "rmap_begin": "rmap",
                "unmap_mapping_begin": "rmap",
                "rmap_commit": "rmap", "guest_fault_begin": "gfault", "guest_fault_commit": "gfault"}


def actor_ops(trace: Trace, op_index: int) -> set[int]:
    """The operations of the actor that the operation at op_index continues: from its begin on that cpu."""
    if op_index >= len(trace.ops):
        return set()
    name, *args = op_to_list(trace.ops[op_index])
    fam = ACTOR_FAMILY.get(name)
    if fam is None:
        return set()
    out = set()
    for i in range(op_index - 1, -1, -1):
        n2, *a2 = op_to_list(trace.ops[i])
        if ACTOR_FAMILY.get(n2) == fam and a2[0] == args[0]:
            out.add(i)
            if n2.endswith("_begin"):
                break
    return out


def _related(i: int, events: list[tuple], focus: Focus, actor: set[int]) -> bool:
    """An earlier operation that touched a table the violation names, or began the same actor."""
    if i in actor:
        return True
    for ev in events:
        if any(focus.names_table(int(x)) for x in ev[2:6] if x < 1 << 40):
            return True
    return False


PAIR_MAX = 1300  # wider states are drawn one above the other, each at its natural size


def _svg_width(svg: str | None) -> float:
    m = re.search(r'width="(\d+)"', svg or "")
    return float(m.group(1)) if m else 0.0


def _drawn(trace: Trace, knobs: dict | None, op: int | None) -> tuple[ReplayResult, Picture]:
    result = replay(trace, knobs, steps=True, teardown=True)
    if op is not None and not 0 <= op < len(trace.ops):
        raise ValueError(f"--op {op}: the trace has {len(trace.ops)} operations (0..{len(trace.ops) - 1})")
    if op is not None and op >= result.executed:
        raise ValueError(f"--op {op}: the trace stops at op {result.executed - 1} (the violation)")
    return result, picture(trace, knobs, result, op)


def _legend_svg(x0: float, y0: float, width: float) -> tuple[list[str], float]:
    """LEGEND as SVG swatches in rows of at most width pixels; also the height used."""
    out, x, y = [], x0, y0
    for css, text in LEGEND:
        fill, *rest = css.split(";")
        style = dict(s.split(":", 1) for s in rest)
        w = 17 + 5.6 * len(text)
        if x > x0 and x + w > x0 + width:
            x, y = x0, y + 17
        dash = ' stroke-dasharray="3 2"' if style.get("border-style") == "dashed" else ""
        out.append(f'<rect x="{x:.0f}" y="{y:.0f}" width="11" height="11" fill="{fill}" '
                   f'stroke="{style.get("border-color", "#888")}"{dash}/>'
                   f'<text class="band-label" x="{x + 15:.0f}" y="{y + 10:.0f}">{esc(text)}</text>')
        x += w + 12
    return out, y + 17 - y0


def build_svg(trace: Trace, knobs: dict | None = None, op: int | None = None, title: str = "trace") -> str:
    """The picture alone, as one standalone SVG document (a figure for a README or a slide): the finding as
    a heading, the page-table trees after the drawn operation (the violating one unless op is given; the
    state before operation N is the one after N - 1), and the legend."""
    result, pic = _drawn(trace, knobs, op)
    v = result.violation
    inner = pic.after
    w, h = _svg_width(inner), float(re.search(r'height="(\d+)"', inner).group(1))
    width = max(w, 640.0)
    if v:
        where = f"op {v.op_index}: {op_text(trace.ops[v.op_index])}" if v.op_index < len(trace.ops) else "teardown"
        head = [("h1", f"{v.kind} at {where}")] + [("msg", s) for s in wrap_text(v.message, width - 20, 7.3, 3)]
    else:
        head = [("h1", "clean")]
    drawn = (f"the page tables after op {pic.op_index}" if pic.op_index is not None else
             "the page tables before teardown" if v else "the page tables at the end of the trace")
    head.append(("sub", f"{title} · {trace.arch}, {len(trace.ops)} operations · {drawn} (ptfuzz show)"))
    out, y = [], 8.0
    for cls, text in head:
        y += 20 if cls == "h1" else 16
        out.append(f'<text class="fig-{cls}" x="10" y="{y:.0f}">{esc(text)}</text>')
    top = y + 10
    legend, lh = _legend_svg(10, top + h + 8, width - 20)
    height = top + h + 8 + lh + 6
    inner = inner.replace('<svg xmlns="http://www.w3.org/2000/svg" ', f'<svg x="0" y="{top:.0f}" ', 1)
    style = ('.fig-h1{font:bold 15px sans-serif;fill:#9a0000}'
             '.fig-msg{font:12px "DejaVu Sans Mono",monospace;fill:#8a0000}'
             '.fig-sub{font:11px sans-serif;fill:#55626f}')
    return "\n".join([f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}" '
                      f'viewBox="0 0 {width:.0f} {height:.0f}">',
                      f"<title>ptfuzz show: {esc(title)}</title><style>{style}{CSS_SVG}</style>",
                      f'<rect width="{width:.0f}" height="{height:.0f}" fill="#fff"/>',
                      *out, inner, *legend, "</svg>"]) + "\n"


def _trace_section(trace: Trace, result: ReplayResult, pic: Picture, by_op: dict[int, list[tuple]],
                   geo: list[tuple], effective: dict, shown: int | None) -> list[str]:
    """The trace: every operation with its result, kernel path and events (the violating one, the one drawn
    and those related to it open), then teardown's events."""
    v = result.violation
    p: list[str] = []
    n = len(trace.ops)
    open_all = n <= 12
    p.append(f'<h2 id="trace">trace</h2><details class="ops" open="open"><summary>{n} operations, '
             f'{result.executed} executed' + (f", stopped at op {v.op_index}" if v and v.op_index < n else "") +
             "</summary>")
    actor = actor_ops(trace, shown) if shown is not None else set()
    for i in range(n):
        row = trace.ops[i]
        ran = i < result.executed
        res = int(result.op_results[i]) if ran else None
        bad = v is not None and v.op_index == i
        evs = by_op.get(i, [])
        rel = not bad and _related(i, evs, pic.focus, actor)
        cls = "op" + (" bad" if bad else "") + (" err" if res else "") + (" rel" if rel else "")
        is_open = open_all or bad or i == shown or (rel and n <= 80)
        rtxt = "not executed" if res is None else f"= {res}" + (f" {errno_name(res)}" if res else "")
        open_attr = ' open="open"' if is_open else ""
        kind_txt = " \u2014 " + esc(v.kind) if bad else ""
        p.append(f'<details class="{cls}" id="op-{i}"{open_attr}><summary>'
                 f'<span class="idx">[{i}]</span>{esc(op_text(row))} <span class="res">{esc(rtxt)}</span>'
                 f'{kind_txt}</summary>')
        if ran:
            p.append('<div class="paths">' + " \u2192 ".join(
                f"<span>{esc(fn)}</span>" for fn in kernel_path(trace.arch, row, evs, geo, effective)) + "</div>")
            if evs:
                p.append('<div class="ev">' + esc("\n".join(describe_event(trace.arch, e) for e in evs)) + "</div>")
            else:
                p.append('<div class="ev noev">no page-table events</div>')
            if bad:
                p.append(f'<div class="ev" style="color:#9a0000">!! {esc(v.kind)}: {esc(v.message)}</div>')
        p.append("</details>")
    tail = by_op.get(n, [])
    if tail:
        p.append('<details class="op" id="op-teardown"><summary><span class="idx">[end]</span>teardown '
                 f'({len(tail)} events)</summary><div class="ev">' +
                 esc("\n".join(describe_event(trace.arch, e) for e in tail)) + "</div></details>")
    p.append("</details>")
    return p


def build_report(trace: Trace, knobs: dict | None = None, op: int | None = None, title: str = "trace") -> str:
    """The whole report as one HTML document (well-formed XML as well, so tests can parse it)."""
    result, pic = _drawn(trace, knobs, op)
    geo = _engine.geometry(ARCH_NAMES.index(trace.arch), config_tuple(trace))[0]
    by_op: dict[int, list[tuple]] = {}
    for ev in result.events or []:
        by_op.setdefault(ev[0], []).append(ev)
    v = result.violation
    p: list[str] = ['<!DOCTYPE html>', '<html xmlns="http://www.w3.org/1999/xhtml" lang="en"><head>',
                    '<meta charset="utf-8"/>', f"<title>ptfuzz show: {esc(title)}</title>",
                    f"<style>{CSS_PAGE}</style></head><body>"]
    verdict = "violation" if v else "clean"
    p.append("<header>")
    p.append(f'<h1>{esc(title)} <span class="verdict {verdict}">{esc(v.kind if v else "clean")}</span></h1>')
    effective = {**trace.knobs, **(knobs or {})}
    knob_txt = []
    for name, val in sorted(effective.items()):
        k = KNOB_BY_NAME.get(name)
        nd = k is not None and k.default(trace.arch) != val
        knob_txt.append(f'<span class="{"nondefault" if nd else ""}">{esc(name)}={esc(val)}</span>')
    cfg = ", ".join(f"{esc(k)}={esc(x)}" for k, x in sorted(trace.config.items())) or "defaults"
    p.append(f'<div class="meta"><b>{esc(trace.arch)}</b> \u00b7 {len(trace.ops)} operations \u00b7 '
             f'config: {cfg} \u00b7 knobs: {", ".join(knob_txt) or "defaults"}'
             + (f' \u00b7 expect: {esc(trace.expected_kind() or "clean")}' if trace.expect else "") + "</div>")
    if trace.meta and trace.meta.get("note"):
        p.append(f'<div class="meta">{esc(trace.meta["note"])}</div>')
    p.append("</header><main>")
    shown = pic.op_index
    if v:
        where = f'op <a href="#op-{v.op_index}">{v.op_index}</a>' if v.op_index < len(trace.ops) else "teardown"
        p.append(f'<div class="finding" id="finding"><b>{esc(v.kind)}</b> at {where}: '
                 f'<code>{esc(v.op)}</code><div class="msg">{esc(v.message)}</div>'
                 f'<div class="meta">oracle: {esc(ORACLES.get(v.kind, ""))}</div></div>')
    if shown is not None:
        row = trace.ops[shown]
        res = int(result.op_results[shown])
        p.append(f'<h2 id="picture">op {shown}: <code>{esc(op_text(row))}</code> = {res}'
                 f'{" " + esc(errno_name(res)) if res else ""}</h2>')
        p.append('<div class="paths">kernel path: ' + " \u2192 ".join(
            f"<span>{esc(fn)}</span>" for fn in kernel_path(trace.arch, row, by_op.get(shown, []), geo, effective,
                                                         pic.walker_level)) + "</div>")
        evs = by_op.get(shown, [])
        if evs:
            p.append('<div class="ev">' + esc("\n".join(describe_event(trace.arch, e) for e in evs)) + "</div>")
        w = max(_svg_width(pic.before), _svg_width(pic.after))
        # side by side while each keeps 85% of its size, else one above the other at full size
        style = f' style="min-width:{0.85 * w + 10:.0f}px"' if w <= PAIR_MAX else ""
        p.append(f'<div class="figs {"stack" if w > PAIR_MAX else "pair"}">')
        p.append(f'<figure id="before"{style}><figcaption>before op {shown}</figcaption>{pic.before}</figure>')
        p.append(f'<figure id="after"{style}><figcaption>after op {shown}</figcaption>{pic.after}</figure>')
        p.append("</div>")
    else:
        p.append(f'<h2 id="picture">{"state before teardown" if v else "state at the end of the trace"}'
                 f'</h2>{"<p>" + esc(pic.note) + "</p>" if pic.note else ""}')
        p.append(f'<div class="figs stack"><figure id="state"><figcaption>after op {len(trace.ops) - 1}</figcaption>'
                 f'{pic.after}</figure></div>')
    p.append('<div class="legend">' + "".join(f'<span><span class="sw" style="background:{c}"></span>{esc(t)}'
                                              f"</span>" for c, t in LEGEND) + "</div>")
    p.append(pic.spaces)
    p += _trace_section(trace, result, pic, by_op, geo, effective, shown)
    st = result.stats
    p.append('<h2>statistics</h2><table class="kv">' + "".join(
        f"<tr><td>{esc(k)}</td><td class=\"mono\">{esc(x)}</td></tr>" for k, x in st.items()) +
        f'<tr><td>digest</td><td class="mono">{esc(result.digest)}</td></tr></table>')
    p.append("</main></body></html>")
    return "\n".join(p)
