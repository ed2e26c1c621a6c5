"""The design variants to try per arch: every knob alternative alone, plus the combinations that matter."""
from .names import KNOBS

# Variants unsafe only in combination, and combinations that make an unsafe knob safe again.
COMBINATIONS = {
    "s390": [{"s390.pgste_decision": "convert-late", "mm.pmd_recheck": "no"},
             {"s390.thp_in_pgste_mm": "allow", "s390.defer_gmap_unlink": "yes"}],
    "arm64": [],
    "x86_64": [{"kvm.fault_holds_mm": "no", "kvm.release_check": "none"}],
}


def variants(arch: str) -> list[dict]:
    out = [{}]
    for k in KNOBS:
        if arch not in k.arches:
            continue
        out += [{k.name: v} for v in k.values if v != k.default(arch)]
    return out + COMBINATIONS.get(arch, [])
