"""Rendering: human replay reports, the strace-like --steps log, JSON records and summary tables."""
from rich.console import Console
from rich.table import Table

from ..engine import ReplayResult
from ..names import EVENT_NAMES, LOCK_NAMES, OPS, Outcome, errno_name
from ..trace import Trace, op_text, op_to_list

S390_LEVELS = ["region-first", "region-second", "region-third", "segment", "page"]
GENERIC_LEVELS = ["pgd", "p4d", "pud", "pmd", "pte"]
NO_OWNER = (1 << 64) - 1
WAIT_EVENT = EVENT_NAMES.index("wait")
MODES = {1: "read", 2: "write"}
# what each lock's id names (locking.c struct held_lock)
LOCK_OBJECTS = {"mmap_lock": "mm", "vma_lock": "the VMAs of mm", "anon_vma->root->rwsem": "anon_vma",
                "i_mmap_rwsem": "shmem object", "folio_lock": "folio pfn", "kvm->srcu": "vm", "kvm reference": "vm",
                "mn_active_invalidate_count": "vm", "irqs_off": "cpu", "mm_users": "mm",
                "mm->context.lock": "mm"}


def describe_wait(a: int, b: int, c: int, d: int) -> str:
    """An operation that would wait: what it wants, and who holds it (the outcome --steps, JSON and show name)."""
    lock = LOCK_NAMES[a & 0xFF] if (a & 0xFF) < len(LOCK_NAMES) else f"lock{a & 0xFF}"
    want, held = MODES.get(a >> 8 & 0xFF, "?"), MODES.get(a >> 16 & 0xFF, "?")
    obj = LOCK_OBJECTS.get(lock, "id")
    ident = f"{b:#x}" if obj in ("folio pfn", "anon_vma") else str(b)
    holder = OPS[d][0] if d < len(OPS) else "?"
    if lock == "irqs_off":
        return f"blocks: an IPI waits for cpu {c}'s {holder} (IRQs off)"
    return f"blocks: {lock} of {obj} {ident} ({want} wanted) held for {held} by cpu {c}'s {holder}"


def level_name(arch: str, level: int, stage2: bool = False) -> str:
    if stage2 and arch != "s390":
        return f"stage-2 level {level}"
    names = S390_LEVELS if arch == "s390" else GENERIC_LEVELS
    return names[level] if 0 <= level < len(names) else f"L{level}"


def describe_event(arch: str, ev: tuple) -> str:
    _, kind, a, b, c, d = ev
    name = EVENT_NAMES[kind] if kind < len(EVENT_NAMES) else f"event{kind}"
    unowned = c == NO_OWNER
    owner = ("gmap" if arch == "s390" else "stage 2") if unowned else f"mm {c}"
    lv = level_name(arch, a, unowned) if name in ("table_alloc", "table_free", "table_defer", "leaf_set", "leaf_zap") else ""
    if name == "table_alloc":
        size = {2048: " (2K fragment)", 4097: " (4K with PGSTEs)"}.get(d, "") if arch == "s390" else ""
        return f"+ table {lv} at {b:#x} for {owner}{size}"
    if name == "table_free":
        return f"- table {lv} at {b:#x} freed now"
    if name == "table_defer":
        return f"~ table {lv} at {b:#x} freed by pte_free_defer (after a grace period)"
    if name == "table_rcu":
        what = "2K half pending" if b == 0 else "table"
        return f"~ {what} at {a:#x} queued for RCU"
    if name == "rcu_run":
        return f"  rcu callback ran for {a:#x}"
    if name == "leaf_set":
        return f"+ leaf {lv} va {b:#x} -> pfn {c:#x}"
    if name == "leaf_zap":
        return f"- leaf {lv} va {b:#x} (pfn {c:#x}) zapped"
    if name == "data_free":
        return f"- data page pfn {a:#x} ({b} x 4K) freed"
    if name == "upgrade":
        return f"^ mm {a} upgraded to {b} levels (new top {c:#x}, asce_limit {d:#x})"
    if name == "gmap_link":
        return f"+ gmap vm {d}: guest segment {a:#x} -> host table {c:#x} (hva {b:#x})"
    if name == "gmap_unlink":
        return f"- gmap vm {d}: guest segment {a:#x} unlinked (hva {b:#x})"
    if name == "exec_restart":
        return f"! exec of pid {a} restarts with TIF_PGSTE set (PT_S390_PGSTE)"
    if name == "notify":
        return f"~ mmu_notifier invalidate mm {a} [{b:#x}, {c:#x})"
    if name == "s2_leaf":
        return f"+ vm {a} stage-2 leaf level {c} gpa {b:#x} -> pfn {d:#x}"
    if name == "s2_zap":
        return f"- vm {a} stage-2 leaf level {c} gpa {b:#x} (pfn {d:#x}) zapped"
    if name == "shm_collapse":
        return f"! shmem object {a}: pages {b:#x}.. replaced by one PMD-size folio at pfn {c:#x} (collapse_file, mm {d})"
    if name == "retract":
        return f"- retract_page_tables: mm {a} pmd for va {b:#x} cleared, its table {c:#x} goes (shmem object {d})"
    if name == "wait":
        return describe_wait(a, b, c, d)
    if name == "pgste":
        how = {1: "by the ELF flag on the mm already built", 2: "by converting its page tables"}.get(b, "")
        return f"! mm {a} now allocates PGSTEs {how}"
    return f"{name} {a:#x} {b:#x} {c:#x} {d:#x}"


def outcome(result: int, events: list[tuple]) -> Outcome:
    """An operation's outcome from its result and events: a wait event makes its -16 a block."""
    if result == 0:
        return Outcome.OK
    if any(ev[1] == WAIT_EVENT for ev in events):
        return Outcome.BLOCKED
    return Outcome.ERROR


def steps_lines(trace: Trace, result: ReplayResult) -> list[str]:
    by_op: dict[int, list[tuple]] = {}
    for ev in result.events or []:
        by_op.setdefault(ev[0], []).append(ev)
    lines = []
    for i in range(result.executed):
        r = int(result.op_results[i])
        blocked = " (blocked)" if outcome(r, by_op.get(i, [])) is Outcome.BLOCKED else ""
        lines.append(f"[{i:4d}] {op_text(trace.ops[i])} = {r} {'' if r == 0 else errno_name(r)}{blocked}".rstrip())
        lines.extend(f"         {describe_event(trace.arch, ev)}" for ev in by_op.get(i, []))
        if result.violation and result.violation.op_index == i:
            lines.append(f"         !! {result.violation.kind}: {result.violation.message}")
    tail = by_op.get(result.ops, [])
    if tail:
        lines.append("[teardown]")
        lines.extend(f"         {describe_event(trace.arch, ev)}" for ev in tail)
    if result.violation and result.violation.op_index >= result.executed:
        lines.append(f"         !! {result.violation.kind}: {result.violation.message}")
    return lines


def event_record(arch: str, ev: tuple) -> dict:
    """An engine event for --json --steps: its name, raw arguments, and the line --steps prints for it."""
    _, kind, a, b, c, d = ev
    name = EVENT_NAMES[kind] if kind < len(EVENT_NAMES) else f"event{kind}"
    return {"event": name, "args": [int(a), int(b), int(c), int(d)], "text": describe_event(arch, ev).strip()}


def steps_record(trace: Trace, result: ReplayResult) -> dict:
    """Every executed operation with its result and events, and the events of teardown (--json --steps)."""
    by_op: dict[int, list[tuple]] = {}
    for ev in result.events or []:
        by_op.setdefault(ev[0], []).append(ev)
    steps = []
    for i in range(result.executed):
        r = int(result.op_results[i])
        name, *args = op_to_list(trace.ops[i])
        evs = by_op.get(i, [])
        waits = [describe_event(trace.arch, ev).strip() for ev in evs if ev[1] == WAIT_EVENT]
        steps.append({"index": i, "op": op_text(trace.ops[i]), "name": name, "args": args, "result": r,
                      "errno": errno_name(r) if r else None, "outcome": outcome(r, evs).value,
                      "blocks": waits[0] if waits else None,
                      "events": [event_record(trace.arch, ev) for ev in evs]})
    return {"steps": steps, "teardown": [event_record(trace.arch, ev) for ev in by_op.get(result.ops, [])]}


def json_record(path, trace: Trace, result: ReplayResult, steps: bool = False) -> dict:
    v = result.violation
    return {
        "trace": str(path),
        "arch": result.arch,
        "ops": result.ops,
        "verdict": result.verdict.value,
        "violation": None if v is None else {"kind": v.kind, "op_index": v.op_index, "op": v.op, "message": v.message},
        "expected": trace.expect or {"verdict": "clean"},
        "matched": result.matches(trace),
        "knobs": result.knobs,
        "stats": result.stats,
        "digest": result.digest,
        **(steps_record(trace, result) if steps and result.op_results is not None else {}),
    }


def human_report(console: Console, path, trace: Trace, result: ReplayResult) -> None:
    ok = result.matches(trace)
    status = "[green]PASS[/]" if ok else "[red]FAIL[/]"
    verdict = result.verdict.value
    console.print(f"{status} {path}  arch={result.arch} ops={result.ops} verdict={verdict}", highlight=False)
    if result.violation:
        v = result.violation
        console.print(f"     {v.kind} at op {v.op_index}: {v.op}", highlight=False)
        console.print(f"     {v.message}", highlight=False)
    if not ok:
        want = trace.expected_kind() or "clean"
        console.print(f"     expected {want}", highlight=False)


def summary_table(rows: list[tuple]) -> Table:
    table = Table(title="replay summary")
    for col in ("trace", "arch", "ops", "verdict", "expected", "result"):
        table.add_column(col)
    for path, arch, ops, verdict, expected, ok in rows:
        table.add_row(str(path), arch, str(ops), verdict, expected, "PASS" if ok else "FAIL")
    return table
