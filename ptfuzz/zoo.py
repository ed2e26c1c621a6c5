"""The bug zoo: page-table lifecycle bugs Linux really had, each as a knob whose value is the design before the fix.

The default of each knob is the fixed design (v6.6's); its pre-fix value brings the old code back, and the model's
oracles catch what it let happen. docs/history.md tells each story (the commit, the releases, the race in the
model's terms, the counterexample and the time to find it); corpus/regressions/ARCH/KIND-zN.msgpack holds each
minimized counterexample. `ptfuzz knobs` names the fix of each such knob, `ptfuzz variants` tries them, bench B3
times them. A row whose race the model cannot express yet says so in `missing` and has no counterexample.
"""
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Bug:
    id: str                      # Z1, Z2, ...: corpus/regressions/ARCH/KIND-zN.msgpack
    knob: str
    value: str                   # the pre-fix design
    commit: str                  # the fix
    subject: str
    introduced: str              # the commit or release that brought the bug, as the fix names it
    fixed: str                   # the first mainline release with the fix, and stable releases seen with it
    arch: str                    # the arch its counterexample runs on
    kinds: tuple[str, ...] = ()  # the violation kinds that catch it
    also: dict = field(default_factory=dict)  # other knobs its pre-fix kernel had (older releases' paths)
    min_ops: int | None = None   # the shortest counterexample `ptfuzz check` finds
    missing: str = ""            # not expressible yet: what the model lacks

    @property
    def knobs(self) -> dict:
        return {**self.also, self.knob: self.value}

    @property
    def modelled(self) -> bool:
        return not self.missing


BUGS: tuple[Bug, ...] = (
    Bug("Z1", "mm.collapse_gup_sync", "none", "2ba99c5e0881", "mm/khugepaged: fix GUP-fast interaction by sending IPI",
        "ba76149f47d8 (v2.6.38, khugepaged)", "v6.1 (6.0.13, 5.15.y, 5.10.y)", "x86_64", ("uaf-table",), min_ops=9),
    Bug("Z2", "mm.retract_locks", "pre-8d3c106e19e8", "8d3c106e19e8",
        "mm/khugepaged: take the right locks for page table retraction", "27e1f8273113 (v5.4)",
        "v6.1 (6.0.13, 5.15.y, 5.10.y)", "x86_64", ("uaf-table",), also={"mm.file_retract": "caller"}, min_ops=8),
    Bug("Z3", "mm.collapse_file_notify", "none", "f268f6cf875f",
        "mm/khugepaged: invoke MMU notifiers in shmem/file collapse paths",
        "f3f0e1d2150b (v4.8, shmem collapse); the present-PTE case from 27e1f8273113 (v5.4)",
        "v6.1 (6.0.13, 5.15.y, 5.10.y)", "x86_64", ("stage2-stale",), also={"mm.file_retract": "caller"}, min_ops=9),
    Bug("Z4", "s390.frag_release", "pre-c2c224932fd0", "c2c224932fd0", "s390/mm: fix 2KB pgtable release race",
        "no Fixes: tag (Cc: stable): every tree whose 2K halves go back by both page_table_free and "
        "page_table_free_rcu's pending bits", "v5.17 (5.16.3, 5.15.17)", "s390", ("fragment-corrupt",), min_ops=7),
    Bug("Z5", "gup.fast_pmd_recheck", "no", "70cbc3cc78a9", "mm: gup: fix the fast GUP race against THP collapse",
        "2667f50e8b81 (v3.19, the general RCU GUP-fast)", "v6.0 (5.19.y, 5.15.y, 5.10.y, 4.9.y)", "x86_64",
        ("gup-stale-pin",), also={"mm.collapse_gup_sync": "none"}, min_ops=9),
    # issue 19's KVM rows (Z6-Z9)
    Bug("Z6", "kvm.user_pt_walk", "unprotected", "e86fc1a3a3e9", "KVM: arm64: Disable interrupts while walking userspace PTs",
        "6011cf68c885 (v5.15, the walk for the THP size)", "v6.3 (6.2.10, 6.1.23)", "arm64", ("kernel-bug",),
        also={"kvm.invalidate_retry": "none"}, min_ops=7),
    Bug("Z7", "kvm.fault_seq_snapshot", "after-unlock", "13ec9308a857",
        "KVM: arm64: Retry fault if vma_lookup() results become invalid",
        "94f8e6418d39 (v3.9, KVM/ARM's guest fault handling)", "v6.3 (6.2.10, 6.1.27, 5.15.y)", "arm64",
        ("stage2-oversize",), min_ops=7),
    Bug("Z8", "kvm.invalid_slot_fault", "mmio", "e0c378684b65", "KVM: x86/mmu: Retry page faults that hit an invalid memslot",
        "2f2fad0897cb (v5.10, the TDP MMU's changed-SPTE handling)", "v5.12 (stable backport 5cce890e5dc6)", "x86_64",
        ("stage2-mmio-over-leaf",), min_ops=8),
    Bug("Z9", "kvm.s2_unmap_yield_recheck", "no", "0c428a6a9256", "kvm: arm/arm64: Fix use after free of stage2 page table",
        "8b3405e345b5 (2017-04, the yield in unmap_stage2_range)", "v4.12 (4.9.y, 4.4.y)", "arm64",
        ("uaf-table",), min_ops=7),
    # issue 20's rows that need the TLB model
    Bug("Z10", "hugetlb.unshare_flush", "before-a4a118f2eead", "a4a118f2eead",
        "hugetlbfs: flush TLBs correctly after huge_pmd_unshare",
        "24669e58477e (v3.6, mmu_gather for hugetlb unmapping)", "v5.16 (5.4.162 and the stable queues of 2021-11-24; CVE-2021-4002)", "x86_64",
        ("stale-tlb",), min_ops=10),
    Bug("Z11", "mremap.move_pgt_rmap", "read", "97113eb39fa7",
        "mm/mremap: hold the rmap lock in write mode when moving page table entries",
        "2c91bd4a4e2e (v5.0, the PMD move; c49dd3401802, v5.11, the PUD move)",
        "v5.14 (5.13.3; 5.10.y and 5.4.211 in 2022: CVE-2022-41222)", "x86_64", ("stale-tlb",), min_ops=8),
)

# docs/bench.md's safe controls: designs (arch, knobs) every search must leave silent (bench B3, the check matrix)
SAFE_CONTROLS: tuple[tuple[str, dict], ...] = (
    ("arm64", {}), ("x86_64", {}), ("s390", {"s390.defer_gmap_unlink": "yes"}),
    ("s390", {"s390.pt_alloc": "full-page", "s390.defer_gmap_unlink": "yes"}),
    ("s390", {"s390.pgste_decision": "sysctl-only"}), ("s390", {"s390.pgste_decision": "convert-late"}),
    ("s390", {"s390.defer_gmap_unlink": "yes", "s390.thp_in_pgste_mm": "allow"}),
    ("arm64", {"arm64.stage2_block_check": "can-map-block-size"}),
    ("arm64", {"arm64.stage2_block_check": "has-pmd"}), ("arm64", {"arm64.stage2_block_check": "has-pud"}),
    ("x86_64", {"kvm.fault_holds_mm": "no", "kvm.release_check": "root"}),
    ("arm64", {"kvm.fault_holds_mm": "no", "kvm.release_check": "root"}),
    ("x86_64", {"mm.pt_reclaim": "yes"}),
)

BY_KNOB: dict[str, list[Bug]] = {}
for _b in BUGS:
    BY_KNOB.setdefault(_b.knob, []).append(_b)


def fix_text(knob: str) -> str:
    """What `ptfuzz knobs` says of a zoo knob: each pre-fix value and the commit that fixed it."""
    return "; ".join(f"{b.value}: before {b.commit} \"{b.subject}\" ({b.id})" for b in BY_KNOB.get(knob, ()))
