"""The drawing model: one page-table tree as nodes with rows (tables, folded pass-throughs, ghosts, stubs)."""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from .paths import HALF_STATES, LINK_STATES, ZERO_BASE
from .state import Focus


def hsize(n: int) -> str:
    for unit, shift in (("E", 60), ("P", 50), ("T", 40), ("G", 30), ("M", 20), ("K", 10)):
        if n >= 1 << shift and n % (1 << shift) == 0:
            return f"{n >> shift}{unit}"
    return str(n)


def pfn_text(pfn: int) -> str:
    if pfn == ZERO_BASE:
        return "huge zero page"
    if ZERO_BASE < pfn < ZERO_BASE + (1 << 19):
        return "zero page"
    return f"pfn {pfn:#x}"


@dataclass
class Row:
    text: str
    title: str
    cls: str = ""            # "table" | "leaf" | "share" | "more" | "empty"
    marks: set = field(default_factory=set)  # "focus", "path", "changed"
    child: "Node | None" = None
    idx: int = -1
    target: int | None = None               # a table entry's target address
    pfns: tuple[int, int] | None = None     # a leaf row's frames [lo, hi)


@dataclass
class Node:
    key: str
    tree: str
    level: int
    title: str
    subtitle: str = ""
    rows: list[Row] = field(default_factory=list)
    cls: set = field(default_factory=set)    # table folded ghost stub offtree loose deposit unlinked focus new
    tags: list[tuple[str, str]] = field(default_factory=list)
    children: list[tuple["Node", str]] = field(default_factory=list)  # not via rows: "deposit", "collapsed", "none"
    frag: tuple | None = None  # s390 page strip: (this half, [(label, cls), (label, cls)])
    addr: int | None = None
    tip: str = ""
    x: float = 0.0
    y: float = 0.0
    w: float = 0.0
    h: float = 0.0
    span: float = 0.0


@dataclass
class Tree:
    key: str           # "mm0", "vm0"
    label: str
    sublabel: str
    geo: list[tuple]   # levels (name, shift, entries, table_bytes, folded, leaf_ok)
    names: list[str]   # display name per level
    stage2: bool
    gmap: bool = False
    host: str | None = None  # the host tree a gmap / stage 2 belongs to
    roots: list[Node] = field(default_factory=list)
    loose: list[Node] = field(default_factory=list)  # tables in no tree: the bottom band
    top: Node | None = None
    nodes: dict[str, Node] = field(default_factory=dict)
    x: float = 0.0
    w: float = 0.0


def level_key(geo: list[tuple], level: int) -> tuple[int, int]:
    """Rows are shared across trees by entry size: (shift, depth of folding at that shift)."""
    depth = 0
    while level - depth - 1 >= 0 and geo[level - depth - 1][1] == geo[level][1]:
        depth += 1
    return (-geo[level][1], depth)


def _index(geo, level, addr):
    name, shift, entries, *_ = geo[level]
    return (addr >> shift) & (entries - 1)


def _child_level(geo, level):
    lv = level + 1
    while lv < len(geo) - 1 and geo[lv][4]:
        lv += 1
    return lv


def focus_path(tables: list[dict], geo: list[tuple], addr: int) -> tuple[dict[int, int], tuple[int, int] | None]:
    """The entries a walk to addr reads: {table addr: index}, and (table, index) where it stops at an empty
    entry (None when it ends at a leaf or a shared table)."""
    if not tables:
        return {}, None
    by_addr = {t["addr"]: t for t in tables}
    t = tables[0]
    path: dict[int, int] = {}
    while t is not None:
        idx = _index(geo, t["level"], addr)
        path[t["addr"]] = idx
        ent = next((e for e in t["entries"] if e[0] == idx), None)
        if ent is None:
            return path, (t["addr"], idx)
        if ent[1] != 1 or t["level"] == len(geo) - 1:
            return path, None
        t = by_addr.get(ent[2])
    return path, None


@dataclass
class Ctx:
    """Everything a state's drawing needs beyond the state itself."""
    arch: str
    focus: Focus
    other: dict | None          # the other state (before <-> after), for "changed" and ghost levels
    interesting: set[int]       # table addresses never collapsed away
    role: str                   # "before" | "after" | "state"
    levels: dict = field(default_factory=dict)  # table address -> level, from the trace's events


MAX_ROWS = 12
TREE_MAX_W = 1000  # a tree drawn wider than this collapses what the picture is not about


def _entry_rows(t: dict, geo: list[tuple], names: list[str], stage2: bool, marks: dict[int, set],
                other_entries: set | None, gmap: bool) -> list[Row]:
    """A table's non-empty entries as rows, runs of leaves mapping consecutive frames (or one zero page)
    summarized as one row."""
    level = t["level"]
    shift = geo[level][1]
    size = 1 << shift
    frames = max(1, size >> 12)
    last = level == len(geo) - 1
    iw = len(str(geo[level][2] - 1))
    rows: list[Row] = []
    run: list[tuple] = []

    def target_text(pfn, n=1, same=True):
        if ZERO_BASE <= pfn < ZERO_BASE + (1 << 19):
            return pfn_text(pfn)
        return f"{pfn:#x}" if n == 1 or same else f"{pfn:#x}..{pfn + n * frames - 1:#x}"

    def flush():
        if not run:
            return
        lo, hi = run[0], run[-1]
        n = len(run)
        ro = "" if lo[4] else " ro"
        same = n > 1 and run[1][2] == lo[2]
        tgt = target_text(lo[2], n, same)
        if n == 1:
            text = f"{lo[0]:>{iw}} {lo[3]:#x} {hsize(size)}{ro} \u2192 {tgt}"
            title = (f"entry {lo[0]}: va {lo[3]:#x}..{lo[3] + size - 1:#x}, a {hsize(size)} "
                     f"{'read-only' if ro else 'writable'} leaf mapping {pfn_text(lo[2])}")
        else:
            text = f"{lo[0]}-{hi[0]}: {n}\u00d7{hsize(size)}{ro} \u2192 {tgt}"
            title = (f"entries {lo[0]}-{hi[0]}: {n} {hsize(size)} leaves, va {lo[3]:#x}..{hi[3] + size - 1:#x} "
                     f"-> {tgt if not tgt.startswith('0x') else 'pfn ' + tgt}")
        m = set().union(*(marks.get(x[0], set()) for x in run))
        if other_entries is not None and any(x not in other_entries for x in run):
            m.add("changed")
        span = (lo[2], lo[2] + frames) if same else (lo[2], hi[2] + frames)
        rows.append(Row(text, title, "leaf", m, idx=lo[0], pfns=span))
        run.clear()

    for e in t["entries"]:
        idx, kind, target, va, writable = e
        if kind == 2:
            if run:
                prev = run[-1]
                step = target - prev[2]
                mode = None if len(run) == 1 else run[1][2] - run[0][2]
                if not (idx == prev[0] + 1 and writable == prev[4] and step in (0, frames) and
                        (mode is None or step == mode) and not marks.get(idx) and not marks.get(prev[0])):
                    flush()
            run.append(e)
            continue
        flush()
        m = set(marks.get(idx, set()))
        if other_entries is not None and e not in other_entries:
            m.add("changed")
        if gmap and last:
            rows.append(Row(f"{idx:>{iw}} {va:#x} \u21d2 host {target:#x}",
                            f"entry {idx}: guest {va:#x}..{va + size - 1:#x} shares the host page table at "
                            f"{target:#x}", "share", m, idx=idx, target=target))
        else:
            cl = _child_level(geo, level)
            rows.append(Row(f"{idx:>{iw}} {va:#x} \u2192 {target:#x}",
                            f"entry {idx}: va {va:#x}..{va + size - 1:#x} -> {names[cl]} table at {target:#x}",
                            "table", m, idx=idx, target=target))
    flush()
    return rows


def _trim_rows(rows: list[Row]) -> list[Row]:
    """At most MAX_ROWS rows: keep marked rows, table rows, and the first and last few; summarize the rest."""
    if len(rows) <= MAX_ROWS:
        return rows
    keep = [bool(r.marks & {"focus", "path", "changed"}) or r.cls in ("table", "share") for r in rows]
    for i in list(range(3)) + list(range(len(rows) - 2, len(rows))):
        keep[i] = True
    out: list[Row] = []
    gap = 0
    for r, k in zip(rows, keep):
        if k:
            if gap:
                out.append(Row(f"     \u2026 {gap} more entries", f"{gap} rows not shown", "more"))
                gap = 0
            out.append(r)
        else:
            gap += 1
    if gap:
        out.append(Row(f"     \u2026 {gap} more entries", f"{gap} rows not shown", "more"))
    return out


def _tree_stats(tables_by_addr, addr, geo):
    """(tables, leaves) in the subtree of the table at addr."""
    t = tables_by_addr.get(addr)
    if t is None:
        return 0, 0
    n, leaves = 1, 0
    for e in t["entries"]:
        if e[1] == 2:
            leaves += 1
        elif t["level"] < len(geo) - 1:
            a, b = _tree_stats(tables_by_addr, e[2], geo)
            n += a
            leaves += b
    return n, leaves


def block_of(state: dict, addr: int) -> tuple[dict | None, int]:
    """The pool block holding a table address, and the 2K half."""
    base = addr & ~0x3fff
    for b in state["blocks"]:
        if b["addr"] == base:
            return b, (addr >> 11) & 1
    return None, 0


def _frag_strip(state: dict, addr: int, mm: int) -> tuple | None:
    """s390: the 4K page under a PTE table: two 2K halves (fragments), or PTEs + PGSTEs."""
    b, half = block_of(state, addr)
    if b is None or b["pages"] != 1:
        return None
    if b["pgste"]:
        return (0, [("PTEs 2K", "mine"), ("PGSTEs 2K", "pgste")])
    if not b["frag"]:
        return (0, [("PTEs", "mine"), ("unused 2K", "free")])
    cells = []
    for h, (state_, _lvl, owner, _linked, _n) in enumerate(b["halves"]):
        if h == half:
            cells.append((f"half {h}: this table", "mine"))
        else:
            what = HALF_STATES[state_] if state_ < len(HALF_STATES) else str(state_)
            extra = f", mm {owner}" if state_ == 1 and owner != mm else ""
            cells.append((f"half {h}: {what}{extra}", what))
    return (half, cells)


class _TreeBuilder:
    """What build_tree's steps share: the tree being built, the tables by address, the path to the focus
    address, and (collapse) the tables that stay drawn."""

    def __init__(self, state: dict, ctx: Ctx, tree: Tree, tables: list[dict], mm: int | None, vm_id: int | None,
                 focus_addr: int | None, collapse: bool):
        self.state, self.ctx, self.tree, self.mm, self.focus_addr = state, ctx, tree, mm, focus_addr
        self.key, self.geo, self.names, self.stage2, self.gmap = tree.key, tree.geo, tree.names, tree.stage2, tree.gmap
        self.by_addr = {t["addr"]: t for t in tables}
        self.other_tables = {}
        if ctx.other is not None:
            o = ctx.other["mms"].get(mm) if not self.stage2 else ctx.other["vms"].get(vm_id)
            if o is not None:
                self.other_tables = {t["addr"]: t for t in o["tables"]}
        self.path, self.stop = focus_path(tables, self.geo, focus_addr) if focus_addr is not None else ({}, None)
        self.end_leaf = list(self.path.items())[-1] if self.path and self.stop is None else None
        self.big = collapse and bool(tables)
        self.keep: set[int] = set()
        if self.big:
            for a in self.by_addr:
                if a in ctx.interesting or a in self.path or ctx.focus.names_table(a):
                    t = self.by_addr[a]
                    while t is not None:  # the table and its ancestors stay
                        self.keep.add(t["addr"])
                        t = self.by_addr.get(t["parent"][0]) if t["parent"] else None
            self.keep.add(tables[0]["addr"])

    def table_node(self, t: dict) -> Node:
        ctx, geo, names, stage2, path, stop = self.ctx, self.geo, self.names, self.stage2, self.path, self.stop
        a, level = t["addr"], t["level"]
        marks: dict[int, set] = {}
        if a in path:
            marks.setdefault(path[a], set()).add("path")
        if ctx.focus.entry and ctx.focus.entry[0] == a:
            marks.setdefault(ctx.focus.entry[1], set()).add("focus")
        if self.end_leaf and self.end_leaf[0] == a and not stage2 and ctx.focus.kind in ("stage2-oversize",
                                                                                        "stage2-stale"):
            marks.setdefault(self.end_leaf[1], set()).add("focus")  # the host leaf the stage-2 leaf disagrees with
        other = self.other_tables.get(a)
        other_entries = set(other["entries"]) if other is not None else None
        rows = _entry_rows(t, geo, names, stage2, marks, other_entries if ctx.role == "after" else None, self.gmap)
        if self.gmap and level == len(geo) - 1:
            for r in rows:
                if r.cls == "share" and ctx.focus.gpa is not None and r.idx == path.get(a):
                    r.marks.add("focus")
        if stop and stop[0] == a:
            va = self.focus_addr
            want = ""
            if ctx.focus.size and stage2:
                want = f" ({hsize(ctx.focus.size)} wanted)"
            rows.insert(next((i for i, r in enumerate(rows) if r.idx > stop[1]), len(rows)),
                        Row(f"{stop[1]:>4} empty \u2190 {va:#x}{want}",
                            f"entry {stop[1]} is empty: the walk to {va:#x} stops here", "empty",
                            {"focus" if (ctx.focus.kind.startswith("stage2") and stage2) or
                             (ctx.focus.kind == "stage2-stale" and not stage2) else "path"}, idx=stop[1]))
        rows = _trim_rows(rows)
        b, half = block_of(self.state, a)
        sub = f"{'gpa' if stage2 else 'va'} {t['va']:#x} \u00b7 {geo[level][2]} \u00d7 {hsize(1 << geo[level][1])}"
        n = Node(f"T{a:#x}", self.key, level, f"{names[level]} {a:#x}", sub, rows, {"table"}, addr=a)
        if b is not None and not stage2 and b["halves"][half][3] != 1 and t["parent"] is not None:
            n.cls.add("unlinked")
        n.tip = f"{names[level]} table at {a:#x} ({len(t['entries'])} non-empty entries)"
        if ctx.focus.names_table(a):
            n.cls.add("focus")
        if ctx.role == "after" and ctx.other is not None and a not in self.other_tables:
            n.cls.add("new")
        if self.mm is not None and level == len(geo) - 1 and self.state["page_size"] == 4096 and ctx.arch == "s390":
            n.frag = _frag_strip(self.state, a, self.mm)
        return n

    def attach(self, parent: Node, row: Row, plevel: int, child: Node | None, child_level: int, entry_idx: int,
               va: int):
        """Link row -> child through a pass-through node per folded level in between (pgtable-nopXd)."""
        geo, names = self.geo, self.names
        cur_row = row
        for lv in range(plevel + 1, child_level):
            if not geo[lv][4]:
                continue
            f = Node(f"F{parent.key}:{entry_idx}:{lv}", self.key, lv, f"{names[lv]} (folded)",
                     f"= {names[plevel] if lv - 1 == plevel else names[lv - 1]} entry {entry_idx}",
                     [Row(f"   0 {va:#x} \u2192", f"{names[lv]} folded: PTRS_PER_{names[lv].upper()} = 1; "
                          f"{names[lv]}_offset() returns the parent entry itself", "fold")],
                     {"folded"})
            f.rows[0].marks = {"path"} & row.marks
            f.tip = f"{names[lv]} is folded (pgtable-no{names[lv]}.h): a pass-through with one entry"
            cur_row.child = f
            self.tree.nodes[f.key] = f
            cur_row = f.rows[0]
        cur_row.child = child

    def build(self, t: dict) -> Node:
        node = self.table_node(t)
        self.tree.nodes[node.key] = node
        level = t["level"]
        last = level == len(self.geo) - 1
        if last:
            return node
        collapsed: list[tuple[Row, dict]] = []
        for row in node.rows:
            if row.cls != "table":
                continue
            ent = next(e for e in t["entries"] if e[0] == row.idx)
            ct = self.by_addr.get(ent[2])
            if ct is None:
                continue
            if self.big and ct["addr"] not in self.keep:
                collapsed.append((row, ct))
                continue
            self.attach(node, row, level, self.build(ct), ct["level"], row.idx, ent[3])
        if collapsed:
            self.collapse(node, collapsed)
        return node

    def collapse(self, node: Node, collapsed: list[tuple[Row, dict]]) -> None:
        """One stub for the uninteresting subtrees under this table; their rows become runs "not drawn"."""
        nt = nl = 0
        for row, ct in collapsed:
            x, y = _tree_stats(self.by_addr, ct["addr"], self.geo)
            nt, nl = nt + x, nl + y
        k = len(collapsed)
        stub = Node(f"S{node.key}", self.key, collapsed[0][1]["level"], f"{nt} table{'s' * (nt != 1)} not drawn",
                    f"{nl} lea{'ves' if nl != 1 else 'f'} under {k} entr{'ies' if k != 1 else 'y'}",
                    [Row("   unchanged, not involved", "subtrees the picture is not about", "more")], {"stub"})
        stub.tip = "unchanged subtrees that the operation and the violation do not involve"
        self.tree.nodes[stub.key] = stub
        node.children.append((stub, "collapsed"))
        rows_out: list[Row] = []
        run: list[Row] = []

        def close_run():
            if not run:
                return
            r0 = run[0]
            if len(run) > 1:
                r0.text = f"{r0.idx}\u2026{run[-1].idx}: {len(run)} entries \u2192 not drawn"
            else:
                r0.text = re.sub(r"\u2192 .*", "\u2192 not drawn", r0.text)
            r0.cls = "collapsed"
            rows_out.append(r0)
            run.clear()

        hidden = {id(c[0]) for c in collapsed}
        for row in node.rows:
            if id(row) in hidden:
                run.append(row)
                continue
            close_run()
            rows_out.append(row)
        close_run()
        node.rows = rows_out


def _missing_stage2_level(tree: Tree, ctx: Ctx, root: Node | None, start_level: int, vm_id: int | None) -> None:
    """A stage-2 level the violation names that the geometry does not have (above the start level)."""
    if not (tree.stage2 and ctx.focus.s2_level is not None and ctx.focus.s2_level < start_level
            and ctx.focus.vm == vm_id):
        return
    lv = ctx.focus.s2_level
    g = Node(f"X{tree.key}:{lv}", tree.key, lv, f"{tree.names[lv]}: no such table",
             f"stage 2 starts at level {start_level}",
             [Row(f"   {hsize(ctx.focus.size or 0)} leaf for {ctx.focus.gpa or 0:#x}",
                  "the leaf the fault tried to install at a level this stage 2 does not have", "empty",
                  {"focus"})], {"ghost", "focus"})
    if root is not None:  # drawn above the real top table, which it would have to point at
        g.children.append((root, "none"))
        tree.roots.remove(root)
    tree.roots.insert(0, g)
    tree.nodes[g.key] = g


def build_tree(state: dict, ctx: Ctx, key: str, tables: list[dict], geo: list[tuple], names: list[str],
               stage2: bool, gmap: bool, mm: int | None, label: str, sublabel: str, root_freed: int | None,
               start_level: int, focus_addr: int | None, vm_id: int | None, collapse: bool = False) -> Tree:
    """One tree of tables. collapse: subtrees holding nothing the picture is about (no table the violation
    names, no actor, no change between the two states, no gmap link) become one stub per parent."""
    tree = Tree(key, label, sublabel, geo, names, stage2, gmap, f"mm{mm}" if stage2 else None)
    builder = _TreeBuilder(state, ctx, tree, tables, mm, vm_id, focus_addr, collapse)
    root = None
    if tables:
        root = builder.build(tables[0])
        tree.roots.append(root)
        if stage2 and not gmap and state["vms"][vm_id]["pgd_pages"] > 1:
            root.subtitle += f" \u00b7 {state['vms'][vm_id]['pgd_pages']} concatenated pages"
    elif root_freed is not None:
        g = Node(f"G{root_freed:#x}", key, start_level, f"{names[start_level]} {root_freed:#x}", "root freed",
                 [Row("   (no tables: freed by release)", "kvm_free_stage2_pgd ran from exit_mmap", "more")],
                 {"ghost", "focus"} if ctx.focus.names_table(root_freed) else {"ghost"}, addr=root_freed)
        tree.roots.append(g)
        tree.nodes[g.key] = g
        root = g
    tree.top = root
    _missing_stage2_level(tree, ctx, root, start_level, vm_id)
    return tree


def deposits_and_loose(state: dict, ctx: Ctx, tree: Tree, mm: int, geo: list[tuple], names: list[str],
                        drawn: set[int], collapse: bool = False) -> None:
    """Tables of this mm that hang in no tree: deposits (under their PMD table), unlinked or RCU-pending
    tables and halves, and tables the violation names that are already freed (ghosts)."""
    pending = {a for a, _ in state["rcu"]}
    grouped: list[tuple[Node, str]] = []
    for b in state["blocks"]:
        for h in (0, 1) if b["frag"] else (0,):
            st, level, owner, linked, nonempty = b["halves"][h]
            a = b["addr"] | (h << 11)
            if owner != mm or a in drawn or st == 0:
                continue
            if linked == 3:
                continue  # drawn with its PMD table below
            what = "RCU pending" if st == 2 or a in pending or (b["addr"] in pending and h == 0) else \
                LINK_STATES[linked]
            n = Node(f"T{a:#x}", tree.key, level, f"{names[level]} {a:#x}", what,
                     [Row(f"   {nonempty} non-empty entries", "not linked into the tree", "more")],
                     {"table", "offtree"}, addr=a)
            n.tip = f"{names[level]} table at {a:#x}: {what}, not reachable from the mm's top table"
            if ctx.focus.names_table(a):
                n.cls.add("focus")
            if level == len(geo) - 1 and ctx.arch == "s390":
                n.frag = _frag_strip(state, a, mm)
            n.cls.add("loose")
            drawn.add(a)
            if a in ctx.interesting or ctx.focus.names_table(a):
                tree.loose.append(n)
                tree.nodes[n.key] = n
            else:
                grouped.append((n, what))
    if len(grouped) == 1:
        tree.loose.append(grouped[0][0])
        tree.nodes[grouped[0][0].key] = grouped[0][0]
    elif grouped:
        rows = [Row(f"{g.title} \u00b7 {what}", g.tip, "more") for g, what in grouped]
        n = Node(f"L{tree.key}", tree.key, len(geo) - 1, f"{len(grouped)} tables off the tree",
                 "unlinked from this mm, not freed yet", _trim_rows(rows), {"offtree", "loose"})
        n.tip = "tables removed from the tree that wait for an RCU grace period (or a deposit / withdraw)"
        tree.loose.append(n)
        tree.nodes[n.key] = n
    for b in state["blocks"]:
        if not b["deposits"] or b["halves"][0][2] != mm:
            continue
        parent = tree.nodes.get(f"T{b['addr']:#x}")
        hidden = 0
        for d in b["deposits"]:
            if collapse and d not in ctx.interesting and not ctx.focus.names_table(d):
                hidden += 1
                continue
            db, dh = block_of(state, d)
            level = len(geo) - 1
            nonempty = db["halves"][dh][4] if db else 0
            n = Node(f"T{d:#x}", tree.key, level, f"{names[level]} {d:#x}", "deposited (pmd_huge_pte)",
                     [Row(f"   {nonempty} non-empty entries", "pgtable_trans_huge_deposit: kept for a later split",
                          "more")], {"table", "deposit"}, addr=d)
            if ctx.focus.names_table(d):
                n.cls.add("focus")
            if ctx.arch == "s390":
                n.frag = _frag_strip(state, d, mm)
            tree.nodes[n.key] = n
            drawn.add(d)
            if parent is not None:
                parent.children.append((n, "deposit"))
            else:
                n.cls.add("loose")
                tree.loose.append(n)
        if hidden and parent is not None:
            parent.tags.append((f"+ {hidden} deposited PTE table{'s' * (hidden > 1)} (pmd_huge_pte)", "actor"))


def ghost(tree: Tree, addr: int, level: int, why: str, focus: bool) -> Node:
    key = f"G{addr:#x}"
    if key in tree.nodes:
        return tree.nodes[key]
    g = Node(key, tree.key, level, f"{tree.names[level]} {addr:#x}", "freed",
             [Row(f"   {why}", why, "more")], {"ghost", "loose"} | ({"focus"} if focus else set()), addr=addr)
    tree.loose.append(g)
    tree.nodes[key] = g
    return g


def level_of_addr(states: list[dict | None], addr: int, default: int) -> int:
    for s in states:
        if s is None:
            continue
        for b in s["blocks"]:
            if b["addr"] == addr & ~0x3fff:
                return b["halves"][(addr >> 11) & 1][1]
    return default
