"""The lock model (issue 16): what split operations hold between their halves, who waits for it, each rule from
the v6.6 source it follows (docs/model-notes.md, "Locks held across operations")."""
import json

import pytest

from ptfuzz import _engine
from ptfuzz.search.check import check
from ptfuzz.names import VIOLATION_KINDS
from ptfuzz.names import EVENT_NAMES
from ptfuzz.report.render import WAIT_EVENT, describe_event

from conftest import A, ELFS, K, M, kind, results, run, trace  # noqa: F401

T = 1 << 40
S390_VM = [["exec", 1, 0], ["mmap", 1, A, 2 * M, 0], ["vm_create", 0, 1, 0], ["memslot", 0, 0, 0, A, M]]
VM = [["exec", 1, -1], ["mmap", 1, T, 2 * M, 0], ["vm_create", 0, 1, 0], ["memslot", 0, 0, 0, T, 64 * K]]


def waits(r, arch):
    """op index -> the wait line of each operation that would have waited."""
    return {ev[0]: describe_event(arch, ev).strip() for ev in r.events if ev[1] == WAIT_EVENT}


def check_blocked(r, arch, first, want):
    """results from op `first` on; every -16 there has a wait naming its holder, and nothing else waits."""
    got = results(r)[first:]
    assert got == want, got
    w = waits(r, arch)
    assert sorted(w) == [first + i for i, x in enumerate(want) if x == -16], w
    assert kind(r) is None, r.violation
    return w


def test_s390_gmap_fault_holds_mmap_read_lock_until_gmap_link():
    """arch/s390/mm/gmap.c:gmap_fault: mmap_read_lock(gmap->mm) before __gmap_translate, held through
    fixup_user_fault and __gmap_link. Writers wait (munmap, mmap, MADV_HUGEPAGE, fork); readers run (DONTNEED,
    a user fault); a second VM does not: s390_enable_sie returns before its mmap_write_lock once has_pgste."""
    ops = S390_VM + [["guest_fault_begin", 2, 0, 0, 1],
                     ["munmap", 1, A, M], ["mmap", 1, A + 4 * M, M, 0], ["madvise", 1, A, 4 * K, 1], ["fork", 1, 2],
                     ["vm_create", 1, 1, 0], ["madvise", 1, A, 4 * K, 0], ["fault", 1, A + 8 * K, 1],
                     ["guest_fault_commit", 2], ["munmap", 1, A, M], ["fork", 1, 2]]
    w = check_blocked(run(ops), "s390", 5, [-16, -16, -16, -16, 0, 0, 0, 0, 0, 0])
    assert w[5] == "blocks: mmap_lock of mm 0 (write wanted) held for read by cpu 2's guest_fault_begin"


def test_s390_vcpu_thread_holds_mm_users():
    """A vCPU thread is a CLONE_VM thread of the VMM (kvm_vcpu_ioctl requires kvm->mm == current->mm): it holds
    mm_users on s390 as on arm64 and x86, so the process's exit does not run exit_mmap under an in-flight
    gmap_fault; the commit links, and its mmput runs exit_mmap."""
    r = run(S390_VM + [["guest_fault_begin", 2, 0, 0, 1], ["exit", 1], ["guest_fault_commit", 2]])
    assert results(r)[4:] == [0, 0, 0] and kind(r) is None
    zapped_at = {ev[0] for ev in r.events if ev[1] == EVENT_NAMES.index("leaf_zap")}
    assert 5 not in zapped_at and 6 in zapped_at  # exit_mmap ran at the commit's mmput, not at the exit


@pytest.mark.parametrize("arch", ["arm64", "x86_64"])
def test_a_dontneed_window_holds_mmap_read_lock(arch):
    """mm/madvise.c:madvise_need_mmap_write: MADV_DONTNEED runs under mmap_read_lock, held where a window stops
    it. mmu_notifier_register (vm_create), mmap, munmap, fork and MADV_HUGEPAGE take the write lock and wait;
    a second DONTNEED, a guest fault's GUP (mmap_read_lock) and its commit run beside it."""
    ops = VM + [["fault", 1, T, 1], ["inval_hold", 1], ["madvise", 1, T, 4 * K, 0],
                ["vm_create", 1, 1, 0], ["mmap", 1, T + 4 * M, 2 * M, 0], ["munmap", 1, T, 4 * K], ["fork", 1, 2],
                ["madvise", 1, T, 2 * M, 1],
                ["madvise", 1, T + 8 * K, 4 * K, 0], ["guest_fault_begin", 2, 0, 0, 1], ["guest_fault_commit", 2],
                ["inval_end", 1], ["vm_create", 1, 1, 0], ["fork", 1, 2]]
    w = check_blocked(run(ops, arch=arch), arch, 7, [-16, -16, -16, -16, -16, 0, 0, -11, 0, 0, 0])
    assert w[7] == "blocks: mmap_lock of mm 0 (write wanted) held for read by cpu 1's madvise"


@pytest.mark.parametrize("arch", ["arm64", "x86_64"])
def test_a_fork_window_holds_the_parent_and_hides_the_child(arch):
    """kernel/fork.c:dup_mmap holds mmap_write_lock(oldmm) and has vma_start_write'd every parent VMA when
    copy_page_range notifies: the parent's user faults wait (lock_vma_under_rcu fails on the write-locked VMA,
    or the VMA has no anon_vma; lock_mm_and_find_vma then waits for mmap_lock), so does a guest fault (arm64
    vma_lookup, x86 GUP on a write-protected page); the child does not run until dup_mmap returns: its pid is no
    process (-3), and taken (-17)."""
    ops = VM + [["fault", 1, T, 1], ["mmap", 1, T + 4 * M, 2 * M, 0], ["inval_hold", 1], ["fork", 1, 2],
                ["fault", 1, T + 4 * K, 1], ["fault", 1, T + 4 * M, 1], ["guest_fault_begin", 2, 0, 0, 1],
                ["exit", 2], ["fault", 2, T, 0], ["fork", 1, 2], ["exec", 2, -1],
                ["inval_end", 1], ["fault", 2, T, 0], ["fault", 1, T + 4 * K, 1], ["guest_fault_begin", 2, 0, 0, 1]]
    w = check_blocked(run(ops, arch=arch), arch, 8, [-16, -16, -16, -3, -3, -17, -17, 0, 0, 0, 0])
    assert w[8] == w[9] == w[10] == "blocks: mmap_lock of mm 0 (read wanted) held for write by cpu 1's fork"


def test_an_anonymous_collapse_window_holds_the_write_lock_and_the_anon_vma():
    """mm/khugepaged.c:collapse_huge_page notifies under mmap_write_lock, vma_start_write(vma) and
    anon_vma_lock_write: an rmap walker under that anon_vma root (here the forked child's page: anon_vma_fork
    keeps the root) waits in folio_lock_anon_vma_read, a fault in the VMA waits (for mmap_lock, after
    lock_vma_under_rcu fails); a fault in another anonymous VMA with an anon_vma runs under its own VMA lock."""
    ops = [["exec", 1, -1], ["mmap", 1, T, 2 * M, 0], ["fault", 1, T, 1], ["fault", 1, T + 4 * K, 1],
           ["vm_create", 0, 1, 0], ["fork", 1, 2], ["fault", 1, T, 1], ["mmap", 1, T + 4 * M, 2 * M, 0],
           ["fault", 1, T + 4 * M, 1], ["inval_hold", 1], ["madvise", 1, T, 2 * M, 3],
           ["rmap_begin", 3, 2, T + 4 * K], ["fault", 1, T + 8 * K, 1], ["fault", 1, T + 4 * M + 4 * K, 1],
           ["inval_end", 1], ["rmap_begin", 3, 2, T + 4 * K]]
    w = check_blocked(run(ops, arch="x86_64"), "x86_64", 10, [0, -16, -16, 0, 0, 0])
    assert w[11].startswith("blocks: anon_vma->root->rwsem of anon_vma 0x") and w[11].endswith(
        "(read wanted) held for write by cpu 1's madvise")
    assert w[12] == "blocks: mmap_lock of mm 0 (read wanted) held for write by cpu 1's madvise"


def test_map_fixed_keeps_the_write_lock_and_munmap_downgrades():
    """mm/mmap.c: mmap_region's do_vmi_munmap(..., false) unmaps under the write lock; munmap(2) downgrades
    before unmap_region, always since e4bd84c069f2 ("mm: Always downgrade mmap_lock if requested", v6.5), even
    when the next VMA grows down (the exec stack)."""
    stack_low = (1 << 47) - 4096 - 128 * K
    ops = VM + [["inval_hold", 1], ["mmap", 1, T, M, 0], ["madvise", 1, T + M, 4 * K, 0], ["inval_end", 1],
                ["inval_hold", 1], ["munmap", 1, T + M, 4 * K], ["madvise", 1, T, 4 * K, 0],
                ["mmap", 1, T + 4 * M, 2 * M, 0], ["inval_end", 1],
                ["mmap", 1, stack_low - 2 * M, 2 * M, 0], ["inval_hold", 1], ["munmap", 1, stack_low - 2 * M, 2 * M],
                ["madvise", 1, T, 4 * K, 0], ["inval_end", 1]]
    w = check_blocked(run(ops, arch="x86_64"), "x86_64", 4, [0, 0, -16, 0, 0, 0, 0, -16, 0, 0, 0, 0, 0, 0])
    assert w[6] == "blocks: mmap_lock of mm 0 (read wanted) held for write by cpu 1's mmap"


def test_an_rmap_walker_holds_the_folio_and_its_rmap_lock():
    """mm/rmap.c: try_to_unmap's caller holds the folio lock, rmap_walk holds the anon_vma root for read from
    begin to commit; when a window stops try_to_unmap_one's notifier it keeps both: a second walker of the folio
    waits (folio_lock), munmap's unlink_anon_vmas waits (anon_vma lock for write)."""
    ops = VM + [["fault", 1, T, 1], ["rmap_begin", 3, 1, T], ["rmap_begin", 4, 1, T], ["inval_hold", 1],
                ["rmap_commit", 3], ["munmap", 1, T, 2 * M], ["inval_end", 1], ["munmap", 1, T, 2 * M]]
    w = check_blocked(run(ops, arch="arm64"), "arm64", 5, [0, -16, 0, 0, -16, 0, 0])
    assert "folio_lock of folio pfn" in w[6] and w[6].endswith("held for write by cpu 3's rmap_begin")
    assert "anon_vma->root->rwsem" in w[9] and w[9].endswith("held for read by cpu 1's rmap_commit")


def test_an_in_flight_guest_fault_holds_srcu_and_the_vm():
    """virt/kvm/kvm_main.c: kvm_swap_active_memslots' synchronize_srcu waits for a vCPU in KVM_RUN (kvm->srcu read
    side), after mn_active_invalidate_count; kvm_destroy_vm needs the last kvm reference, which the vCPU's file
    holds."""
    ops = VM + [["guest_fault_begin", 2, 0, 0, 1], ["memslot", 0, 0, 0, 0, 0], ["vm_destroy", 0],
                ["guest_fault_commit", 2], ["vm_destroy", 0]]
    w = check_blocked(run(ops, arch="arm64"), "arm64", 4, [0, -16, -16, 0, 0])
    assert w[5] == "blocks: kvm->srcu of vm 0 (write wanted) held for read by cpu 2's guest_fault_begin"
    assert w[6] == "blocks: kvm reference of vm 0 (write wanted) held for read by cpu 2's guest_fault_begin"


def test_vm_create_takes_all_locks():
    """mmu_notifier_register -> mm_take_all_locks takes every VMA's anon_vma root for write: an rmap walker of
    the mm makes vm_create wait (arm64 and x86; s390 registers no notifier in v6.6)."""
    ops = [["exec", 1, -1], ["mmap", 1, T, 2 * M, 0], ["fault", 1, T, 1], ["rmap_begin", 3, 1, T],
           ["vm_create", 0, 1, 0], ["rmap_commit", 3], ["vm_create", 0, 1, 0]]
    check_blocked(run(ops, arch="arm64"), "arm64", 4, [-16, 0, 0])


def test_gup_fast_blocks_the_collapse_ipi():
    """collapse_huge_page's tlb_remove_table_sync_one sends an IPI that waits for every IRQs-off GUP-fast walker."""
    ops = [["exec", 1, -1], ["mmap", 1, T, 2 * M, 0], ["fault", 1, T, 1], ["walk_begin", 5, 1, T],
           ["madvise", 1, T, 2 * M, 3], ["walk_end", 5], ["madvise", 1, T, 2 * M, 3]]
    w = check_blocked(run(ops, arch="x86_64"), "x86_64", 4, [-16, 0, 0])
    assert w[4] == "blocks: an IPI waits for cpu 5's walk_begin (IRQs off)"


def test_lockdep_catches_two_conflicting_holders():
    index = VIOLATION_KINDS.index("engine-assert") + 1
    assert VIOLATION_KINDS[_engine.selftest(index) - 1] == "engine-assert"


def test_blocked_outcome_in_json_steps_and_show(cli, tmp_path):
    from ptfuzz import trace as tracemod
    t = trace(S390_VM + [["guest_fault_begin", 2, 0, 0, 1], ["munmap", 1, A, M], ["guest_fault_commit", 2]], "s390")
    tracemod.save(t, tmp_path / "t.msgpack")
    r = cli("replay", "t.msgpack", "--json", "--steps")
    assert r.returncode == 0, r.stderr
    steps = json.loads(r.stdout)["steps"]
    assert [s["outcome"] for s in steps[4:]] == ["ok", "blocked", "ok"]
    assert steps[5]["result"] == -16 and steps[5]["blocks"].startswith("blocks: mmap_lock of mm 0")
    assert steps[4]["blocks"] is None
    r = cli("replay", "t.msgpack", "--steps")
    assert "= -16 EBUSY (blocked)" in r.stdout and "held for read by cpu 2's guest_fault_begin" in r.stdout
    r = cli("show", "t.msgpack", "-o", "t.html")
    assert r.returncode == 0, r.stderr
    assert "held for read by cpu 2&#x27;s guest_fault_begin" in (tmp_path / "t.html").read_text() or \
        "held for read by cpu 2's guest_fault_begin" in (tmp_path / "t.html").read_text()


def test_check_counts_blocked_steps_apart():
    r = check("s390", {}, 6, seconds=120)  # exec, mmap, vm_create, memslot, guest_fault_begin, munmap
    assert r.blocked > 0 and r.states > r.blocked and r.to_json()["blocked"] == r.blocked
