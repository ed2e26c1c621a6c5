"""Layout of the trees and their SVG."""
from __future__ import annotations

import html

from .tree import Node, Tree, hsize, level_key

ROW_H = 15
HEAD_H = 32
GAP_X = 12
GAP_Y = 40
TREE_GAP = 26
LEFT = 8
BAND_PAD = 18     # room above a band's nodes for its label
CHAR_W = 6.35     # 10.5px monospace
MIN_W, MAX_W = 150, 330
LOOSE = (1 << 30, 0)  # the band of tables that hang in no tree


def _node_w(n: Node) -> float:
    w = max([len(n.title) * 7.0, len(n.subtitle) * 5.3] + [len(r.text) * CHAR_W for r in n.rows] +
            [len(t) * 5.9 for t, _ in n.tags] + ([236] if n.frag else []))
    return max(MIN_W, min(MAX_W, w + 14))


def _node_h(n: Node) -> float:
    h = HEAD_H + ROW_H * max(1, len(n.rows)) + 5
    if n.frag:
        h += 19
    if n.tags:
        h += 13 * len(n.tags)
    return h


def _kids(n: Node) -> list[Node]:
    out: list[Node] = []
    for c in [r.child for r in n.rows if r.child is not None] + [c for c, _ in n.children]:
        if all(c is not s for s in out):
            out.append(c)
    return out


def _measure(n: Node) -> float:
    n.w, n.h = _node_w(n), _node_h(n)
    ks = _kids(n)
    n.span = max(n.w, sum(_measure(k) for k in ks) + GAP_X * (len(ks) - 1)) if ks else n.w
    return n.span


def _place(n: Node, x: float) -> None:
    ks = _kids(n)
    if not ks:
        n.x = x + (n.span - n.w) / 2
        return
    inner = sum(k.span for k in ks) + GAP_X * (len(ks) - 1)
    cx = x + (n.span - inner) / 2
    for k in ks:
        _place(k, cx)
        cx += k.span + GAP_X
    centre = (ks[0].x + ks[0].w / 2 + ks[-1].x + ks[-1].w / 2) / 2
    n.x = min(max(centre - n.w / 2, x), x + n.span - n.w)


def layout_tree(tree: Tree, x0: float) -> float:
    """Top-down: a subtree is as wide as its widest level; a parent sits centred over its children.
    Tables in no tree go into the bottom band, left to right."""
    x = x0
    for r in tree.roots:
        _place(r, x) if _measure(r) else None
        x += r.span + GAP_X
    lx = x0
    for n in tree.loose:
        n.w, n.h = _node_w(n), _node_h(n)
        n.x = lx
        lx += n.w + GAP_X
    right = max(x, lx) - GAP_X
    tree.x = x0
    tree.w = max(right - x0, MIN_W)
    return x0 + tree.w


def tree_width(tree: Tree) -> float:
    return layout_tree(tree, 0)


def esc(s) -> str:
    return html.escape(str(s), quote=True)


CSS_SVG = """
.t-box{fill:#fff;stroke:#4a5a6a;stroke-width:1}
.t-head{fill:#e8eef5}
.folded .t-box{fill:#f6f6f6;stroke:#999;stroke-dasharray:5 3}
.folded .t-head{fill:#ececec}
.ghost .t-box{fill:#fff5f5;stroke:#c62828;stroke-dasharray:6 3;stroke-width:1.5}
.ghost .t-head{fill:#fde0e0}
.stub .t-box{fill:#fafafa;stroke:#aaa;stroke-dasharray:2 3}
.stub .t-head{fill:#f2f2f2}
.offtree .t-box,.unlinked .t-box{stroke-dasharray:4 3;stroke:#8a8a8a}
.offtree .t-head,.unlinked .t-head{fill:#f0f0f0}
.deposit .t-box{stroke-dasharray:4 3;stroke:#6d5a2e}
.deposit .t-head{fill:#f6efdc}
.new .t-box{stroke:#2e7d32;stroke-width:2}
.focus .t-box{stroke:#d32f2f;stroke-width:3;stroke-dasharray:none}
.focus .t-head{fill:#fbd5d5}
.t-title{font:bold 12px sans-serif;fill:#1b2733}
.t-sub{font:10px sans-serif;fill:#55626f}
.r-text{font:10.5px "DejaVu Sans Mono",monospace;fill:#1b2733;white-space:pre}
.r-bg{fill:transparent}
.r-leaf .r-bg{fill:#eaf6ea}
.r-table .r-bg{fill:#eef3fb}
.r-share .r-bg{fill:#f1e8f8}
.r-fold .r-bg{fill:#f0f0f0}
.r-collapsed .r-bg{fill:#f6f6f6}
.r-more .r-text{fill:#777;font-style:italic}
.r-empty .r-bg{fill:#fff}
.r-changed .r-bg{fill:#fff3c4}
.r-path .r-bg{stroke:#e69500;stroke-width:1.5}
.r-focus .r-bg{fill:#ffd6d6;stroke:#d32f2f;stroke-width:2}
.r-focus .r-text{fill:#9a0000;font-weight:bold}
.tag{font:bold 10px sans-serif;fill:#1565c0}
.tag.bad{fill:#c62828}
.edge{fill:none;stroke:#5c7080;stroke-width:1.2}
.edge.fold{stroke:#999}
.edge.deposit{stroke:#8d6e2a;stroke-dasharray:4 3}
.edge.path{stroke:#e69500;stroke-width:2.2}
.share{fill:none;stroke:#7b3fa0;stroke-width:2;stroke-dasharray:7 4}
.share.focus{stroke:#d32f2f;stroke-width:3}
.pfnlink{fill:none;stroke:#2e7d32;stroke-width:1.2;stroke-dasharray:2 3}
.frag-cell{stroke:#777;stroke-width:.8}
.frag-mine{fill:#cfe3f7}.frag-free{fill:#fff}.frag-pending{fill:#ffe0a3}.frag-allocated{fill:#d9d9d9}
.frag-pgste{fill:#d8ecd0}
.frag-text{font:9px sans-serif;fill:#333}
.band{fill:#f5f7fa}
.band.loose{fill:#fbf8f3}
.band-label{font:10px sans-serif;fill:#7a8794}
.tree-label{font:bold 13px sans-serif;fill:#1b2733}
.tree-sub{font:10.5px sans-serif;fill:#55626f}
.edge-label{font:9.5px sans-serif;fill:#6d5a2e}
"""


def _fit(text: str, width: float, char_w: float = CHAR_W) -> str:
    n = int(width / char_w)
    return text if len(text) <= n else text[: max(n - 1, 1)] + "\u2026"


def wrap_text(text: str, width: float, char_w: float, lines: int = 3) -> list[str]:
    """Words into lines of at most width pixels (the last line cut with an ellipsis)."""
    n = max(int(width / char_w), 12)
    out: list[str] = []
    cur = ""
    for word in text.split(" "):
        if cur and len(cur) + 1 + len(word) > n:
            out.append(cur)
            cur = word
        else:
            cur = f"{cur} {word}" if cur else word
    if cur:
        out.append(cur)
    if len(out) > lines:
        out = out[: lines - 1] + [_fit(" ".join(out[lines - 1:]), width, char_w)]
    return out


def _row_y(n: Node, i: int) -> float:
    return n.y + HEAD_H + i * ROW_H + ROW_H / 2


def measure_forest(trees: list[Tree]) -> dict:
    """What a state's drawing needs of space: each tree's width, the height of each band, the total width,
    the lines of each tree's label. Two states drawn with the merge of both line up band by band."""
    x = LEFT
    widths: dict[str, float] = {}
    for t in trees:
        end = layout_tree(t, x)
        widths[t.key] = end - x
        x = end + TREE_GAP
    bands: dict[tuple, float] = {}
    for t in trees:
        for n in t.nodes.values():
            k = LOOSE if "loose" in n.cls else level_key(t.geo, n.level)
            bands[k] = max(bands.get(k, 0), n.h)
    lines = max([len(wrap_text(t.sublabel, max(t.w, 180), 5.6)) for t in trees] + [1])
    return {"widths": widths, "bands": bands, "width": max(x - TREE_GAP + LEFT, 420), "lines": lines}


def merge_measures(a: dict, b: dict) -> dict:
    widths = {k: max(a["widths"].get(k, 0), b["widths"].get(k, 0)) for k in {**a["widths"], **b["widths"]}}
    bands = {k: max(a["bands"].get(k, 0), b["bands"].get(k, 0)) for k in {**a["bands"], **b["bands"]}}
    return {"widths": widths, "bands": bands, "width": max(a["width"], b["width"]),
            "lines": max(a["lines"], b["lines"])}


def _edges(n: Node, r: str) -> list[str]:
    """The edges out of node n: to each child its row points at (straight down when it is the only one right
    below), and to the children it hangs otherwise (a collapsed stub, a labelled link)."""
    edges = []
    linked = [row for row in n.rows if row.child is not None]
    for i, row in enumerate(n.rows):
        if row.child is None:
            continue
        c = row.child
        ry = _row_y(n, i)
        ex, ey = c.x + c.w / 2, c.y
        if len(linked) == 1 and n.x + 10 < ex < n.x + n.w - 10:  # one child right below: drop straight
            path = "path" in row.marks
            cls = "edge" + (" fold" if "folded" in c.cls else "") + (" path" if path else "")
            edges.append(f'<path class="{cls}" d="M{ex:.1f},{n.y + n.h:.1f} L{ex:.1f},{ey - 2:.1f}" '
                         f'marker-end="url(#{"ahp" if path else "ahe"}-{r})"/>')
            continue
        right = ex >= n.x + n.w / 2
        sx = n.x + n.w if right else n.x
        d = 8 if right else -8
        path = "path" in row.marks
        cls = "edge" + (" fold" if "folded" in c.cls else "") + (" path" if path else "")
        edges.append(f'<path class="{cls}" d="M{sx - d:.1f},{ry:.1f} L{sx + d:.1f},{ry:.1f} '
                     f'C{sx + 2 * d:.1f},{ry:.1f} {ex:.1f},{ry + 10:.1f} {ex:.1f},{ey - 2:.1f}" '
                     f'marker-end="url(#{"ahp" if path else "ahe"}-{r})"/>')
    for c, style in n.children:
        if style == "none":
            continue
        if style == "collapsed":
            sx, sy = n.x + n.w / 2, n.y + n.h
            edges.append(f'<path class="edge fold" d="M{sx:.1f},{sy:.1f} C{sx:.1f},{sy + 18:.1f} '
                         f'{c.x + c.w / 2:.1f},{c.y - 18:.1f} {c.x + c.w / 2:.1f},{c.y - 1:.1f}" '
                         f'stroke-dasharray="3 3"/>')
            continue
        sx, sy = n.x + n.w / 2, n.y + n.h
        ex, ey = c.x + c.w / 2, c.y
        edges.append(f'<path class="edge {style}" d="M{sx:.1f},{sy:.1f} C{sx:.1f},{sy + 18:.1f} '
                     f'{ex:.1f},{ey - 18:.1f} {ex:.1f},{ey - 1:.1f}"/>')
        edges.append(f'<text class="edge-label" x="{(sx + ex) / 2 + 5:.0f}" y="{(sy + ey) / 2 + 3:.0f}">'
                     f'{esc(style)}</text>')
    return edges


def render_svg(trees: list[Tree], role: str, caption: str, shared: dict | None = None) -> str:
    """One state's trees side by side (a VM's gmap / stage 2, then its host mm), in bands shared by entry
    size (the bands of the levels any tree has), with the tables that hang in no tree in a bottom band.
    shared (merge_measures of both states): the same band heights, tree positions and width for both."""
    shared = shared or measure_forest(trees)
    x = LEFT
    for t in trees:
        end = layout_tree(t, x)
        x = max(end, x + shared["widths"].get(t.key, 0)) + TREE_GAP
    width = max(x - TREE_GAP + LEFT, shared["width"])
    subs = {t.key: wrap_text(t.sublabel, max(t.w, 180), 5.6) for t in trees}
    top = 24 + 13 * max([len(v) for v in subs.values()] + [shared["lines"]])
    keys = dict(shared["bands"])
    for t in trees:
        for n in t.nodes.values():
            k = LOOSE if "loose" in n.cls else level_key(t.geo, n.level)
            keys[k] = max(keys.get(k, 0), n.h)
    row_y: dict[tuple, float] = {}
    y = top
    for k in sorted(keys):
        row_y[k] = y + BAND_PAD
        y += BAND_PAD + keys[k] + GAP_Y
    height = y - GAP_Y + 14
    for t in trees:
        for n in t.nodes.values():
            n.y = row_y[LOOSE if "loose" in n.cls else level_key(t.geo, n.level)]
    r = esc(role)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" class="state" data-state="{r}" '
           f'width="{width:.0f}" height="{height:.0f}" viewBox="0 0 {width:.0f} {height:.0f}">',
           f"<title>{esc(caption)}</title>", f"<style>{CSS_SVG}</style>", "<defs>"]
    for mid, colour, size in (("ah", "#7b3fa0", 7), ("ahr", "#d32f2f", 7), ("ahe", "#5c7080", 6),
                              ("ahp", "#e69500", 6)):
        out.append(f'<marker id="{mid}-{r}" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="{size}" '
                   f'markerHeight="{size}" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" '
                   f'fill="{colour}"/></marker>')
    out.append("</defs>")
    level_names: dict[tuple, list[str]] = {}
    for t in trees:
        for n in t.nodes.values():
            if "loose" not in n.cls:
                nm = t.names[n.level]
                lst = level_names.setdefault(level_key(t.geo, n.level), [])
                if nm not in lst:
                    lst.append(nm)
    for k in sorted(keys):
        top = row_y[k] - BAND_PAD
        loose = k == LOOSE
        out.append(f'<rect class="band{" loose" if loose else ""}" x="2" y="{top:.0f}" width="{width - 4:.0f}" '
                   f'height="{keys[k] + BAND_PAD + 6:.0f}" rx="4"/>')
        if loose:
            label = "not in the tree: unlinked, waiting for RCU, or freed"
        else:
            shift = -k[0]
            label = " / ".join(level_names.get(k, [])) + f" \u00b7 {hsize(1 << shift)} per entry"
        out.append(f'<text class="band-label" x="6" y="{top + 11:.0f}">{esc(label)}</text>')
    for t in trees:
        out.append(f'<g class="tree" data-tree="{esc(t.key)}">')
        out.append(f'<text class="tree-label" x="{t.x:.0f}" y="18">{esc(t.label)}</text>')
        for j, line in enumerate(subs[t.key]):
            out.append(f'<text class="tree-sub" x="{t.x:.0f}" y="{32 + 13 * j}">{esc(line)}</text>')
        edges, boxes = [], []
        for n in t.nodes.values():
            edges += _edges(n, r)
            boxes.append(_node_svg(n))
        out += edges + boxes
        out.append("</g>")
    out += _links(trees, role)
    out.append("</svg>")
    return "\n".join(out)


def _links(trees: list[Tree], role: str) -> list[str]:
    """gmap segment entries -> the host PTE tables they share (s390); stage-2 leaves -> the host leaves
    mapping the same frames (arm64, x86_64)."""
    out: list[str] = []
    r = esc(role)
    for t in trees:
        host = next((h for h in trees if h.key == t.host), None) if t.stage2 else None
        if host is None:
            continue
        hnodes = {n.addr: n for n in host.nodes.values() if n.addr is not None}
        if t.gmap:
            for n in t.nodes.values():
                for i, row in enumerate(n.rows):
                    if row.cls != "share" or row.target is None:
                        continue
                    dest = hnodes.get(row.target) or hnodes.get(row.target & ~0x7ff)
                    if dest is None:
                        continue
                    bad = ("focus" in row.marks or "focus" in dest.cls) and role != "before"
                    sx, sy = n.x + n.w, _row_y(n, i)
                    ex, ey = dest.x, dest.y + HEAD_H / 2
                    out.append(f'<path class="share{" focus" if bad else ""}" data-from="{n.addr:#x}:{row.idx}" '
                               f'data-to="{dest.addr:#x}" d="M{sx:.1f},{sy:.1f} C{sx + 60:.1f},{sy:.1f} '
                               f'{ex - 70:.1f},{ey:.1f} {ex - 2:.1f},{ey:.1f}" '
                               f'marker-end="url(#{"ahr" if bad else "ah"}-{r})">'
                               f'<title>{esc(row.title)}</title></path>')
            continue
        leaves = [(n, i, row) for n in host.nodes.values() for i, row in enumerate(n.rows)
                  if row.cls == "leaf" and row.pfns]
        links = []
        for n in t.nodes.values():
            for i, row in enumerate(n.rows):
                if row.cls != "leaf" or not row.pfns:
                    continue
                for hn, hi, hrow in leaves:
                    if hrow.pfns[0] < row.pfns[1] and row.pfns[0] < hrow.pfns[1]:
                        links.append((n, i, hn, hi))
        for n, i, hn, hi in links[:24]:
            sx, sy = n.x + n.w, _row_y(n, i)
            ex, ey = hn.x, _row_y(hn, hi)
            out.append(f'<path class="pfnlink" d="M{sx:.1f},{sy:.1f} C{sx + 60:.1f},{sy:.1f} {ex - 60:.1f},{ey:.1f} '
                       f'{ex:.1f},{ey:.1f}"><title>the same frames</title></path>')
    return out


def _node_svg(n: Node) -> str:
    cls = " ".join(sorted(n.cls))
    attrs = f'class="node {cls}" data-key="{esc(n.key)}"'
    if n.addr is not None:
        attrs += f' data-addr="{n.addr:#x}"'
    parts = [f'<g {attrs}>', f"<title>{esc(n.tip or n.title)}</title>",
             f'<rect class="t-box" x="{n.x:.1f}" y="{n.y:.1f}" width="{n.w:.1f}" height="{n.h:.1f}" rx="3"/>',
             f'<rect class="t-head" x="{n.x + 1:.1f}" y="{n.y + 1:.1f}" width="{n.w - 2:.1f}" '
             f'height="{HEAD_H - 4:.1f}"/>',
             f'<text class="t-title" x="{n.x + 6:.1f}" y="{n.y + 14:.1f}">{esc(_fit(n.title, n.w - 10, 7.0))}</text>',
             f'<text class="t-sub" x="{n.x + 6:.1f}" y="{n.y + 26:.1f}">{esc(_fit(n.subtitle, n.w - 10, 5.3))}</text>']
    y = n.y + HEAD_H
    for r in n.rows:
        rc = " ".join(["row", f"r-{r.cls}"] + [f"r-{m}" for m in sorted(r.marks)])
        parts.append(f'<g class="{rc}" data-index="{r.idx}"><title>{esc(r.title)}</title>'
                     f'<rect class="r-bg" x="{n.x + 3:.1f}" y="{y:.1f}" width="{n.w - 6:.1f}" '
                     f'height="{ROW_H - 1:.1f}"/>'
                     f'<text class="r-text" x="{n.x + 5:.1f}" y="{y + 11:.1f}" xml:space="preserve">'
                     f'{esc(_fit(r.text, n.w - 10))}</text></g>')
        y += ROW_H
    if not n.rows:
        y += ROW_H
    if n.frag:
        y += 4
        half, cells = n.frag
        cw = (n.w - 10) / 2
        for i, (label, c) in enumerate(cells):
            parts.append(f'<rect class="frag-cell frag-{esc(c)}" x="{n.x + 5 + i * cw:.1f}" y="{y:.1f}" '
                         f'width="{cw:.1f}" height="14"/><text class="frag-text" x="{n.x + 8 + i * cw:.1f}" '
                         f'y="{y + 10:.1f}">{esc(_fit(label, cw - 6, 4.9))}</text>')
        y += 16
    for text, c in n.tags:
        y += 12
        parts.append(f'<text class="tag{" bad" if "bad" in c else ""}" x="{n.x + 6:.1f}" y="{y:.1f}">'
                     f'{esc(_fit(text, n.w - 10, 5.9))}</text>')
    parts.append("</g>")
    return "".join(parts)
