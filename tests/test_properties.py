"""Properties over arbitrary operation sequences: no crash, no engine-assert, safe designs stay silent."""
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import ELFS, M, kind
from ptfuzz.engine import replay
from ptfuzz.names import KNOBS
from ptfuzz.trace import ARG_KINDS, Trace, ops_from_list

ADDRS = [0, 0x10000000, 0x10000000 + 4096, 0x10100000, 0x10200000, 0x80000000, 1 << 42, 1 << 53, 0x3fffffff000]
LENS = [4096, 64 << 10, M, 2 * M, 1 << 31]
ARG = {
    "pid": st.integers(0, 3), "cpu": st.integers(0, 3), "vm": st.integers(0, 1), "slot": st.integers(0, 2),
    "bool": st.integers(0, 1), "flags": st.integers(0, 7), "advice": st.integers(0, 3),
    "elf": st.integers(-1, len(ELFS) - 1), "ipa": st.just(0), "obj": st.integers(0, 2),
    "hfile": st.integers(0, 2),
}
PGOFFS = [0, 1, 256, 512, 1 << 52]


@st.composite
def ops(draw):
    out = []
    for _ in range(draw(st.integers(1, 40))):
        name = draw(st.sampled_from(list(ARG_KINDS)))
        args = []
        for i, k in enumerate(ARG_KINDS[name]):
            if k == "u64":
                pool = LENS if (name in ("mmap", "munmap", "madvise", "shm_mmap", "hugetlb_mmap") and i == 2) or \
                    (name == "memslot" and i == 4) else PGOFFS if name in ("shm_mmap", "hugetlb_mmap") and i == 4 else ADDRS
                args.append(draw(st.sampled_from(pool)))
            else:
                args.append(draw(ARG[k]))
        out.append([name, *args])
    return out


# s390 defaults are not safe in the v6.6 model (docs/bench.md M1: retract_page_tables frees a pgste mm's PTE table
# through pte_free_defer, which does not gmap_unlink), so every s390 control here has s390.defer_gmap_unlink=yes;
# defer_gmap_unlink=yes with thp_in_pgste_mm=allow is not one (corpus/regressions/s390/gmap-dangling-90ecfe84).
DEFER = {"s390.defer_gmap_unlink": "yes"}
# mm.pmd_recheck=no alone is safe in v6.6 (the rmap walker's locks keep its table; docs/bench.md U6 needs PT reclaim)
SAFE = [DEFER, {**DEFER, "s390.pt_alloc": "full-page"}, {**DEFER, "s390.pgste_decision": "sysctl-only"},
        {**DEFER, "s390.pgste_decision": "convert-late"}, {**DEFER, "mm.pmd_recheck": "no"}]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops(), st.sampled_from(SAFE))
def test_safe_designs_are_silent(op_list, knobs):
    r = replay(Trace("s390", ops_from_list(op_list), knobs=knobs, elfs=ELFS))
    assert kind(r) is None, (r.violation, op_list)


def any_knobs(arch):
    return st.fixed_dictionaries({k.name: st.sampled_from(k.values) for k in KNOBS if arch in k.arches})


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(["s390", "arm64", "x86_64"]).flatmap(lambda a: st.tuples(st.just(a), ops(), any_knobs(a))))
def test_any_design_never_trips_the_engine(case):
    arch, op_list, knobs = case
    if arch != "s390":
        op_list = [op for op in op_list if op[0] != "exec" or op[2] == -1]
        if not op_list:
            return
    t = Trace(arch, ops_from_list(op_list), knobs=knobs, elfs=ELFS)
    a, b = replay(t), replay(t)
    assert kind(a) != "engine-assert", a.violation
    assert (a.digest, kind(a)) == (b.digest, kind(b))


# kvm.fault_holds_mm=no alone is U10 (arm64) and U13 (x86_64); with kvm.release_check=root it is docs/bench.md's control
KVM_SAFE = [("arm64", {}), ("arm64", {"mm.pmd_recheck": "no"}), ("x86_64", {"mm.pmd_recheck": "no"}),
            ("arm64", {"arm64.stage2_block_check": "can-map-block-size"}),
            ("arm64", {"arm64.stage2_block_check": "has-pmd"}),
            ("arm64", {"arm64.stage2_block_check": "has-pud"}), ("x86_64", {}),
            ("arm64", {"kvm.fault_holds_mm": "no", "kvm.release_check": "root"}),
            ("x86_64", {"kvm.fault_holds_mm": "no", "kvm.release_check": "root"})]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops(), st.sampled_from(KVM_SAFE))
def test_safe_kvm_designs_are_silent(op_list, case):
    arch, knobs = case
    op_list = [op for op in op_list if op[0] != "exec" or op[2] == -1]
    r = replay(Trace(arch, ops_from_list(op_list or [["rcu_gp"]]), knobs=knobs, elfs=ELFS))
    assert kind(r) is None, (r.violation, op_list)
