"""Which trees a picture shows: the address spaces and VMs involved, built into trees."""
from __future__ import annotations

from ...trace import Trace, op_to_list
from .state import Focus
from .svg import tree_width
from .tree import (
    TREE_MAX_W,
    Ctx,
    Tree,
    build_tree,
    deposits_and_loose,
    ghost,
    hsize,
    level_of_addr,
)


def involved(trace: Trace, state: dict, op_index: int | None, focus: Focus) -> tuple[list[int], list[int]]:
    """(mm ids, vm ids) the operation and the violation concern."""
    mms: list[int] = []
    vms: list[int] = []

    def add_mm(m):
        if m is not None and m in state["mms"] and m not in mms:
            mms.append(m)

    if focus.vm is not None and focus.vm in state["vms"]:
        vms.append(focus.vm)
    add_mm(focus.mm)
    if op_index is not None and op_index < len(trace.ops):
        name, *args = op_to_list(trace.ops[op_index])
        pid_ops = {"exec", "exit", "mmap", "munmap", "madvise", "fault", "split", "shm_mmap", "hugetlb_mmap"}
        if name in pid_ops and args[0] in state["procs"]:
            add_mm(state["procs"][args[0]]["mm"])
        elif name == "fork":
            for p in args:
                if p in state["procs"]:
                    add_mm(state["procs"][p]["mm"])
        elif name in ("walk_begin", "rmap_begin", "unmap_mapping_begin") and args[1] in state["procs"]:
            add_mm(state["procs"][args[1]]["mm"])
        elif name in ("vm_create",) and args[1] in state["procs"]:
            add_mm(state["procs"][args[1]]["mm"])
        if name in ("memslot", "guest_fault", "vm_destroy", "vm_create") and args[0] in state["vms"]:
            if args[0] not in vms:
                vms.append(args[0])
        if name == "guest_fault_begin" and args[1] in state["vms"] and args[1] not in vms:
            vms.append(args[1])
        if name in ("walk_step", "walk_end", "rmap_commit", "guest_fault_commit", "rcu_unlock", "rcu_lock"):
            for c in state["cpus"]:
                if c["cpu"] == args[0] and "mm" in c:
                    add_mm(c["mm"])
                    if "vm" in c and c["vm"] in state["vms"] and c["vm"] not in vms:
                        vms.append(c["vm"])
    for v in vms:
        add_mm(state["vms"][v]["mm"])
    if not mms:
        for m in sorted(state["mms"])[:2]:
            add_mm(m)
    for m in mms:  # the VMs of a drawn mm come along
        for v, vd in sorted(state["vms"].items()):
            if vd["mm"] == m and v not in vms:
                vms.append(v)
    return mms, vms


def stage2_names(arch: str, geo: list[tuple]) -> list[str]:
    if arch == "s390":
        return [f"gmap {g[0]}" for g in geo]
    if arch == "x86_64":
        return [f"EPT L{4 - i}" for i in range(len(geo))]
    return [f"S2 L{i}" for i in range(len(geo))]


def _host_tree(state: dict, ctx: Ctx, m: int, drawn: set[int]) -> tuple[Tree, set[int]]:
    """mm m's tree (collapsed when too wide), and the tables drawn so far with its own."""
    arch, geo, f = ctx.arch, state["geometry"], ctx.focus
    names = [g[0] for g in geo]
    md = state["mms"][m]
    pids = ", ".join(map(str, md["pids"])) or "none (exited)"
    levels = len(geo) - md["top"] - sum(1 for g in geo[md["top"]:] if g[4])
    flags = []
    if arch == "s390":
        flags.append(f"asce_limit {hsize(md['asce_limit'])}" if md["asce_limit"] < 1 << 63 else "asce_limit 16E")
        flags += [x for x in ("alloc_pgste", "has_pgste") if md[x]]
    if md["dead"]:
        flags.append("exit_mmap done")
    folded = [g[0] for g in geo if g[4]]
    sub = f"{levels} levels" + (f", {'/'.join(folded)} folded" if folded else "") + \
        (" \u00b7 " + ", ".join(flags) if flags else "") + f" \u00b7 VmPTE {hsize(md['pt_bytes']) or 0}"
    host_addr = f.hva if f.hva is not None and f.mm in (None, m) else None
    if host_addr is None and f.gpa is not None and f.vm in state["vms"] and state["vms"][f.vm]["mm"] == m:
        host_addr = _gpa_to_hva(state["vms"][f.vm], f.gpa)
    if host_addr is None:
        for c in state["cpus"]:
            if c.get("mm") == m and c["actor"] in ("walk", "rmap"):
                host_addr = c["addr"]

    def host(collapse):
        d = set(drawn)
        tr = build_tree(state, ctx, f"mm{m}", md["tables"], geo, names, False, False, m,
                        f"mm {m} \u00b7 pid {pids}", sub, None, md["top"], host_addr, None, collapse)
        d |= {n.addr for n in tr.nodes.values() if n.addr is not None} | {x["addr"] for x in md["tables"]}
        deposits_and_loose(state, ctx, tr, m, geo, names, d, collapse)
        return tr, d

    t, d = host(False)
    if tree_width(t) > TREE_MAX_W:
        t, d = host(True)
    return t, d


def _vm_tree(state: dict, ctx: Ctx, m: int, v: int) -> Tree:
    """VM v's gmap (s390), stage 2 (arm64) or TDP (x86_64) tree, collapsed when too wide."""
    arch, f = ctx.arch, ctx.focus
    vd = state["vms"][v]
    vgeo = vd["geometry"]
    vnames = stage2_names(arch, vgeo)
    if arch == "s390":
        sub = (f"gmap, {len(vgeo) - vd['top']} levels to the segment tables \u00b7 "
               f"{len(vd['links'])} linked segments")
    else:
        sub = (f"{'stage 2' if arch == 'arm64' else 'TDP'}: {len(vgeo) - vd['start_level']} levels from L"
               f"{vd['start_level']}" + (f", {vd['pgd_pages']} pgd pages" if vd["pgd_pages"] > 1 else "") +
               f" \u00b7 mmu_invalidate_seq {vd['invalidate_seq']}")
    if vd["root_freed"]:
        sub += " \u00b7 root freed"
    freed_root = None
    if vd["root"] is None:
        cand = [c.get("s2_root") for c in state["cpus"] if c.get("vm") == v and c.get("s2_root")]
        freed_root = next(iter(f.tables), None) if f.vm == v and f.tables else (cand[0] if cand else 0)
    gaddr = f.gpa if f.vm == v else None
    if gaddr is None:
        for c in state["cpus"]:
            if c.get("vm") == v:
                gaddr = c["gpa"]
    label = (f"vm {v} \u00b7 {'gmap' if arch == 's390' else 'stage 2' if arch == 'arm64' else 'TDP'}"
             f" of mm {m}")
    vt = build_tree(state, ctx, f"vm{v}", vd["tables"], vgeo, vnames, True, arch == "s390", m,
                    label, sub, freed_root, vd["start_level"], gaddr, v)
    if tree_width(vt) > TREE_MAX_W:
        vt = build_tree(state, ctx, f"vm{v}", vd["tables"], vgeo, vnames, True, arch == "s390", m,
                        label, sub, freed_root, vd["start_level"], gaddr, v, True)
    return vt


def _add_ghosts(trees: list[Tree], state: dict, ctx: Ctx) -> None:
    """Ghosts: tables the violation names that no longer exist here."""
    for a in sorted(ctx.focus.tables):
        if any(n.addr == a or (n.addr is not None and n.addr & ~0x7ff == a) for t in trees for n in t.nodes.values()):
            continue
        if not trees:
            break
        in_vm = ctx.other is not None and any(
            any(t["addr"] == a for t in vd["tables"]) for vd in ctx.other["vms"].values())
        tree = next((t for t in trees if t.stage2), trees[0]) if in_vm else trees[0]
        held = [c["level"] for c in state["cpus"] if c.get("table") == a and "level" in c]
        level = held[0] if held else ctx.levels.get(a, level_of_addr([ctx.other, state], a, len(tree.geo) - 1))
        level = min(level, len(tree.geo) - 1)
        ghost(tree, a, level, "freed: the table the violation names", True)


def _add_actors(trees: list[Tree], state: dict, ctx: Ctx) -> None:
    """Actors: what each in-flight kernel path holds."""
    geo, f = state["geometry"], ctx.focus
    for c in state["cpus"]:
        if c["actor"] == "none":
            continue
        if c["actor"] == "inval":  # a host change stopped between invalidate_range_start and _end
            for vm, began, _ in c["pending_ends"] if c["held"] else []:
                tree = next((t for t in trees if t.key == f"vm{vm}"), None)
                if tree is not None and tree.top is not None:
                    tree.top.tags.append((f"\u25c0 cpu {c['cpu']} holds invalidate_range_end"
                                          + (f" (mmu_invalidate_in_progress +{began})" if began else ""), "actor"))
            continue
        if c["actor"] == "frag":  # s390 page_table_free stopped between its atomic_xor_bits and its list work (Z4)
            tree = next((t for t in trees if t.key == f"mm{c['mm']}"), None)
            if c["held"] and tree is not None and tree.top is not None:
                tree.top.tags.append((f"\u25c0 cpu {c['cpu']} holds mm->context.lock: page_table_free of "
                                      f"{c['table']:#x} before its list work", "actor"))
            continue
        if c["actor"] == "collapse":  # collapse_huge_page stopped between isolate and copy (Z5)
            tree = next((t for t in trees if t.key == f"mm{c['mm']}"), None)
            if c["held"] and tree is not None and tree.top is not None:
                tree.top.tags.append((f"\u25c0 cpu {c['cpu']} collapse of {c['addr']:#x} isolated, before its copy",
                                      "actor"))
            continue
        if c["actor"] == "unshare":  # a munmap held after its hugetlb unshare, before free_pgtables (issue 20)
            tree = next((t for t in trees if t.key == f"mm{c['mm']}"), None)
            if c["held"] and tree is not None and tree.top is not None:
                tree.top.tags.append((f"\u25c0 cpu {c['cpu']} munmap of [{c['addr']:#x}, {c['end']:#x}) unshared, "
                                      "before free_pgtables and its flush", "actor"))
            continue
        label = {"walk": f"cpu {c['cpu']} GUP-fast walker", "rmap": f"cpu {c['cpu']} rmap walker",
                 "guest_fault": f"cpu {c['cpu']} guest fault"}[c["actor"]]
        if c["actor"] in ("walk", "rmap"):
            tree = next((t for t in trees if t.key == f"mm{c['mm']}"), None)
            if tree is None:
                continue
            node = tree.nodes.get(f"T{c['table']:#x}")
            if node is None or not c["table_alive"]:
                lvl = c.get("level", len(geo) - 1)
                node = ghost(tree, c["table"], min(lvl, len(geo) - 1), "freed while the walker holds it",
                             f.names_table(c["table"]))
            node.tags.append((f"\u25c0 {label} holds this" + ("" if c["table_alive"] else " (stale)"),
                              "actor" if c["table_alive"] else "actor bad"))
        else:
            tree = next((t for t in trees if t.key == f"vm{c['vm']}"), None)
            if tree is None or tree.top is None:
                continue
            tree.top.tags.append((f"\u25c0 {label}: gpa {c['gpa']:#x}, pfn {c['pfn']:#x} in flight",
                                  "actor" if c["s2_root_alive"] else "actor bad"))


def _mark_reuse(trees: list[Tree]) -> None:
    """A freed table's memory in use again: say so where the same address is drawn."""
    ghosts = {n.addr: n for t in trees for n in t.nodes.values() if "ghost" in n.cls and n.addr is not None}
    for t in trees:
        for n in t.nodes.values():
            g = ghosts.get(n.addr)
            if g is not None and g is not n and "ghost" not in n.cls:
                n.tags.append((f"\u26a0 reuses the memory of the freed {g.title.rsplit(' ', 1)[0]} table", "bad"))


def build_forest(trace: Trace, state: dict, ctx: Ctx, mms: list[int], vms: list[int]) -> list[Tree]:
    trees: list[Tree] = []
    drawn: set[int] = set()
    for m in mms:
        t, drawn = _host_tree(state, ctx, m, drawn)
        for v in vms:
            if state["vms"][v]["mm"] != m:
                continue
            trees.append(_vm_tree(state, ctx, m, v))
        trees.append(t)  # the guest's tables to the left of the host's: gpa -> hva -> pfn reads left to right
    _add_ghosts(trees, state, ctx)
    _add_actors(trees, state, ctx)
    _mark_reuse(trees)
    return trees


def _gpa_to_hva(vd: dict, gpa: int) -> int | None:
    for _, sg, sh, ln in vd["slots"]:
        if sg <= gpa < sg + ln:
            return sh + gpa - sg
    return None
