"""ptfuzz show: a finding as a picture. One self-contained HTML file (inline CSS and SVG, no scripts, no
network): the trace with each operation's result, events and the kernel functions of the paths taken, and,
for the violating operation, the page-table trees involved before and after it, drawn from the engine's own
state (`_engine.dump`): the host mm's levels (folded levels as the kernel folds them), the gmap or stage 2 /
TDP beside it, s390 fragment pages, deposits, tables waiting for RCU, and the offending table or entry in red.
"""
from __future__ import annotations

import html
import re
from dataclasses import dataclass, field

import numpy as np

from .. import _engine
from ..engine import ReplayResult, config_tuple, replay
from ..names import ARCH_NAMES, KNOB_BY_NAME, errno_name, knob_vector
from ..names import EVENT_NAMES
from .render import NO_OWNER, describe_event
from ..trace import Trace, op_text, op_to_list

# ---------------------------------------------------------------------------------------------------------
# The kernel functions of the paths an operation takes (v6.6 names; the model's C functions carry the same
# names, docs/model-notes.md has the table). One place: the op list, the violation panel and the tests use it.

KERNEL_PATHS: dict[str, dict[str, list[str]]] = {
    # operation (or "madvise/ADVICE"): arch ("*" for all) -> the entry path
    "sysctl_allocate_pgste": {"*": ["proc_dointvec (vm.allocate_pgste)"]},
    "exec": {"*": ["do_execveat_common", "bprm_mm_init", "setup_arg_pages", "load_elf_binary", "exec_mmap"],
             "s390": ["do_execveat_common", "bprm_mm_init", "init_new_context", "setup_arg_pages",
                      "load_elf_binary", "arch_elf_pt_proc (PT_S390_PGSTE)", "exec_mmap"]},
    "fork": {"*": ["copy_process", "dup_mmap", "copy_page_range", "copy_pte_range / copy_huge_pmd"]},
    "exit": {"*": ["do_exit", "exit_mm", "mmput", "exit_mmap", "mmu_notifier_release", "unmap_vmas",
                   "free_pgtables"]},
    "mmap": {"*": ["do_mmap", "mmap_region", "vma_merge"],
             "s390": ["do_mmap", "arch_get_unmapped_area (crst_table_upgrade)", "mmap_region", "vma_merge"]},
    "shm_mmap": {"*": ["do_mmap", "mmap_region", "shmem_mmap"]},
    "munmap": {"*": ["do_vmi_munmap", "unmap_region", "unmap_vmas", "free_pgtables", "pte_free_tlb"]},
    "madvise/0": {"*": ["do_madvise", "madvise_walk_vmas", "madvise_dontneed_single_vma",
                        "zap_page_range_single"]},
    "madvise/1": {"*": ["do_madvise", "madvise_walk_vmas", "hugepage_madvise", "madvise_update_vma"]},
    "madvise/2": {"*": ["do_madvise", "madvise_walk_vmas", "hugepage_madvise", "madvise_update_vma"]},
    "madvise/3": {"*": ["do_madvise", "madvise_collapse", "hpage_collapse_scan_pmd", "collapse_huge_page",
                        "pgtable_trans_huge_deposit"]},
    "fault": {"*": ["handle_mm_fault", "__handle_mm_fault"]},
    "split": {"*": ["split_huge_pmd", "__split_huge_pmd", "pgtable_trans_huge_withdraw"]},
    "rcu_lock": {"*": ["rcu_read_lock"]},
    "rcu_unlock": {"*": ["rcu_read_unlock"]},
    "rcu_gp": {"*": ["synchronize_rcu", "rcu_do_batch"]},
    "walk_begin": {"*": ["get_user_pages_fast", "lockless_pages_from_mm", "local_irq_save"],
                   "s390": ["get_user_pages_fast", "gup_fast_permitted", "lockless_pages_from_mm",
                            "local_irq_save"]},
    "walk_step": {"*": ["gup_pgd_range \u2026 gup_pte_range (one entry per step)"]},
    "walk_end": {"*": ["local_irq_restore"]},
    "rmap_begin": {"*": ["try_to_unmap", "rmap_walk_anon", "page_vma_mapped_walk"]},
    "rmap_commit": {"*": ["page_vma_mapped_walk (pmd recheck under the PTL)", "try_to_unmap_one",
                          "ptep_clear_flush"]},
    "vm_create": {"s390": ["kvm_arch_init_vm", "s390_enable_sie", "thp_split_mm", "gmap_create"],
                  "arm64": ["kvm_arch_init_vm", "kvm_init_stage2_mmu", "kvm_pgtable_stage2_init"],
                  "x86_64": ["kvm_arch_init_vm", "kvm_mmu_init_vm", "kvm_tdp_mmu_alloc_root"]},
    "memslot": {"s390": ["__kvm_set_memory_region", "kvm_set_memslot", "kvm_arch_prepare_memory_region",
                         "kvm_arch_commit_memory_region (gmap_map_segment / gmap_unmap_segment)"],
                "*": ["__kvm_set_memory_region", "kvm_set_memslot", "kvm_invalidate_memslot",
                      "kvm_arch_flush_shadow_memslot", "kvm_arch_prepare_memory_region"]},
    "guest_fault": {"s390": ["kvm_s390_handle_dat_fault", "gmap_fault", "fixup_user_fault", "__gmap_link"],
                    "arm64": ["kvm_handle_guest_abort", "user_mem_abort", "__gfn_to_pfn_memslot",
                              "transparent_hugepage_adjust", "kvm_pgtable_stage2_map"],
                    "x86_64": ["kvm_tdp_page_fault", "kvm_faultin_pfn", "kvm_mmu_hugepage_adjust",
                               "kvm_tdp_mmu_map"]},
    "guest_fault_begin": {"s390": ["kvm_s390_handle_dat_fault", "gmap_fault", "fixup_user_fault"],
                          "arm64": ["kvm_handle_guest_abort", "user_mem_abort", "mmu_invalidate_seq (snapshot)",
                                    "__gfn_to_pfn_memslot"],
                          "x86_64": ["kvm_tdp_page_fault", "kvm_faultin_pfn", "mmu_invalidate_seq (snapshot)"]},
    "guest_fault_commit": {"s390": ["__gmap_link"],
                           "arm64": ["user_mem_abort (mmu_lock)", "mmu_invalidate_retry",
                                     "transparent_hugepage_adjust", "get_user_mapping_size",
                                     "kvm_pgtable_stage2_map"],
                           "x86_64": ["kvm_tdp_page_fault (mmu_lock)", "is_page_fault_stale",
                                      "kvm_mmu_hugepage_adjust", "host_pfn_mapping_level", "kvm_tdp_mmu_map"]},
    "inval_hold": {"*": ["mmu_notifier_invalidate_range_start", "kvm_mmu_notifier_invalidate_range_start",
                         "kvm_mmu_invalidate_begin", "kvm_unmap_gfn_range",
                         "(the next notifying host change stops here, before _end)"]},
    "inval_end": {"*": ["mmu_notifier_invalidate_range_end", "kvm_mmu_notifier_invalidate_range_end",
                        "kvm_mmu_invalidate_end"]},
    "vm_destroy": {"s390": ["kvm_arch_destroy_vm", "gmap_remove", "gmap_free"],
                   "arm64": ["kvm_arch_destroy_vm", "kvm_free_stage2_pgd", "kvm_pgtable_stage2_destroy"],
                   "x86_64": ["kvm_arch_destroy_vm", "kvm_mmu_uninit_tdp_mmu"]},
}

# What an engine event says the path went through: event name -> arch ("*" for all) -> function.
EVENT_PATHS: dict[str, dict[str, str]] = {
    "table_free": {"*": "pte_free_tlb / tlb_remove_table", "s390": "page_table_free"},
    "table_rcu": {"*": "tlb_remove_table (call_rcu)", "s390": "page_table_free_rcu"},
    "table_defer": {"*": "pte_free_defer"},
    "rcu_run": {"*": "tlb_remove_table_rcu", "s390": "__tlb_remove_table"},
    "leaf_zap": {"*": "zap_pte_range / zap_huge_pmd"},
    "data_free": {"*": "folio_put"},
    "upgrade": {"s390": "crst_table_upgrade"},
    "gmap_link": {"s390": "__gmap_link"},
    "gmap_unlink": {"s390": "gmap_unlink"},
    "notify": {"*": "mmu_notifier_invalidate_range_start", "s390": "gmap_unlink"},
    "exec_restart": {"s390": "load_elf_binary restart (TIF_PGSTE)"},
    "pgste": {"s390": "s390_enable_sie (page_table_realloc)"},
    "s2_leaf": {"arm64": "stage2_map_walker_try_leaf", "x86_64": "tdp_mmu_map_handle_target_level"},
    "s2_zap": {"arm64": "stage2_unmap_walker", "x86_64": "tdp_mmu_zap_leafs"},
    "shm_collapse": {"*": "collapse_file"},
    "retract": {"*": "retract_page_tables"},
}
# Table allocation by (arch family, level name): the kernel allocator that runs.
ALLOC_PATHS: dict[str, str] = {
    "pgd": "pgd_alloc", "p4d": "__p4d_alloc", "pud": "__pud_alloc", "pmd": "__pmd_alloc",
    "pte": "__pte_alloc (pte_alloc_one)", "region-first": "crst_table_alloc", "region-second": "crst_table_alloc",
    "region-third": "crst_table_alloc", "segment": "__pmd_alloc (crst_table_alloc)",
    "page": "__pte_alloc (page_table_alloc)",
    "gmap": "gmap_alloc_table", "arm64-stage2": "stage2_map_walk_table_pre (kvm_mmu_memory_cache_alloc)",
    "x86_64-stage2": "tdp_mmu_alloc_sp",
}
# Leaves installed, by whether the level holds PTEs, PMD or PUD leaves.
LEAF_PATHS: dict[str, str] = {"pte": "set_pte_at", "pmd": "set_pmd_at", "pud": "set_pud_at"}

# What the oracle that fired checks (the model's own function, named like the kernel's invariants).
ORACLES: dict[str, str] = {
    "uaf-table": "tref_deref: the table's generation changed since the actor took the pointer",
    "double-free": "block_release / s390_pte_free: freed while not allocated",
    "table-leak": "ptf_finish: a table survived teardown and RCU drain",
    "fragment-corrupt": "s390_frag_check: the fragment list against the tables that exist",
    "pgste-table-missing": "s390_frag_check: a 2K table in an mm with alloc_pgste",
    "gmap-dangling": "gmap_check: each linked guest segment must share the host's current PTE table",
    "lost-update": "entry_write: a write into a table no longer linked into its mm",
    "freed-page-mapped": "data_put: a page freed while live leaves map it",
    "stage2-block-illegal": "s2_check_install: block size against the stage-2 levels",
    "stage2-oversize": "s2_check_install: the block against the host leaf and the memslot",
    "stage2-stale": "s2_check_install / kvm_coherence_check: the pfn the host maps at the hva",
    "stage2-after-release": "s2_fault_commit: the stage-2 root the fault took is gone",
    "engine-assert": "the engine's own consistency checks",
}

# Where a design variant changes the path: (operation, knob, value) -> (function, what the variant does there).
KNOB_PATHS: dict[tuple[str, str, str], tuple[str | tuple[str, ...], str]] = {
    ("guest_fault_commit", "kvm.invalidate_retry", "none"): (("mmu_invalidate_retry", "is_page_fault_stale"),
                                                             "not checked"),
    ("guest_fault", "kvm.invalidate_retry", "none"): ("transparent_hugepage_adjust", "no mmu_invalidate_retry"),
    ("guest_fault_commit", "kvm.invalidate_retry", "seq-only"): (("mmu_invalidate_retry", "is_page_fault_stale"),
                                                                 "mmu_invalidate_seq only, not in_progress"),
    ("guest_fault", "kvm.invalidate_retry", "seq-only"): ("transparent_hugepage_adjust",
                                                          "mmu_invalidate_seq only, not in_progress"),
    ("guest_fault_commit", "arm64.thp_size", "vma-naive"): ("get_user_mapping_size", "skipped: the VMA decides"),
    ("guest_fault", "arm64.thp_size", "vma-naive"): ("transparent_hugepage_adjust", "the VMA decides"),
    ("guest_fault", "arm64.stage2_block_check", "none"): ("kvm_pgtable_stage2_map", "block at the size's level"),
    ("rmap_commit", "mm.pmd_recheck", "no"): ("page_vma_mapped_walk (pmd recheck under the PTL)",
                                              "no pmd recheck"),
    ("munmap", "mm.table_free", "immediate"): ("pte_free_tlb", "freed at once, no RCU"),
    ("exit", "mm.table_free", "immediate"): ("free_pgtables", "tables freed at once, no RCU"),
    ("madvise/3", "s390.defer_gmap_unlink", "yes"): ("collapse_huge_page", "pte_free_defer unlinks the gmap"),
}

ZERO_BASE = 1 << 34  # ptf.h ZERO_PFN_BASE: the huge zero page; the 4K zero page(s) follow at + 2^18
LINK_STATES = ("private", "linked", "unlinked", "deposited")
HALF_STATES = ("free", "allocated", "pending")


def kernel_path(arch: str, row, events: list[tuple], geo: list[tuple] | None = None, knobs: dict | None = None,
                walker_level: int | None = None) -> list[str]:
    """The kernel functions an operation went through: its entry path (as the knobs change it), then what
    its events show. walker_level: the level a walk_step reads (the gup_*_range function that runs)."""
    name, *args = op_to_list(row)
    key = f"madvise/{args[3]}" if name == "madvise" else name
    paths = KERNEL_PATHS.get(key, {})
    out = list(paths.get(arch) or paths.get("*") or [])
    if key == "madvise/3" and any(EVENT_NAMES[ev[1]] == "shm_collapse" for ev in events if ev[1] < len(EVENT_NAMES)):
        out = [*out[:2], "hpage_collapse_scan_file"]  # a shmem block: collapse_file, not collapse_huge_page
    if name == "walk_step" and walker_level is not None and geo:
        generic = ("pgd", "p4d", "pud", "pmd", "pte")[walker_level] if walker_level < 5 else "pte"
        out = [f"gup_{generic}_range ({geo[walker_level][0]} entry)"]
    for (op_key, knob, value), (fns, note) in KNOB_PATHS.items():
        if op_key != key or (knobs or {}).get(knob) != value:
            continue
        for fn in (fns,) if isinstance(fns, str) else fns:
            if fn in out:
                out[out.index(fn)] = f"{fn} [{note}: {knob}={value}]"
    level_names = [g[0] for g in geo] if geo else None
    for ev in events:
        ev_name = EVENT_NAMES[ev[1]] if ev[1] < len(EVENT_NAMES) else ""
        fn = None
        if ev_name == "table_alloc":
            if ev[4] == NO_OWNER:
                fn = ALLOC_PATHS["gmap" if arch == "s390" else f"{arch}-stage2"]
            elif level_names and 0 <= ev[2] < len(level_names):
                fn = ALLOC_PATHS.get(level_names[ev[2]])
        elif ev_name == "leaf_set" and geo and 0 <= ev[2] < len(geo):
            page = 1 << geo[-1][1]
            size = 1 << geo[ev[2]][1]  # a PTE, a PMD-size leaf (PTRS_PER_PTE pages) or bigger (PUD)
            kind = "pte" if size == page else "pmd" if size == page * geo[-1][2] else "pud"
            fn = LEAF_PATHS[kind]
            if name in ("fault", "guest_fault", "guest_fault_begin"):
                fn = {"pte": "do_anonymous_page / do_wp_page", "pmd": "do_huge_pmd_anonymous_page",
                      "pud": "hugetlb_fault"}[kind]
        elif ev_name == "table_rcu" and "pte_free_defer" in out:
            fn = "call_rcu (pte_free_now)"  # pte_free_defer's grace period: not page_table_free_rcu (no gmap_unlink)
        else:
            table = EVENT_PATHS.get(ev_name, {})
            fn = table.get(arch) or table.get("*")
        if fn and fn not in out:
            out.append(fn)
    return out


# ---------------------------------------------------------------------------------------------------------
# The engine's state


def dump_state(trace: Trace, knobs: dict | None, n: int) -> dict:
    """_engine.dump of the first n operations: the state they leave, before any teardown."""
    effective = {**trace.knobs, **(knobs or {})}
    ops = np.ascontiguousarray(trace.ops[:n], dtype=np.uint64).reshape(-1, 6)
    out = _engine.dump(ARCH_NAMES.index(trace.arch), knob_vector(trace.arch, effective), config_tuple(trace),
                       tuple(bytes(b) for b in trace.elfs), ops)
    return out


NUM = r"(0x[0-9a-f]+|\d+)"


@dataclass
class Focus:
    """What the violation names: tables (addresses), guest and host addresses, pfns, a stage-2 level."""
    kind: str = ""
    message: str = ""
    tables: set[int] = field(default_factory=set)
    vm: int | None = None
    mm: int | None = None
    gpa: int | None = None
    hva: int | None = None
    pfns: set[int] = field(default_factory=set)
    entry: tuple[int, int] | None = None  # (table address, index)
    s2_level: int | None = None
    size: int | None = None

    def names_table(self, addr: int) -> bool:
        return addr in self.tables or (addr & ~0x7ff) in self.tables


def _num(s: str) -> int:
    return int(s, 16) if s.startswith("0x") else int(s)


def parse_focus(kind: str, message: str) -> Focus:
    """The addresses, levels and pfns of a violation message (the engine's messages, MODEL.md section 8)."""
    f = Focus(kind, message)
    for pat in (rf"table(?: page)?(?: half)? (?:at )?{NUM}", rf"root {NUM}", rf"lists page {NUM}"):
        f.tables |= {_num(m) for m in re.findall(pat, message)}
    if m := re.search(rf"entry (\d+) of level-(\d+) table {NUM}", message):
        f.entry = (_num(m.group(3)), int(m.group(1)))
    if m := re.search(r"\bvm (\d+)", message):
        f.vm = int(m.group(1))
    if m := re.search(r"\bmm (\d+)", message):
        f.mm = int(m.group(1))
    if m := re.search(rf"(?:gpa|guest segment) {NUM}", message):
        f.gpa = _num(m.group(1))
    if m := re.search(rf"hva {NUM}", message):
        f.hva = _num(m.group(1))
    f.pfns = {_num(m) for m in re.findall(rf"pfn {NUM}", message)}
    if m := re.search(r"stage-2 level (\d+)", message):
        f.s2_level = int(m.group(1))
    if m := re.search(rf"{NUM}-byte", message):
        f.size = _num(m.group(1))
    return f


# ---------------------------------------------------------------------------------------------------------
# Drawing model: nodes (tables, folded pass-throughs, ghosts, stubs) with rows, laid out top-down by level


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


def build_tree(state: dict, ctx: Ctx, key: str, tables: list[dict], geo: list[tuple], names: list[str],
               stage2: bool, gmap: bool, mm: int | None, label: str, sublabel: str, root_freed: int | None,
               start_level: int, focus_addr: int | None, vm_id: int | None, collapse: bool = False) -> Tree:
    """One tree of tables. collapse: subtrees holding nothing the picture is about (no table the violation
    names, no actor, no change between the two states, no gmap link) become one stub per parent."""
    tree = Tree(key, label, sublabel, geo, names, stage2, gmap, f"mm{mm}" if stage2 else None)
    by_addr = {t["addr"]: t for t in tables}
    other_tables = {}
    if ctx.other is not None:
        o = ctx.other["mms"].get(mm) if not stage2 else ctx.other["vms"].get(vm_id)
        if o is not None:
            other_tables = {t["addr"]: t for t in o["tables"]}
    path, stop = focus_path(tables, geo, focus_addr) if focus_addr is not None else ({}, None)
    end_leaf = list(path.items())[-1] if path and stop is None else None
    big = collapse and bool(tables)
    keep: set[int] = set()
    if big:
        for a in by_addr:
            if a in ctx.interesting or a in path or ctx.focus.names_table(a):
                t = by_addr[a]
                while t is not None:  # the table and its ancestors stay
                    keep.add(t["addr"])
                    t = by_addr.get(t["parent"][0]) if t["parent"] else None
        keep.add(tables[0]["addr"])

    def table_node(t: dict) -> Node:
        a, level = t["addr"], t["level"]
        marks: dict[int, set] = {}
        if a in path:
            marks.setdefault(path[a], set()).add("path")
        if ctx.focus.entry and ctx.focus.entry[0] == a:
            marks.setdefault(ctx.focus.entry[1], set()).add("focus")
        if end_leaf and end_leaf[0] == a and not stage2 and ctx.focus.kind in ("stage2-oversize", "stage2-stale"):
            marks.setdefault(end_leaf[1], set()).add("focus")  # the host leaf the stage-2 leaf disagrees with
        other = other_tables.get(a)
        other_entries = set(other["entries"]) if other is not None else None
        rows = _entry_rows(t, geo, names, stage2, marks, other_entries if ctx.role == "after" else None, gmap)
        if gmap and level == len(geo) - 1:
            for r in rows:
                if r.cls == "share" and ctx.focus.gpa is not None and r.idx == path.get(a):
                    r.marks.add("focus")
        if stop and stop[0] == a:
            va = focus_addr
            want = ""
            if ctx.focus.size and stage2:
                want = f" ({hsize(ctx.focus.size)} wanted)"
            rows.insert(next((i for i, r in enumerate(rows) if r.idx > stop[1]), len(rows)),
                        Row(f"{stop[1]:>4} empty \u2190 {va:#x}{want}",
                            f"entry {stop[1]} is empty: the walk to {va:#x} stops here", "empty",
                            {"focus" if (ctx.focus.kind.startswith("stage2") and stage2) or
                             (ctx.focus.kind == "stage2-stale" and not stage2) else "path"}, idx=stop[1]))
        rows = _trim_rows(rows)
        b, half = block_of(state, a)
        sub = f"{'gpa' if stage2 else 'va'} {t['va']:#x} \u00b7 {geo[level][2]} \u00d7 {hsize(1 << geo[level][1])}"
        n = Node(f"T{a:#x}", key, level, f"{names[level]} {a:#x}", sub, rows, {"table"}, addr=a)
        if b is not None and not stage2 and b["halves"][half][3] != 1 and t["parent"] is not None:
            n.cls.add("unlinked")
        n.tip = f"{names[level]} table at {a:#x} ({len(t['entries'])} non-empty entries)"
        if ctx.focus.names_table(a):
            n.cls.add("focus")
        if ctx.role == "after" and ctx.other is not None and a not in other_tables:
            n.cls.add("new")
        if mm is not None and level == len(geo) - 1 and state["page_size"] == 4096 and ctx.arch == "s390":
            n.frag = _frag_strip(state, a, mm)
        return n

    def attach(parent: Node, row: Row, plevel: int, child: Node | None, child_level: int, entry_idx: int,
               va: int):
        """Link row -> child through a pass-through node per folded level in between (pgtable-nopXd)."""
        cur_row = row
        for lv in range(plevel + 1, child_level):
            if not geo[lv][4]:
                continue
            f = Node(f"F{parent.key}:{entry_idx}:{lv}", key, lv, f"{names[lv]} (folded)",
                     f"= {names[plevel] if lv - 1 == plevel else names[lv - 1]} entry {entry_idx}",
                     [Row(f"   0 {va:#x} \u2192", f"{names[lv]} folded: PTRS_PER_{names[lv].upper()} = 1; "
                          f"{names[lv]}_offset() returns the parent entry itself", "fold")],
                     {"folded"})
            f.rows[0].marks = {"path"} & row.marks
            f.tip = f"{names[lv]} is folded (pgtable-no{names[lv]}.h): a pass-through with one entry"
            cur_row.child = f
            tree.nodes[f.key] = f
            cur_row = f.rows[0]
        cur_row.child = child

    def build(t: dict) -> Node:
        node = table_node(t)
        tree.nodes[node.key] = node
        level = t["level"]
        last = level == len(geo) - 1
        if last:
            return node
        collapsed: list[tuple[Row, dict]] = []
        for row in node.rows:
            if row.cls != "table":
                continue
            ent = next(e for e in t["entries"] if e[0] == row.idx)
            ct = by_addr.get(ent[2])
            if ct is None:
                continue
            if big and ct["addr"] not in keep:
                collapsed.append((row, ct))
                continue
            attach(node, row, level, build(ct), ct["level"], row.idx, ent[3])
        if collapsed:  # one stub for the uninteresting subtrees under this table
            nt = nl = 0
            for row, ct in collapsed:
                x, y = _tree_stats(by_addr, ct["addr"], geo)
                nt, nl = nt + x, nl + y
            k = len(collapsed)
            stub = Node(f"S{node.key}", key, collapsed[0][1]["level"], f"{nt} table{'s' * (nt != 1)} not drawn",
                        f"{nl} lea{'ves' if nl != 1 else 'f'} under {k} entr{'ies' if k != 1 else 'y'}",
                        [Row("   unchanged, not involved", "subtrees the picture is not about", "more")], {"stub"})
            stub.tip = "unchanged subtrees that the operation and the violation do not involve"
            tree.nodes[stub.key] = stub
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
        return node

    root = None
    if tables:
        root = build(tables[0])
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
    # a stage-2 level the violation names that the geometry does not have (above the start level)
    if stage2 and ctx.focus.s2_level is not None and ctx.focus.s2_level < start_level and ctx.focus.vm == vm_id:
        lv = ctx.focus.s2_level
        g = Node(f"X{key}:{lv}", key, lv, f"{names[lv]}: no such table",
                 f"stage 2 starts at level {start_level}",
                 [Row(f"   {hsize(ctx.focus.size or 0)} leaf for {ctx.focus.gpa or 0:#x}",
                      "the leaf the fault tried to install at a level this stage 2 does not have", "empty",
                      {"focus"})], {"ghost", "focus"})
        if root is not None:  # drawn above the real top table, which it would have to point at
            g.children.append((root, "none"))
            tree.roots.remove(root)
        tree.roots.insert(0, g)
        tree.nodes[g.key] = g
    return tree


def _deposits_and_loose(state: dict, ctx: Ctx, tree: Tree, mm: int, geo: list[tuple], names: list[str],
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


def _tree_width(tree: Tree) -> float:
    return _layout_tree(tree, 0)


def _ghost(tree: Tree, addr: int, level: int, why: str, focus: bool) -> Node:
    key = f"G{addr:#x}"
    if key in tree.nodes:
        return tree.nodes[key]
    g = Node(key, tree.key, level, f"{tree.names[level]} {addr:#x}", "freed",
             [Row(f"   {why}", why, "more")], {"ghost", "loose"} | ({"focus"} if focus else set()), addr=addr)
    tree.loose.append(g)
    tree.nodes[key] = g
    return g


def _level_of_addr(states: list[dict | None], addr: int, default: int) -> int:
    for s in states:
        if s is None:
            continue
        for b in s["blocks"]:
            if b["addr"] == addr & ~0x3fff:
                return b["halves"][(addr >> 11) & 1][1]
    return default


# ---------------------------------------------------------------------------------------------------------
# Which trees a picture shows


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
        pid_ops = {"exec", "exit", "mmap", "munmap", "madvise", "fault", "split", "shm_mmap"}
        if name in pid_ops and args[0] in state["procs"]:
            add_mm(state["procs"][args[0]]["mm"])
        elif name == "fork":
            for p in args:
                if p in state["procs"]:
                    add_mm(state["procs"][p]["mm"])
        elif name in ("walk_begin", "rmap_begin") and args[1] in state["procs"]:
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


def build_forest(trace: Trace, state: dict, ctx: Ctx, mms: list[int], vms: list[int]) -> list[Tree]:
    arch = ctx.arch
    geo = state["geometry"]
    names = [g[0] for g in geo]
    f = ctx.focus
    trees: list[Tree] = []
    drawn: set[int] = set()
    for m in mms:
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
            _deposits_and_loose(state, ctx, tr, m, geo, names, d, collapse)
            return tr, d

        t, d = host(False)
        if _tree_width(t) > TREE_MAX_W:
            t, d = host(True)
        drawn = d
        for v in vms:
            vd = state["vms"][v]
            if vd["mm"] != m:
                continue
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
            if _tree_width(vt) > TREE_MAX_W:
                vt = build_tree(state, ctx, f"vm{v}", vd["tables"], vgeo, vnames, True, arch == "s390", m,
                                label, sub, freed_root, vd["start_level"], gaddr, v, True)
            trees.append(vt)
        trees.append(t)  # the guest's tables to the left of the host's: gpa -> hva -> pfn reads left to right
    # ghosts: tables the violation names that no longer exist here
    for a in sorted(f.tables):
        if any(n.addr == a or (n.addr is not None and n.addr & ~0x7ff == a) for t in trees for n in t.nodes.values()):
            continue
        if not trees:
            break
        in_vm = ctx.other is not None and any(
            any(t["addr"] == a for t in vd["tables"]) for vd in ctx.other["vms"].values())
        tree = next((t for t in trees if t.stage2), trees[0]) if in_vm else trees[0]
        held = [c["level"] for c in state["cpus"] if c.get("table") == a and "level" in c]
        level = held[0] if held else ctx.levels.get(a, _level_of_addr([ctx.other, state], a, len(tree.geo) - 1))
        level = min(level, len(tree.geo) - 1)
        _ghost(tree, a, level, "freed: the table the violation names", True)
    # actors: what each in-flight kernel path holds
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
        label = {"walk": f"cpu {c['cpu']} GUP-fast walker", "rmap": f"cpu {c['cpu']} rmap walker",
                 "guest_fault": f"cpu {c['cpu']} guest fault"}[c["actor"]]
        if c["actor"] in ("walk", "rmap"):
            tree = next((t for t in trees if t.key == f"mm{c['mm']}"), None)
            if tree is None:
                continue
            node = tree.nodes.get(f"T{c['table']:#x}")
            if node is None or not c["table_alive"]:
                lvl = c.get("level", len(geo) - 1)
                node = _ghost(tree, c["table"], min(lvl, len(geo) - 1), "freed while the walker holds it",
                              f.names_table(c["table"]))
            node.tags.append((f"\u25c0 {label} holds this" + ("" if c["table_alive"] else " (stale)"),
                              "actor" if c["table_alive"] else "actor bad"))
        else:
            tree = next((t for t in trees if t.key == f"vm{c['vm']}"), None)
            if tree is None or tree.top is None:
                continue
            tree.top.tags.append((f"\u25c0 {label}: gpa {c['gpa']:#x}, pfn {c['pfn']:#x} in flight",
                              "actor" if c["s2_root_alive"] else "actor bad"))
    # a freed table's memory in use again: say so where the same address is drawn
    ghosts = {n.addr: n for t in trees for n in t.nodes.values() if "ghost" in n.cls and n.addr is not None}
    for t in trees:
        for n in t.nodes.values():
            g = ghosts.get(n.addr)
            if g is not None and g is not n and "ghost" not in n.cls:
                n.tags.append((f"\u26a0 reuses the memory of the freed {g.title.rsplit(' ', 1)[0]} table", "bad"))
    return trees


def _gpa_to_hva(vd: dict, gpa: int) -> int | None:
    for _, sg, sh, ln in vd["slots"]:
        if sg <= gpa < sg + ln:
            return sh + gpa - sg
    return None


# ---------------------------------------------------------------------------------------------------------
# Layout and SVG

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


def _layout_tree(tree: Tree, x0: float) -> float:
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


def _wrap(text: str, width: float, char_w: float, lines: int = 3) -> list[str]:
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
        end = _layout_tree(t, x)
        widths[t.key] = end - x
        x = end + TREE_GAP
    bands: dict[tuple, float] = {}
    for t in trees:
        for n in t.nodes.values():
            k = LOOSE if "loose" in n.cls else level_key(t.geo, n.level)
            bands[k] = max(bands.get(k, 0), n.h)
    lines = max([len(_wrap(t.sublabel, max(t.w, 180), 5.6)) for t in trees] + [1])
    return {"widths": widths, "bands": bands, "width": max(x - TREE_GAP + LEFT, 420), "lines": lines}


def merge_measures(a: dict, b: dict) -> dict:
    widths = {k: max(a["widths"].get(k, 0), b["widths"].get(k, 0)) for k in {**a["widths"], **b["widths"]}}
    bands = {k: max(a["bands"].get(k, 0), b["bands"].get(k, 0)) for k in {**a["bands"], **b["bands"]}}
    return {"widths": widths, "bands": bands, "width": max(a["width"], b["width"]),
            "lines": max(a["lines"], b["lines"])}


def render_svg(trees: list[Tree], role: str, caption: str, shared: dict | None = None) -> str:
    """One state's trees side by side (a VM's gmap / stage 2, then its host mm), in bands shared by entry
    size (the bands of the levels any tree has), with the tables that hang in no tree in a bottom band.
    shared (merge_measures of both states): the same band heights, tree positions and width for both."""
    shared = shared or measure_forest(trees)
    x = LEFT
    for t in trees:
        end = _layout_tree(t, x)
        x = max(end, x + shared["widths"].get(t.key, 0)) + TREE_GAP
    width = max(x - TREE_GAP + LEFT, shared["width"])
    subs = {t.key: _wrap(t.sublabel, max(t.w, 180), 5.6) for t in trees}
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


# ---------------------------------------------------------------------------------------------------------
# The report


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
    if name in ("mmap", "munmap", "madvise", "fault", "split", "shm_mmap") and args[0] in state["procs"]:
        f.mm, f.hva = state["procs"][args[0]]["mm"], args[1]
    elif name in ("walk_begin", "rmap_begin") and args[1] in state["procs"]:
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
    focus = parse_focus(v.kind, v.message) if v and (op is None or op == v.op_index) else Focus()
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
        head = [("h1", f"{v.kind} at {where}")] + [("msg", s) for s in _wrap(v.message, width - 20, 7.3, 3)]
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
    # the trace
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
    st = result.stats
    p.append('<h2>statistics</h2><table class="kv">' + "".join(
        f"<tr><td>{esc(k)}</td><td class=\"mono\">{esc(x)}</td></tr>" for k, x in st.items()) +
        f'<tr><td>digest</td><td class="mono">{esc(result.digest)}</td></tr></table>')
    p.append("</main></body></html>")
    return "\n".join(p)
