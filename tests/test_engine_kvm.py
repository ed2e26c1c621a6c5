"""arm64 and x86_64: folded stage-1 geometry, stage 2 / TDP, the fault protocol, and the independent checks."""
import numpy as np
import pytest

from conftest import A, G, K, M, kind, results, run
from ptfuzz.engine import stage1_geometry, stage2_geometry
from ptfuzz.engine import replay
from ptfuzz.search.gen import generate
from ptfuzz.errors import TraceError
from ptfuzz.names import KNOB_BY_NAME, OP_NUMBER
from ptfuzz.report.show import dump_state
from ptfuzz.trace import Trace, ops_from_list

T = 1 << 40


# ---- geometry against the kernel's formulas, computed here independently ----

def kernel_stage2(granule: int, ipa: int):
    page_shift = granule.bit_length() - 1
    bits = page_shift - 3
    levels = max(2, (ipa - 4 - 4) // bits)  # ARM64_HW_PGTABLE_LEVELS(ipa - 4), at least 2 (kvm_get_vtcr)
    start = 4 - levels
    pgd_pages = max(1, 2 ** (ipa - page_shift - bits * levels))
    min_block = 1 if granule == 4096 else 2
    blocks = [1 << (bits * (4 - lv) + 3) for lv in range(max(start, min_block), 3)]
    return levels, start, pgd_pages, sorted(blocks + [granule], reverse=True)


@pytest.mark.parametrize("granule,pa_bits", [(4096, 48), (16384, 48), (65536, 48), (65536, 52)])
def test_stage2_geometry_matches_the_kernel_for_every_ipa(granule, pa_bits):
    # kvm_set_ipa_limit: PARange, capped at 48 bits unless PAGE_SIZE is 64K
    for ipa in range(32, pa_bits + 1):
        g = stage2_geometry("arm64", {"granule": granule, "va_bits": 48, "pa_bits": pa_bits}, ipa)
        levels, start, pgd_pages, leaf_sizes = kernel_stage2(granule, ipa)
        assert (g["levels"], g["start_level"], g["pgd_pages"], g["leaf_sizes"]) == (levels, start, pgd_pages, leaf_sizes), ipa
        assert pgd_pages <= 16
        assert g["per_level"][0]["table_bytes"] == pgd_pages * granule


@pytest.mark.parametrize("granule,va_bits,levels,folded", [
    (4096, 39, 3, ["p4d", "pud"]), (4096, 48, 4, ["p4d"]), (16384, 36, 2, ["p4d", "pud", "pmd"]),
    (16384, 47, 3, ["p4d", "pud"]), (16384, 48, 4, ["p4d"]), (65536, 42, 2, ["p4d", "pud", "pmd"]),
    (65536, 48, 3, ["p4d", "pud"]), (65536, 52, 3, ["p4d", "pud"]),
])
def test_arm64_stage1_folding(granule, va_bits, levels, folded):
    g = stage1_geometry("arm64", {"granule": granule, "va_bits": va_bits})
    bits = granule.bit_length() - 4
    assert g["levels"] == levels == (va_bits - 4) // bits and g["folded"] == folded
    present = [lv for lv in g["per_level"] if not lv["folded"]]
    assert [lv["shift"] for lv in present] == [bits * (4 - n) + 3 for n in range(4 - levels, 4)]
    for i, lv in enumerate(g["per_level"]):
        if lv["folded"]:  # a pass-through: one entry, the parent's shift
            assert lv["entries"] == 1 and lv["shift"] == g["per_level"][i - 1]["shift"]
    pmd = 1 << (2 * (granule.bit_length() - 1) - 3)
    assert pmd in g["leaf_sizes"] and ((1 << 30) in g["leaf_sizes"]) == (granule == 4096)


def test_x86_p4d_folds_at_run_time():
    off, on = stage1_geometry("x86_64", {}), stage1_geometry("x86_64", {"la57": True})
    assert (off["levels"], off["folded"]) == (4, ["p4d"]) and (on["levels"], on["folded"]) == (5, [])
    assert [lv["shift"] for lv in on["per_level"]] == [48, 39, 30, 21, 12]


# ---- the fault protocol ----

def test_thp_backed_guest_fault_maps_a_pmd_block():
    r = run([["exec", 1, -1], ["mmap", 1, T, 2 * M, 1], ["vm_create", 0, 1, 0], ["memslot", 0, 0, 0, T, 2 * M],
             ["fault", 1, T, 1], ["guest_fault", 0, 4 * K, 1]], arch="arm64", teardown=False)
    assert [(e[4], e[3]) for e in r.events if e[1] == 14] == [(2, 0)]  # level-2 block at gpa 0


def test_incongruent_slot_demotes_to_pages():
    r = run([["exec", 1, -1], ["mmap", 1, T, 4 * M, 1], ["vm_create", 0, 1, 0],
             ["memslot", 0, 0, 4 * K, T, 2 * M], ["guest_fault", 0, 8 * K, 1]], arch="arm64", teardown=False)
    assert [e[4] for e in r.events if e[1] == 14] == [3]


def test_invalidation_forces_a_retry():
    r = run([["exec", 1, -1], ["mmap", 1, T, 2 * M, 0], ["vm_create", 0, 1, 0], ["memslot", 0, 0, 0, T, 2 * M],
             ["guest_fault_begin", 0, 0, 0, 1], ["madvise", 1, T, 4 * K, 0], ["guest_fault_commit", 0]], arch="x86_64")
    assert results(r)[-1] == -11 and kind(r) is None


def test_munmap_zaps_the_stage2():
    r = run([["exec", 1, -1], ["mmap", 1, T, 2 * M, 0], ["vm_create", 0, 1, 0], ["memslot", 0, 0, 0, T, 2 * M],
             ["guest_fault", 0, 0, 1], ["munmap", 1, T, 2 * M]], arch="arm64", teardown=False)
    assert [e for e in r.events if e[1] == 15 and e[0] == 5]


def test_exit_with_fault_in_flight_releases_after_the_install():
    # the vCPU inside KVM_RUN passed kvm_vcpu_ioctl's mm check before the exit: its commit installs; a later
    # KVM_RUN is -EIO (kvm->mm != current->mm), before any fault path runs
    ops = [["exec", 1, -1], ["mmap", 1, T, 2 * M, 0], ["vm_create", 0, 1, 0], ["memslot", 0, 0, 0, T, 2 * M],
           ["guest_fault_begin", 0, 0, 0, 1], ["exit", 1], ["guest_fault_commit", 0], ["guest_fault", 0, 0, 1]]
    for arch in ("arm64", "x86_64"):
        r = run(ops, arch=arch)
        assert results(r)[-2:] == [0, -5] and kind(r) is None


def test_ipa_bits_rules():
    r = run([["exec", 1, -1], ["vm_create", 0, 1, 49], ["vm_create", 0, 1, 32], ["memslot", 0, 0, 4 * G, T, 4 * K]],
            arch="arm64")
    assert results(r) == [0, -22, 0, -14]


@pytest.mark.parametrize("config,ipa,want", [
    ({"granule": 65536, "va_bits": 48, "pa_bits": 52}, 52, 0),   # FEAT_LPA and 64K: up to 52 bits
    ({"granule": 65536, "va_bits": 48, "pa_bits": 52}, 49, 0),
    ({"granule": 65536, "va_bits": 48}, 49, -22),                 # a 48-bit PARange host
    ({"granule": 65536, "va_bits": 48}, 48, 0),
    ({"granule": 16384, "va_bits": 48}, 49, -22),                 # capped at 48 without 64K pages
    ({"granule": 65536, "va_bits": 48, "pa_bits": 52}, 0, 0),     # 0: KVM_PHYS_SHIFT (40)
])
def test_kvm_set_ipa_limit(config, ipa, want):
    r = run([["exec", 1, -1], ["vm_create", 0, 1, ipa]], arch="arm64", config=config)
    assert results(r) == [0, want]


def test_ipa_52_stage2_takes_slots_up_to_2_52():
    cfg = {"granule": 65536, "va_bits": 48, "pa_bits": 52}
    r = run([["exec", 1, -1], ["mmap", 1, T, 2 * M, 0], ["vm_create", 0, 1, 52],
             ["memslot", 0, 0, (1 << 52) - 2 * M, T, 2 * M], ["memslot", 0, 1, 1 << 52, T, 64 * K],
             ["guest_fault", 0, (1 << 52) - 64 * K, 1]], arch="arm64", config=cfg)
    assert results(r) == [0, 0, 0, 0, -14, 0] and kind(r) is None
    g = stage2_geometry("arm64", cfg, 52)
    assert (g["levels"], g["start_level"], g["per_level"][0]["entries"]) == (3, 1, 1024)


def test_pa_bits_52_needs_64k_pages():
    from ptfuzz import trace as tracemod
    t = tracemod.Trace("arm64", tracemod.ops_from_list([["exec", 1, -1]]), config={"granule": 4096, "pa_bits": 52})
    with pytest.raises(TraceError, match="pa_bits 52 needs granule 65536"):
        tracemod.loads(tracemod.dumps(t))
    with pytest.raises(ValueError):  # the engine refuses it too
        replay(t)
    with pytest.raises(TraceError, match="va_bits 52 is not supported with granule 4096"):
        tracemod.loads(tracemod.dumps(tracemod.Trace("arm64", t.ops, config={"va_bits": 52})))


def test_52_bit_va_with_64k_pages():
    """ARM64_VA_BITS_52 (64K, FEAT_LVA): TASK_SIZE 2^52, but exec's stack stays below DEFAULT_MAP_WINDOW (2^48)."""
    cfg = {"granule": 65536, "va_bits": 52}
    r = run([["exec", 1, -1], ["mmap", 1, 1 << 50, 2 * M, 0], ["fault", 1, (1 << 50) + 64 * K, 1],
             ["mmap", 1, (1 << 52) - 1024 * M, 512 * M, 1], ["fault", 1, (1 << 52) - 1024 * M, 1],
             ["mmap", 1, 1 << 52, 64 * K, 0]], arch="arm64", config=cfg, teardown=False)
    assert results(r) == [0, 0, 0, 0, 0, -12] and kind(r) is None
    probes = np.array([(1, (1 << 48) - 64 * K), (1, (1 << 50) + 64 * K)], dtype=np.uint64)
    got = replay(Trace("arm64", ops_from_list([["exec", 1, -1], ["mmap", 1, 1 << 50, 2 * M, 0],
                                               ["fault", 1, (1 << 50) + 64 * K, 1]]), config=cfg),
                 teardown=False, probes=probes).translations
    assert (got != (1 << 64) - 1).all()  # the argument page below 2^48, and a page above 2^48

# ---- memslots: __kvm_set_memory_region and kvm_set_memslot, in the kernel's order ----

S2_LEAF, S2_ZAP = 14, 15


def zaps(r, op_index):
    return [e for e in r.events if e[1] == S2_ZAP and e[0] == op_index]


IPA40 = 1 << 40
MEMSLOT_ROWS = [  # (operation, arm64 result, x86_64 result, why)
    (["memslot", 0, 0, 0, T, 2 * M], 0, 0, "create"),
    (["memslot", 0, 1, M, T + 2 * M, 2 * M], -17, -17, "a new slot overlapping another in gpa"),
    (["memslot", 0, 1, 4 * M, T, 2 * M], 0, 0, "two slots may share an hva"),
    (["memslot", 0, 0, 0, T, 2 * M], 0, 0, "identical: nothing to change"),
    (["memslot", 0, 0, 0, T + 4 * K, 2 * M], -22, -22, "a slot's hva never changes"),
    (["memslot", 0, 0, 0, T, 4 * M], -22, -22, "nor its size"),
    (["memslot", 0, 0, 4 * M, T + 4 * K, 2 * M], -22, -22, "the modify check comes before the overlap check"),
    (["memslot", 0, 0, 4 * M, T, 2 * M], -17, -17, "a move is checked for overlap"),
    (["memslot", 0, 0, 8 * M, T, 2 * M], 0, 0, "a new gpa only: the slot moves"),
    (["memslot", 0, 2, 0, 0, 0], -22, -22, "deleting a missing slot"),
    (["memslot", 0, 2, 2 * K, T, 4 * K], -22, -22, "gpa not page aligned"),
    (["memslot", 0, 2, 0, T + 2 * K, 4 * K], -22, -22, "hva not page aligned"),
    (["memslot", 0, 2, 0, 0, 0], -22, -22, "a delete is checked as well"),
    (["memslot", 0, 2, 0, (1 << 48) - 4 * K, 8 * K], -22, 0,
     "access_ok: arm64 (u65)hva + len <= TASK_SIZE_MAX; x86 only the end below 2^63, no TASK_SIZE test"),
    (["memslot", 0, 8, 16 * M, (1 << 63) - 4 * K, 4 * K], -22, -22, "x86 access_ok: an end at 2^63 is a kernel address"),
    (["memslot", 0, 1, 0, 0, 0], 0, 0, "delete"),
    (["memslot", 0, 3, IPA40 - 2 * M, T, 2 * M], 0, 0, "the last 2M of a 40-bit IPA space"),
    (["memslot", 0, 4, IPA40, T, 2 * M], -14, 0, "arm64: beyond kvm_phys_size; x86: below 2^48"),
    (["memslot", 0, 5, IPA40 - 2 * M, T, 4 * M], -17, -17, "overlap comes before the arch check"),
    (["memslot", 0, 6, (1 << 48) - 2 * M, T, 4 * M], -14, -22, "x86: beyond kvm_mmu_max_gfn"),
    (["memslot", 7, 0, 0, T, 2 * M], -2, -2, "no such VM"),
]


@pytest.mark.parametrize("arch", ["arm64", "x86_64"])
def test_memslot_rules(arch):
    """__kvm_set_memory_region: sanity checks, delete / create / modify / move, overlap (-17), then
    kvm_arch_prepare_memory_region; each row's result, in the kernel's order."""
    col = 1 if arch == "arm64" else 2
    ops = [["exec", 1, -1], ["mmap", 1, T, 8 * M, 0], ["vm_create", 0, 1, 0]] + [row[0] for row in MEMSLOT_ROWS]
    got = results(run(ops, arch=arch))[3:]
    for row, result in zip(MEMSLOT_ROWS, got):
        assert result == row[col], (row[3], row[0], result)


def test_identical_slot_zaps_nothing_a_move_zaps_the_old_range():
    ops = [["exec", 1, -1], ["mmap", 1, T, 4 * M, 0], ["vm_create", 0, 1, 0], ["memslot", 0, 0, 0, T, 2 * M],
           ["memslot", 0, 1, 64 * M, T + 2 * M, 2 * M], ["guest_fault", 0, 0, 1], ["guest_fault", 0, 64 * M, 1],
           ["memslot", 0, 0, 0, T, 2 * M], ["memslot", 0, 0, 4 * M, T, 2 * M], ["guest_fault", 0, 4 * M, 1]]
    r = run(ops, arch="arm64", teardown=False)
    assert results(r) == [0] * 10 and kind(r) is None
    assert zaps(r, 7) == []
    assert [e[3] for e in zaps(r, 8)] == [0]  # arm64 unmap_stage2_range of the old slot only
    # x86 v6.6 kvm_arch_flush_shadow_memslot is kvm_mmu_zap_all_fast: the other slot's SPTE goes too
    r = run(ops, arch="x86_64", teardown=False)
    assert results(r) == [0] * 10 and kind(r) is None
    assert sorted(e[3] for e in zaps(r, 8)) == [0, 64 * M]


def test_a_move_that_fails_the_arch_check_has_zapped_the_old_range():
    """kvm_set_memslot invalidates the old slot (kvm_invalidate_memslot -> kvm_arch_flush_shadow_memslot) before
    kvm_prepare_memory_region; when that fails the old slot is reactivated, its mappings gone."""
    ops = [["exec", 1, -1], ["mmap", 1, T, 2 * M, 0], ["vm_create", 0, 1, 0], ["memslot", 0, 0, 0, T, 2 * M],
           ["guest_fault", 0, 0, 1], ["memslot", 0, 0, IPA40, T, 2 * M], ["guest_fault", 0, 0, 1]]
    r = run(ops, arch="arm64", teardown=False)
    assert results(r) == [0, 0, 0, 0, 0, -14, 0] and kind(r) is None
    assert [e[3] for e in zaps(r, 5)] == [0]
    assert [e[3] for e in r.events if e[1] == S2_LEAF and e[0] == 6] == [0]  # the slot is still at gpa 0


def test_memslot_update_waits_for_a_fault_in_flight_after_its_checks():
    ops = [["exec", 1, -1], ["mmap", 1, T, 2 * M, 0], ["vm_create", 0, 1, 0], ["memslot", 0, 0, 0, T, 2 * M],
           ["guest_fault_begin", 0, 0, 0, 1], ["memslot", 0, 1, 4 * M, T, 2 * M], ["memslot", 0, 1, 0, 0, 0],
           ["memslot", 0, 0, 0, T, 2 * M], ["memslot", 0, 0, 0, 0, 0], ["memslot", 0, 2, IPA40, T, 2 * M],
           ["guest_fault_commit", 0], ["memslot", 0, 0, 0, 0, 0]]
    assert results(run(ops, arch="arm64"))[5:] == [-16, -22, 0, -16, -14, 0, 0]


# ---- the invalidation window: inval_hold stops a host change between invalidate_range_start and _end ----

def vm_state(ops, arch, n=None, knobs=None):
    t = Trace(arch, ops_from_list(ops), knobs=dict(knobs or {}))
    return dump_state(t, None, len(ops) if n is None else n)["state"]


SLOT64K = [["exec", 1, -1], ["mmap", 1, T, 2 * M, 0], ["vm_create", 0, 1, 0], ["memslot", 0, 0, 0, T, 64 * K]]
# U14 (arm64) / U15 (x86_64): the fault snapshots the sequence and faults the page in; munmap runs its
# invalidate_range_start (zap, in_progress++) and frees the page, and stops before _end; the commit inside the
# window sees an unchanged sequence. A 64K slot holds no PMD block: no THP walk at commit.
U14 = SLOT64K + [["guest_fault_begin", 0, 0, 0, 1], ["inval_hold", 1], ["munmap", 1, T, 2 * M],
                 ["guest_fault_commit", 0], ["inval_end", 1]]


@pytest.mark.parametrize("arch", ["arm64", "x86_64"])
def test_commit_inside_the_window(arch):
    r = run(U14, {"kvm.invalidate_retry": "seq-only"}, arch=arch)
    assert kind(r) == "stage2-stale" and r.violation.op_index == 7
    r = run(U14, arch=arch)  # mmu_invalidate_retry / _hva: in_progress and the fault's hva in the range
    assert results(r) == [0, 0, 0, 0, 0, 0, 0, -11, 0] and kind(r) is None
    # the same race without the window is caught by the sequence alone: seq-only is safe there
    no_window = [op for op in U14 if op[0] not in ("inval_hold", "inval_end")]
    r = run(no_window, {"kvm.invalidate_retry": "seq-only"}, arch=arch)
    assert results(r)[-1] == -11 and kind(r) is None


def test_x86_retry_is_range_restricted():
    """is_page_fault_stale -> mmu_invalidate_retry_hva: an open invalidation elsewhere does not make x86 retry;
    arm64's mmu_invalidate_retry retries on any open invalidation. Both retry once it has ended (seq)."""
    ops = SLOT64K + [["guest_fault_begin", 0, 0, 32 * K, 1], ["inval_hold", 1], ["madvise", 1, T, 4 * K, 0],
                     ["guest_fault_commit", 0], ["guest_fault_begin", 0, 0, 32 * K, 1], ["inval_end", 1],
                     ["guest_fault_commit", 0]]
    assert results(run(ops, arch="x86_64"))[4:] == [0, 0, 0, 0, 0, 0, -11]
    assert results(run(ops, arch="arm64"))[4:] == [0, 0, 0, -11, 0, 0, -11]
    # the range is the hva range of every open invalidation: a second window widens it
    ops = SLOT64K + [["inval_hold", 1], ["inval_hold", 2], ["madvise", 1, T, 4 * K, 0],
                     ["madvise", 1, T + 48 * K, 4 * K, 0], ["guest_fault_begin", 0, 0, 32 * K, 1],
                     ["guest_fault_commit", 0], ["inval_end", 1], ["guest_fault", 0, 32 * K, 1]]
    r = run(ops, arch="x86_64")
    assert results(r)[4:] == [0, 0, 0, 0, 0, -11, 0, -11]
    st = vm_state(ops, "x86_64", 8)["vms"][0]
    assert (st["invalidate_in_progress"], st["invalidate_range"]) == (2, (T, T + 52 * K))


def test_begin_and_end_only_for_vms_with_an_overlapping_memslot():
    """__kvm_handle_hva_range calls on_lock (kvm_mmu_invalidate_begin / _end) only when a memslot overlaps the
    range: a munmap elsewhere changes neither mmu_invalidate_seq nor in_progress, and a fault across it commits."""
    ops = SLOT64K + [["mmap", 1, T + 4 * M, 2 * M, 0], ["fault", 1, T + 4 * M, 1],
                     ["guest_fault_begin", 0, 0, 0, 1], ["munmap", 1, T + 4 * M, 2 * M], ["guest_fault_commit", 0],
                     ["munmap", 1, T + 4 * K, 4 * K]]
    for arch in ("arm64", "x86_64"):
        assert results(run(ops, arch=arch))[6:] == [0, 0, 0, 0]
        assert vm_state(ops, arch, 9)["vms"][0]["invalidate_seq"] == 0
        # the last munmap splits the VMA inside the block [T, T + 2M): __split_huge_pmd notifies the block (no THP
        # there, nothing split), then the unmap notifies its page; both overlap the slot
        assert vm_state(ops, arch)["vms"][0]["invalidate_seq"] == 2
    # mn_active_invalidate_count is taken for every VM of the mm, overlapping or not: memslot updates wait
    held = SLOT64K + [["mmap", 1, T + 4 * M, 2 * M, 0], ["inval_hold", 1], ["munmap", 1, T + 4 * M, 2 * M]]
    st = vm_state(held, "arm64")["vms"][0]
    assert (st["invalidate_in_progress"], st["mn_active_invalidate_count"]) == (0, 1)
    assert results(run(held + [["memslot", 0, 1, 4 * M, T, 64 * K]], arch="arm64"))[-1] == -16


def test_what_waits_for_the_window():
    """kvm_swap_active_memslots waits for mn_active_invalidate_count (-16, after the memslot checks); the stopped
    thread keeps its mm from exit_mmap (-16); vm_destroy does not wait (kvm_destroy_vm unregisters and forgets
    the count); after inval_end everything goes on."""
    ops = SLOT64K + [["inval_hold", 1], ["madvise", 1, T, 4 * K, 0], ["memslot", 0, 1, 4 * M, T, 64 * K],
                     ["memslot", 0, 1, 0, 0, 0], ["memslot", 0, 0, 0, T, 64 * K], ["exit", 1], ["inval_end", 1],
                     ["memslot", 0, 1, 4 * M, T, 64 * K], ["exit", 1]]
    for arch in ("arm64", "x86_64"):
        r = run(ops, arch=arch)
        assert results(r)[4:] == [0, 0, -16, -22, 0, -16, 0, 0, 0] and kind(r) is None
    # a VM of the held mm cannot be created meanwhile (mmu_notifier_register takes mmap_lock for write, the
    # stopped MADV_DONTNEED holds it for read); another process's VM in the destroyed one's place can
    ops = SLOT64K + [["exec", 2, -1], ["mmap", 2, T, 2 * M, 0], ["inval_hold", 1], ["madvise", 1, T, 4 * K, 0],
                     ["vm_create", 1, 1, 0], ["vm_destroy", 0], ["vm_create", 0, 2, 0], ["memslot", 0, 0, 0, T, 64 * K],
                     ["inval_end", 1], ["guest_fault", 0, 0, 1]]
    r = run(ops, arch="arm64")
    assert results(r)[4:] == [0, 0, 0, 0, -16, 0, 0, 0, 0, 0] and kind(r) is None
    st = vm_state(ops, "arm64")["vms"][0]  # the new VM got nothing of the old one's pending end
    assert (st["invalidate_seq"], st["invalidate_in_progress"], st["mn_active_invalidate_count"]) == (0, 0, 0)


def test_inval_hold_and_end_results():
    ops = SLOT64K + [["inval_hold", 1], ["inval_hold", 1], ["guest_fault_begin", 1, 0, 0, 1], ["walk_begin", 1, 1, T],
                     ["inval_end", 2], ["mmap", 1, T + 4 * M, 2 * M, 0], ["fault", 1, T + 4 * M, 1],
                     ["inval_end", 1], ["inval_hold", 1], ["munmap", 1, T + 4 * M, 2 * M]]
    r = run(ops, arch="arm64")
    # busy cpu -16; an idle cpu holds nothing -22; mmap and a fault notify no VM: the hold stays armed and
    # inval_end cancels it; at the end of the trace a held window ends and teardown is clean
    assert results(r)[4:] == [0, -16, -16, -16, -22, 0, 0, 0, 0, 0] and kind(r) is None
    assert vm_state(ops, "arm64", 11)["cpus"][0]["held"] is False
    assert vm_state(ops, "arm64")["cpus"][0]["held"] is True
    assert results(run([["inval_hold", 0], ["inval_end", 0]], arch="s390")) == [-38, -22]


def test_a_held_operation_defers_every_end_it_makes():
    """fork's COW notifications of the parent (one per VMA with an anon_vma: the two mappings and the exec
    stack) all wait on the cpu that stopped the fork; the stack's overlaps no memslot (no begin)."""
    ops = [["exec", 1, -1], ["mmap", 1, T, 2 * M, 0], ["mmap", 1, T + 4 * M, 2 * M, 0], ["fault", 1, T, 1],
           ["fault", 1, T + 4 * M, 1], ["vm_create", 0, 1, 0], ["memslot", 0, 0, 0, T, 8 * M],
           ["inval_hold", 3], ["fork", 1, 2]]
    st = vm_state(ops, "x86_64")
    assert st["cpus"][0]["pending_ends"] == [(0, 2, 3)]  # (vm, kvm_mmu_invalidate_begin, range_start calls)
    assert (st["vms"][0]["invalidate_in_progress"], st["vms"][0]["invalidate_range"]) == (2, (T, T + 6 * M))


def test_invalidate_retry_knob():
    k = KNOB_BY_NAME["kvm.invalidate_retry"]
    assert k.values == ("seq", "none", "seq-only") and k.default("arm64") == k.default("x86_64") == "seq"
    assert k.default("s390") is None


def test_generators_open_invalidation_windows():
    """fuzzgen and gen emit inval_hold / inval_end on arm64 and x86_64 (never on s390), and the holds take."""
    from ptfuzz.search.fuzzgen import RandomChoices, fuzz_trace
    hold, end = OP_NUMBER["inval_hold"], OP_NUMBER["inval_end"]
    for arch in ("arm64", "x86_64", "s390"):
        traces = [fuzz_trace(arch, RandomChoices(i), 64, {}, {}) for i in range(300)]
        traces += [generate(arch, 300, seed) for seed in range(5)]
        ops = np.concatenate([t.ops[:, 0] for t in traces])
        if arch == "s390":
            assert not np.isin(ops, [hold, end]).any()
            continue
        assert (ops == hold).sum() > 20 and (ops == end).sum() > 5
        results_of_holds = [int(res) for t in traces if (t.ops[:, 0] == hold).any()
                            for res, code in zip(replay(t, steps=True).op_results, t.ops[:, 0]) if code == hold]
        assert results_of_holds.count(0) > 20


def test_show_draws_the_held_window_and_names_its_path():
    from ptfuzz.report.show import build_report, kernel_path
    from ptfuzz import trace as tracemod
    from conftest import ROOT
    t = tracemod.load(ROOT / "corpus" / "regressions" / "x86_64" / "stage2-stale-u15.msgpack")
    page = build_report(t)
    assert "cpu 1 holds invalidate_range_end" in page and "inval_hold(1)" in page  # the window, drawn at the VM
    assert kernel_path("x86_64", t.ops[5], [])[0] == "mmu_notifier_invalidate_range_start"
    assert "mmu_invalidate_seq only" in " ".join(kernel_path("x86_64", t.ops[7], [], None,
                                                             {"kvm.invalidate_retry": "seq-only"}))


# ---- each arm64/x86 detector: a trace that must trigger it, and its safe twin ----

U9 = [["exec", 1, -1], ["mmap", 1, T, 2 * M, 0], ["vm_create", 0, 1, 0], ["memslot", 0, 0, 0, T, 64 * K],
      ["guest_fault_begin", 0, 0, 0, 1], ["munmap", 1, T, 2 * M], ["guest_fault_commit", 0]]
U10 = [["exec", 1, -1], ["mmap", 1, T, 2 * M, 0], ["vm_create", 0, 1, 0], ["memslot", 0, 0, 0, T, 2 * M],
       ["guest_fault_begin", 0, 0, 0, 1], ["exit", 1], ["guest_fault_commit", 0]]
U7 = [["exec", 1, -1], ["mmap", 1, T, G, 4], ["vm_create", 0, 1, 32], ["memslot", 0, 0, 0, T, G], ["guest_fault", 0, 0, 1]]
U8 = [["exec", 1, -1], ["mmap", 1, T, 2 * M, 0], ["fault", 1, T, 1], ["madvise", 1, T, 2 * M, 1],
      ["vm_create", 0, 1, 0], ["memslot", 0, 0, 0, T, 2 * M], ["guest_fault", 0, 0, 1]]
# U6 as docs/bench.md writes it (mm.pmd_recheck=no alone) cannot lose an update in v6.6: the collapse that would swap
# the table out from under the walker finds the walker's folio off the LRU (-11) and takes the anon_vma lock the
# walker holds. PT reclaim frees the table with neither lock: that is the shape that needs the recheck.
U6 = [["exec", 1, -1], ["mmap", 1, T, 2 * M, 0], ["fault", 1, T, 1], ["rmap_begin", 0, 1, T],
      ["madvise", 1, T, 2 * M, 0], ["rmap_commit", 0]]
U6_V66 = [["exec", 1, -1], ["mmap", 1, T, 2 * M, 1], ["madvise", 1, T, 2 * M, 2], ["fault", 1, T, 1],
          ["madvise", 1, T, 2 * M, 1], ["rmap_begin", 0, 1, T], ["madvise", 1, T, 2 * M, 3], ["rmap_commit", 0]]
WALK = [["exec", 1, -1], ["mmap", 1, T, M, 0], ["fault", 1, T, 1], ["walk_begin", 0, 1, T], ["walk_step", 0],
        ["walk_step", 0], ["munmap", 1, T, M], ["walk_step", 0]]

DETECTORS = [
    ("arm64", "lost-update", U6, {"mm.pmd_recheck": "no", "mm.pt_reclaim": "yes"}, {"mm.pt_reclaim": "yes"}),
    ("arm64", "lost-update", U6, {"mm.pmd_recheck": "no", "mm.pt_reclaim": "yes"}, {"mm.pmd_recheck": "no"}),
    ("arm64", None, U6_V66, {"mm.pmd_recheck": "no"}, {}),
    ("arm64", "stage2-block-illegal", U7, {"arm64.stage2_block_check": "none"}, {"arm64.stage2_block_check": "has-pmd"}),
    ("arm64", "stage2-block-illegal", U7, {"arm64.stage2_block_check": "none"}, {"arm64.stage2_block_check": "has-pud"}),
    ("arm64", "stage2-block-illegal", U7, {"arm64.stage2_block_check": "none"},
     {"arm64.stage2_block_check": "can-map-block-size"}),
    ("arm64", "stage2-block-illegal", U7, {"arm64.stage2_block_check": "none"}, {}),  # pgtable: 512 level-2 blocks
    ("arm64", "stage2-oversize", U8, {"arm64.thp_size": "vma-naive"}, {}),
    ("arm64", "stage2-stale", U9, {"kvm.invalidate_retry": "none"}, {}),
    ("arm64", "stage2-after-release", U10, {"kvm.fault_holds_mm": "no"}, {}),
    ("arm64", "stage2-after-release", U10, {"kvm.fault_holds_mm": "no"},
     {"kvm.fault_holds_mm": "no", "kvm.release_check": "root"}),
    ("arm64", "uaf-table", WALK, {"mm.table_free": "immediate"}, {}),
    ("x86_64", "stage2-stale", U9, {"kvm.invalidate_retry": "none"}, {}),
    ("x86_64", "uaf-table", WALK, {"mm.table_free": "immediate"}, {}),
    ("x86_64", "lost-update", U6, {"mm.pmd_recheck": "no", "mm.pt_reclaim": "yes"}, {"mm.pt_reclaim": "yes"}),
    ("x86_64", None, U6_V66, {"mm.pmd_recheck": "no"}, {}),
    # U13: x86 release zaps every SPTE but keeps the root valid, so the fault that began before exit_mmap installs
    # the page exit_mmap freed (v1 had a "stale-root check" here that v6.6 does not have)
    ("x86_64", "stage2-stale", U10, {"kvm.fault_holds_mm": "no"}, {}),
    ("x86_64", "stage2-stale", U10, {"kvm.fault_holds_mm": "no"},
     {"kvm.fault_holds_mm": "no", "kvm.release_check": "root"}),
]


@pytest.mark.parametrize("arch,want,ops,bad,safe", DETECTORS,
                         ids=[f"{d[0]}-{d[1]}-{i}" for i, d in enumerate(DETECTORS)])
def test_detector_and_safe_twin(arch, want, ops, bad, safe):
    r = run(ops, bad, arch=arch)
    assert kind(r) == want, r.violation
    assert kind(run(ops, safe, arch=arch)) is None


def test_knob_defaults_match_model_md():
    rc, bc = KNOB_BY_NAME["kvm.release_check"], KNOB_BY_NAME["arm64.stage2_block_check"]
    assert rc.values == ("none", "root") and rc.default("arm64") == rc.default("x86_64") == "none"
    assert bc.values == ("pgtable", "can-map-block-size", "has-pmd", "has-pud", "none")
    assert bc.default("arm64") == "pgtable" and bc.arches == ["arm64"]


@pytest.mark.parametrize("arch", ["arm64", "x86_64"])
def test_release_check_root_retries_the_fault_after_exit_mmap(arch):
    r = run(U10, {"kvm.fault_holds_mm": "no", "kvm.release_check": "root"}, arch=arch)
    assert results(r)[-1] == -11 and kind(r) is None


def s2_state(ops, arch, knobs=None, config=None):
    from ptfuzz.report.show import dump_state
    t = Trace(arch, ops_from_list(ops), knobs=dict(knobs or {}), config=dict(config or {}))
    return dump_state(t, None, len(ops))["state"]["vms"]


NO_MM = 2 ** 64 - 1  # the owner field of a stage-2 table's events


def s2_events(r, op, kind_, tables=None):
    """Events of one type at one op that concern stage-2 tables: EV_TABLE_ALLOC/FREE carry (level, table, owner),
    EV_TABLE_RCU/EV_RCU_RUN (table, kind)."""
    tables = tables if tables is not None else {e[3] for e in r.events if e[1] == 0 and e[4] == NO_MM}
    out = []
    for e in r.events:
        if e[0] != op or e[1] != kind_:
            continue
        if kind_ in (0, 1) and e[4] == NO_MM:
            out.append((e[2], e[3]))
        elif kind_ in (2, 4) and e[2] in tables:
            out.append(e[2])
    return out


def test_release_at_exit_mmap_arm64_frees_the_stage2_x86_zaps_and_keeps_the_root():
    ops = [["exec", 1, -1], ["mmap", 1, T, 4 * M, 0], ["vm_create", 0, 1, 0], ["memslot", 0, 0, 0, T, 4 * M],
           ["guest_fault", 0, 0, 1], ["guest_fault", 0, 2 * M, 1], ["exit", 1]]
    ex = len(ops) - 1
    arm = run(ops, arch="arm64", teardown=False)
    arm_root = s2_events(arm, 2, 0)[0][1]
    assert s2_events(arm, ex, 1)[-1][1] == arm_root and not s2_events(arm, ex, 2)  # freed at once, root last
    x86 = run(ops, arch="x86_64", teardown=False)
    root = s2_events(x86, 2, 0)[0][1]
    zapped = [e for e in x86.events if e[0] == ex and e[1] == 15]
    rcu = s2_events(x86, ex, 2)
    assert len(zapped) == 2 and len(rcu) == 4 and not s2_events(x86, ex, 1)  # PUD, PMD, 2 PTE tables: RCU
    assert root not in rcu
    vm = s2_state(ops, "x86_64")[0]
    assert vm["root"] == root and not vm["root_freed"]  # the root stays valid
    assert s2_state(ops, "arm64")[0]["root"] is None


def test_release_does_not_bump_the_invalidation_sequence():
    ops = [["exec", 1, -1], ["mmap", 1, T, 2 * M, 0], ["vm_create", 0, 1, 0], ["memslot", 0, 0, 0, T, 2 * M],
           ["guest_fault", 0, 0, 1]]
    for arch in ("arm64", "x86_64"):
        before = s2_state(ops, arch)[0]["invalidate_seq"]
        assert s2_state(ops + [["exit", 1]], arch)[0]["invalidate_seq"] == before


def test_empty_host_entry_at_commit_x86_maps_4k_arm64_replays():
    # DONTNEED between the host fault and the install, with the retry check off: x86's host_pfn_mapping_level
    # says 4K and the stale page is installed; arm64's get_user_mapping_size finds the PTE gone and replays
    ops = [["exec", 1, -1], ["mmap", 1, T, 2 * M, 0], ["vm_create", 0, 1, 0], ["memslot", 0, 0, 0, T, 2 * M],
           ["guest_fault_begin", 0, 0, 0, 1], ["madvise", 1, T, 2 * M, 0], ["guest_fault_commit", 0]]
    arm = run(ops, {"kvm.invalidate_retry": "none"}, arch="arm64")
    assert results(arm)[-1] == -11 and kind(arm) is None
    x86 = run(ops, {"kvm.invalidate_retry": "none"}, arch="x86_64")
    assert kind(x86) == "stage2-stale" and "a 0x1000-byte leaf" in x86.violation.message


def test_x86_sizes_a_hugetlb_candidate_from_the_host_walk():
    # U13 on hugetlb: the VMA says 2M, but at commit the host maps nothing there: x86 sizes from the host walk (4K)
    ops = [["exec", 1, -1], ["mmap", 1, T, 2 * M, 2], ["vm_create", 0, 1, 0], ["memslot", 0, 0, 0, T, 2 * M],
           ["guest_fault_begin", 0, 0, 4 * K, 1], ["exit", 1], ["guest_fault_commit", 0]]
    x86 = run(ops, {"kvm.fault_holds_mm": "no"}, arch="x86_64")
    assert kind(x86) == "stage2-stale" and "a 0x1000-byte leaf" in x86.violation.message
    ok = run(ops[:5] + [["guest_fault_commit", 0]], arch="x86_64", teardown=False)
    assert [(e[3], e[4]) for e in ok.events if e[1] == 14] == [(0, 2)]


def test_block_replaces_the_stage2_table_x86_frees_it_through_rcu():
    # a 4K guest fault, then the host collapses the block: the notifier zaps the 4K leaf, x86 keeps its PTE table
    # (tdp_mmu_zap_leafs); the next fault maps the THP as a 2M leaf over that table, which goes through RCU
    ops = [["exec", 1, -1], ["mmap", 1, T, 2 * M, 0], ["fault", 1, T, 1], ["vm_create", 0, 1, 0],
           ["memslot", 0, 0, 0, T, 2 * M], ["guest_fault", 0, 4 * K, 1], ["madvise", 1, T, 2 * M, 3],
           ["guest_fault", 0, 8 * K, 1], ["rcu_gp"]]
    r = run(ops, arch="x86_64", teardown=False)
    assert results(r) == [0] * len(ops) and kind(r) is None
    pte_table = next(t for lv, t in s2_events(r, 5, 0) if lv == 3)
    assert [(e[3], e[4]) for e in r.events if e[0] == 7 and e[1] == 14] == [(0, 2)]
    assert s2_events(r, 7, 2) == [pte_table] and s2_events(r, 8, 4) == [pte_table]  # call_rcu, then the GP
    assert not s2_events(r, 6, 1) and not s2_events(r, 7, 1)  # neither the zap nor the map freed it at once


def test_arm64_unmap_frees_the_tables_it_empties():
    # the same trace on arm64: stage2_unmap_walker frees the emptied PTE table at once, and the 2M block then
    # goes into an empty level-2 entry
    ops = [["exec", 1, -1], ["mmap", 1, T, 2 * M, 0], ["fault", 1, T, 1], ["vm_create", 0, 1, 0],
           ["memslot", 0, 0, 0, T, 2 * M], ["guest_fault", 0, 4 * K, 1], ["madvise", 1, T, 2 * M, 3],
           ["guest_fault", 0, 8 * K, 1]]
    r = run(ops, arch="arm64", teardown=False)
    assert kind(r) is None
    allocs = s2_events(r, 5, 0)
    assert [lv for lv, _ in allocs] == [2, 3]  # ipa 40: the root is level 1
    assert s2_events(r, 6, 1) == [(3, allocs[1][1]), (2, allocs[0][1])]  # the PTE table, then the one it empties
    assert not s2_events(r, 6, 2)
    assert [(e[3], e[4]) for e in r.events if e[0] == 7 and e[1] == 14] == [(0, 2)]


def test_x86_unmap_keeps_tables_until_vm_destroy():
    ops = [["exec", 1, -1], ["mmap", 1, T, 2 * M, 0], ["vm_create", 0, 1, 0], ["memslot", 0, 0, 0, T, 2 * M],
           ["guest_fault", 0, 0, 1], ["munmap", 1, T, 2 * M], ["vm_destroy", 0]]
    r = run(ops, arch="x86_64", teardown=False)
    assert [e for e in r.events if e[0] == 5 and e[1] == 15]  # the leaf is zapped
    assert not s2_events(r, 5, 1) and not s2_events(r, 5, 2)
    assert len(s2_events(r, 6, 1)) == 4  # PTE, PMD, PUD tables and the root


def test_x86_1g_block_over_a_two_level_subtree_frees_it_through_rcu():
    # 4K leaves under a 1G range (host 4K pages), then the host maps a 1G hugetlb page there: the 1G leaf replaces
    # the PMD table, whose PTE table goes with it (handle_removed_pt recurses)
    ops = [["exec", 1, -1], ["mmap", 1, 2 * G, G, 0], ["vm_create", 0, 1, 0], ["memslot", 0, 0, 0, 2 * G, G],
           ["guest_fault", 0, 4 * K, 1], ["munmap", 1, 2 * G, G], ["mmap", 1, 2 * G, G, 4],
           ["guest_fault", 0, 8 * K, 1], ["rcu_gp"]]
    r = run(ops, arch="x86_64", teardown=False)
    assert kind(r) is None and results(r) == [0] * len(ops)
    allocs = s2_events(r, 4, 0)
    assert [lv for lv, _ in allocs] == [1, 2, 3]
    assert [(e[3], e[4]) for e in r.events if e[0] == 7 and e[1] == 14] == [(0, 1)]
    assert sorted(s2_events(r, 7, 2)) == sorted(t for _, t in allocs[1:])
    assert sorted(s2_events(r, 8, 4)) == sorted(t for _, t in allocs[1:])


def test_identical_leaf_stops_and_a_write_upgrades_it():
    ops = [["exec", 1, -1], ["mmap", 1, T, 64 * K, 0], ["fault", 1, T, 1], ["vm_create", 0, 1, 0],
           ["memslot", 0, 0, 0, T, 64 * K], ["guest_fault", 0, 0, 0], ["guest_fault", 0, 0, 0],
           ["guest_fault", 0, 0, 1], ["guest_fault", 0, 0, 1]]
    for arch in ("arm64", "x86_64"):
        r = run(ops, arch=arch, teardown=False)
        assert kind(r) is None and results(r) == [0] * len(ops)
        leaves = [(e[0], e[5]) for e in r.events if e[1] == 14]
        assert [op for op, _ in leaves] == [5, 7] and len({pfn for _, pfn in leaves}) == 1


def test_pgtable_maps_a_pud_candidate_with_the_blocks_each_level_allows():
    """v6.6 user_mem_abort has no stage-2 level test: kvm_pgtable_stage2_map gets [ipa, ipa + 1G)."""
    r = run(U7, arch="arm64", teardown=False)  # ipa 32: two levels from level 2
    assert kind(r) is None
    leaves = [(e[3], e[4], e[5]) for e in r.events if e[1] == 14]
    assert len(leaves) == 512 and {lv for _, lv, _ in leaves} == {2}
    assert [g for g, _, _ in leaves] == [i * 2 * M for i in range(512)]
    assert [p - leaves[0][2] for _, _, p in leaves] == [i * 512 for i in range(512)]
    ops = [["exec", 1, -1], ["mmap", 1, T, G, 4], ["vm_create", 0, 1, 40], ["memslot", 0, 0, G, T, G],
           ["guest_fault", 0, G + 5 * M, 1]]
    r = run(ops, arch="arm64", teardown=False)  # ipa 40: three levels from level 1, a level-1 block
    assert [(e[3], e[4]) for e in r.events if e[1] == 14] == [(G, 1)]
    r = run(U7, {"arm64.stage2_block_check": "can-map-block-size"}, arch="arm64", teardown=False)
    assert [(e[3], e[4]) for e in r.events if e[1] == 14] == [(0, 2)]  # the 2019 helper: one PMD block


def test_pgtable_with_16k_pages_has_no_level_1_blocks():
    # KVM_PGTABLE_MIN_BLOCK_LEVEL is 2 with 16K/64K pages: a 32M THP is one level-2 block
    cfg = {"granule": 16384, "va_bits": 47}
    ops = [["exec", 1, -1], ["mmap", 1, T, 64 * M, 1], ["fault", 1, T, 1], ["vm_create", 0, 1, 40],
           ["memslot", 0, 0, 0, T, 64 * M], ["guest_fault", 0, 16 * K, 1]]
    r = run(ops, arch="arm64", config=cfg, teardown=False)
    assert kind(r) is None and [(e[3], e[4]) for e in r.events if e[1] == 14] == [(0, 2)]


# ---- differential checks that need no second implementation ----

def translate_all(trace, probes):
    r = replay(trace, teardown=False, probes=probes)
    assert r.violation is None
    return r.translations


def probes_for(trace, page):
    pids = range(8)
    addrs = sorted({int(row[2]) & ~(page - 1) for row in trace.ops if int(row[0]) in (4, 7)})
    return np.array([(p, a + off) for p in pids for a in addrs for off in (0, page, 5 * page)], dtype=np.uint64)


@pytest.mark.parametrize("seed", range(6))
def test_x86_la57_translates_like_4_levels(seed):
    off = generate("x86_64", 400, seed)
    on = generate("x86_64", 400, seed, config={"la57": True})
    probes = probes_for(off, 4096)
    a, b = translate_all(off, probes), translate_all(on, probes)
    assert (a != (1 << 64) - 1).any()
    assert np.array_equal(a, b)


@pytest.mark.parametrize("seed", range(6))
def test_arm64_39_and_48_bit_translate_alike(seed):
    t48 = generate("arm64", 400, seed, config={"va_bits": 48})
    t39 = generate("arm64", 400, seed, config={"va_bits": 39})
    probes = probes_for(t48, 4096)
    a, b = translate_all(t48, probes), translate_all(t39, probes)
    assert (a != (1 << 64) - 1).any()
    assert np.array_equal(a, b)


@pytest.mark.parametrize("arch,config", [("arm64", {}), ("arm64", {"granule": 16384, "va_bits": 47}),
                                         ("arm64", {"granule": 65536, "va_bits": 48}), ("x86_64", {}),
                                         ("x86_64", {"la57": True})])
def test_safe_workloads_stay_coherent(arch, config):
    """The coherence oracle runs after every trace: random workloads under default knobs never trip it."""
    for seed in range(40):
        r = replay(generate(arch, 300, seed, config=config))
        assert r.violation is None, (seed, r.violation)


# ---- round-3 corners (issue 16): each as v6.6 has it ----

def test_memslot_access_ok_is_the_arch_s():
    """__kvm_set_memory_region's access_ok(userspace_addr, memory_size): x86_64 __access_ok is
    valid_user_address(hva + len) and no wrap (the end below 2^63, no TASK_SIZE test); arm64 the asm-generic one,
    (u65)hva + len <= TASK_SIZE_MAX = 2^VA_BITS. A slot above TASK_SIZE exists on x86; its guest faults find no VMA."""
    x86 = [["exec", 1, -1], ["vm_create", 0, 1, 0],
           ["memslot", 0, 0, 0, 1 << 47, 2 * M],                     # above TASK_SIZE (2^47 - 4K): accepted
           ["memslot", 0, 1, 4 * M, (1 << 63) - 4 * M, 2 * M],       # ends 2M below 2^63
           ["memslot", 0, 2, 8 * M, (1 << 63) - 2 * M, 2 * M],       # ends at 2^63: a kernel address
           ["memslot", 0, 3, 16 * M, (1 << 64) - 2 * M, 4 * M],      # wraps
           ["guest_fault", 0, 4 * K, 1], ["memslot", 0, 0, 0, 0, 0]]  # no VMA there: -14; the slot deletes
    r = run(x86, arch="x86_64")
    assert results(r) == [0, 0, 0, 0, -22, -22, -14, 0] and kind(r) is None
    for config, va in (({}, 48), ({"va_bits": 39}, 39), ({"granule": 65536, "va_bits": 52}, 52)):
        top = 1 << va
        arm = [["exec", 1, -1], ["vm_create", 0, 1, 0], ["memslot", 0, 0, 0, top - 64 * K, 64 * K],
               ["memslot", 0, 1, 4 * M, top - 64 * K, 128 * K], ["memslot", 0, 2, 8 * M, top, 64 * K],
               ["memslot", 0, 3, 16 * M, 1 << 56, 64 * K]]  # a tagged address: untagged_addr differs too
        assert results(run(arm, arch="arm64", config=config)) == [0, 0, 0, -22, -22, -22], config


@pytest.mark.parametrize("arch", ["arm64", "x86_64", "s390"])
def test_vm_ioctls_are_eio_once_the_vmm_leaves_its_mm(arch):
    """kvm_vm_ioctl and kvm_vcpu_ioctl: "if (kvm->mm != current->mm || kvm->vm_dead) return -EIO;". The VMM's
    exec (a new mm) or exit leaves kvm->mm behind: memslot, guest_fault and guest_fault_begin are -EIO before any
    of their own checks; a vCPU already inside KVM_RUN commits; closing the fd (vm_destroy) works."""
    elf = 0 if arch == "s390" else -1
    gpa_ok = [["memslot", 0, 1, 64 * M, A, M], ["guest_fault", 0, 0, 1], ["guest_fault_begin", 1, 0, 4 * K, 1]]
    setup = [["exec", 1, elf], ["mmap", 1, A, 2 * M, 0], ["vm_create", 0, 1, 0], ["memslot", 0, 0, 0, A, 2 * M],
             ["fork", 1, 2]]
    # a forked child takes a new mm; the VMM keeps kvm->mm: its VM operations work
    r = run(setup + gpa_ok + [["guest_fault_commit", 1]], arch=arch)
    assert results(r) == [0] * 9 and kind(r) is None
    for leave in (["exec", 1, elf], ["exit", 1]):
        r = run(setup + [["guest_fault_begin", 0, 0, 8 * K, 1], leave] + gpa_ok +
                [["memslot", 0, 9, 0, 0, 0], ["guest_fault_commit", 0], ["guest_fault", 7, 0, 1], ["vm_destroy", 0],
                 ["memslot", 0, 0, 0, 0, 0]], arch=arch)
        # the vCPU thread holds mm_users on every arch (s390 too): exit_mmap waits for its commit
        assert results(r)[5:] == [0, 0, -5, -5, -5, -5, 0, -2, 0, -2] and kind(r) is None, leave
    # the pid comes back with a new mm (exec of a pid that exited): still not kvm->mm
    r = run(setup + [["exit", 1], ["exec", 1, elf], ["guest_fault", 0, 0, 1]], arch=arch)
    assert results(r)[-1] == -5


@pytest.mark.parametrize("config,pmd", [({"granule": 16384, "va_bits": 36}, 32 * M),
                                        ({"granule": 65536, "va_bits": 42}, 512 * M)])
def test_pud_size_hugetlb_on_a_folded_pmd_is_pmd_size(config, pmd):
    """mmap flags bit2 is MAP_HUGETLB of log2(PUD_SIZE) of the config. With two stage-1 levels (16K/36, 64K/42)
    the pud and pmd fold into the pgd: PUD_SIZE == PMD_SIZE, the hstate hugetlbpage_init adds for PMD_SHIFT
    (arch_hugetlb_valid_size: no PUD_SIZE case under __PAGETABLE_PMD_FOLDED), so the mapping is a PMD-size
    hugetlb one: len rounded up to it, one leaf at the pgd level. Both bits OR the same log: the same size."""
    base = 1 << 33
    ops = [["exec", 1, -1], ["mmap", 1, base, 16 * K, 4], ["fault", 1, base + pmd - 64 * K, 1],
           ["fault", 1, base + pmd, 1], ["mmap", 1, base + 4 * pmd, pmd, 6], ["mmap", 1, base + 8 * pmd, pmd, 4]]
    r = run(ops, arch="arm64", config=config, teardown=False)
    assert results(r) == [0, 0, 0, -14, 0, 0] and kind(r) is None
    assert [(e[2], e[3]) for e in r.events if e[1] == 5 and e[0] == 2] == [(0, base)]  # a pgd-level leaf
    # with a pmd of its own PUD_SIZE is bigger, and only 4K pages have that hstate (pud_sect_supported)
    for other in ({"granule": 16384, "va_bits": 47}, {"granule": 16384, "va_bits": 48},
                  {"granule": 65536, "va_bits": 48}, {"granule": 65536, "va_bits": 52}):
        assert results(run([["exec", 1, -1], ["mmap", 1, base, 16 * K, 4], ["mmap", 1, base, 16 * K, 6]],
                           arch="arm64", config=other)) == [0, -22, -22], other


def test_both_hugetlb_bits_or_their_size_logs():
    """bit1|bit2 passes MAP_HUGE_SHIFT of PMD_SHIFT | PUD_SHIFT, as the crosscheck helper does: x86_64 and
    arm64/4K 21|30 = 31 (2G: no hstate, -EINVAL); s390 20|31 = 31, its PUD size: a 2G hugetlb mapping."""
    for arch in ("x86_64", "arm64"):
        assert results(run([["exec", 1, -1], ["mmap", 1, 2 * G, M, 6], ["mmap", 1, 2 * G, M, 4]], arch=arch)) == [0, -22, 0]
    r = run([["exec", 1, -1], ["mmap", 1, 2 * G, M, 6], ["fault", 1, 2 * G + 4 * K, 1]], arch="s390", teardown=False)
    assert results(r) == [0, 0, 0] and [(e[2], e[3]) for e in r.events if e[1] == 5 and e[0] == 2] == [(2, 2 * G)]


def test_x86_vm_type_must_be_zero():
    """KVM_CREATE_VM's type is vm_create's third argument: x86 kvm_arch_init_vm "if (type) return -EINVAL;"
    (v6.6; kvm_is_vm_type_supported came in 6.8); arm64 reads it as the IPA size (test_kvm_set_ipa_limit)."""
    r = run([["exec", 1, -1], ["vm_create", 0, 1, 32], ["vm_create", 0, 1, 52], ["vm_create", 0, 1, 0],
             ["vm_create", 1, 1, 0]], arch="x86_64")  # a trace file holds 0 or 32..52 (docs/trace-format.md)
    assert results(r) == [0, -22, -22, 0, 0] and kind(r) is None


def test_memslot_access_ok_user_ptr_max_knob():
    """x86 access_ok since 6.12: the end of the hva range at most USER_PTR_MAX (TASK_SIZE_MAX, 2^47 - 4096 on a
    4-level host); v6.6 takes any end below 2^63 (kvm.memslot_access_ok)."""
    top = (1 << 47) - 4 * K
    ops = [["exec", 1, -1], ["vm_create", 0, 1, 0], ["memslot", 0, 0, 0, top - 8 * K, 8 * K],
           ["memslot", 0, 1, 1 << 30, top - 4 * K, 8 * K], ["memslot", 0, 2, 1 << 31, 1 << 50, 8 * K]]
    assert results(run(ops, arch="x86_64"))[2:] == [0, 0, 0]
    assert results(run(ops, arch="x86_64", knobs={"kvm.memslot_access_ok": "user-ptr-max"}))[2:] == [0, -22, -22]
