"""arm64 and x86_64: folded stage-1 geometry, stage 2 / TDP, the fault protocol, and the independent checks."""
import numpy as np
import pytest

from conftest import G, K, M, kind, results, run
from ptfuzz.cli.geometry import stage1_geometry, stage2_geometry
from ptfuzz.engine import replay
from ptfuzz.gen import generate

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


@pytest.mark.parametrize("granule", [4096, 16384, 65536])
def test_stage2_geometry_matches_the_kernel_for_every_ipa(granule):
    for ipa in range(32, 49):
        g = stage2_geometry("arm64", {"granule": granule, "va_bits": 48}, ipa)
        levels, start, pgd_pages, leaf_sizes = kernel_stage2(granule, ipa)
        assert (g["levels"], g["start_level"], g["pgd_pages"], g["leaf_sizes"]) == (levels, start, pgd_pages, leaf_sizes), ipa
        assert pgd_pages <= 16
        assert g["per_level"][0]["table_bytes"] == pgd_pages * granule


@pytest.mark.parametrize("granule,va_bits,levels,folded", [
    (4096, 39, 3, ["p4d", "pud"]), (4096, 48, 4, ["p4d"]), (16384, 36, 2, ["p4d", "pud", "pmd"]),
    (16384, 47, 3, ["p4d", "pud"]), (16384, 48, 4, ["p4d"]), (65536, 42, 2, ["p4d", "pud", "pmd"]),
    (65536, 48, 3, ["p4d", "pud"]),
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
    ops = [["exec", 1, -1], ["mmap", 1, T, 2 * M, 0], ["vm_create", 0, 1, 0], ["memslot", 0, 0, 0, T, 2 * M],
           ["guest_fault_begin", 0, 0, 0, 1], ["exit", 1], ["guest_fault_commit", 0], ["guest_fault", 0, 0, 1]]
    for arch in ("arm64", "x86_64"):
        r = run(ops, arch=arch)
        assert results(r)[-2:] == [0, -14] and kind(r) is None


def test_ipa_bits_rules():
    r = run([["exec", 1, -1], ["vm_create", 0, 1, 49], ["vm_create", 0, 1, 32], ["memslot", 0, 0, 4 * G, T, 4 * K]],
            arch="arm64")
    assert results(r) == [0, -22, 0, -14]


# ---- each arm64/x86 detector: a trace that must trigger it, and its safe twin ----

U9 = [["exec", 1, -1], ["mmap", 1, T, 2 * M, 0], ["vm_create", 0, 1, 0], ["memslot", 0, 0, 0, T, 64 * K],
      ["guest_fault_begin", 0, 0, 0, 1], ["munmap", 1, T, 2 * M], ["guest_fault_commit", 0]]
U10 = [["exec", 1, -1], ["mmap", 1, T, 2 * M, 0], ["vm_create", 0, 1, 0], ["memslot", 0, 0, 0, T, 2 * M],
       ["guest_fault_begin", 0, 0, 0, 1], ["exit", 1], ["guest_fault_commit", 0]]
U7 = [["exec", 1, -1], ["mmap", 1, T, G, 4], ["vm_create", 0, 1, 32], ["memslot", 0, 0, 0, T, G], ["guest_fault", 0, 0, 1]]
U8 = [["exec", 1, -1], ["mmap", 1, T, 2 * M, 0], ["fault", 1, T, 1], ["madvise", 1, T, 2 * M, 1],
      ["vm_create", 0, 1, 0], ["memslot", 0, 0, 0, T, 2 * M], ["guest_fault", 0, 0, 1]]
# U6 as BENCH.md writes it (mm.pmd_recheck=no alone) cannot lose an update in v6.6: the collapse that would swap
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
    ("arm64", "stage2-oversize", U8, {"arm64.thp_size": "vma-naive"}, {}),
    ("arm64", "stage2-stale", U9, {"kvm.invalidate_retry": "none"}, {}),
    ("arm64", "stage2-after-release", U10, {"kvm.fault_holds_mm": "no"}, {}),
    ("arm64", "uaf-table", WALK, {"mm.table_free": "immediate"}, {}),
    ("x86_64", "stage2-stale", U9, {"kvm.invalidate_retry": "none"}, {}),
    ("x86_64", "uaf-table", WALK, {"mm.table_free": "immediate"}, {}),
    ("x86_64", "lost-update", U6, {"mm.pmd_recheck": "no", "mm.pt_reclaim": "yes"}, {"mm.pt_reclaim": "yes"}),
    ("x86_64", None, U6_V66, {"mm.pmd_recheck": "no"}, {}),
    # x86's stale-root check makes the exit_mmap race harmless: the unsafe knob has a safe twin only
    ("x86_64", None, U10, {"kvm.fault_holds_mm": "no"}, {}),
]


@pytest.mark.parametrize("arch,want,ops,bad,safe", DETECTORS,
                         ids=[f"{d[0]}-{d[1]}-{i}" for i, d in enumerate(DETECTORS)])
def test_detector_and_safe_twin(arch, want, ops, bad, safe):
    r = run(ops, bad, arch=arch)
    assert kind(r) == want, r.violation
    assert kind(run(ops, safe, arch=arch)) is None


def test_release_check_none_on_x86_brings_the_race_back():
    r = run(U10, {"kvm.fault_holds_mm": "no", "kvm.release_check": "none"}, arch="x86_64")
    assert kind(r) == "stage2-after-release"


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
