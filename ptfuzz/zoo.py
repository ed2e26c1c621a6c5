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
        "ba76149f47d8 (v2.6.38, khugepaged)", "v6.1 (6.0.13, 5.15.y, 5.10.y)", "x86_64", ("uaf-table",), min_ops=10),
    Bug("Z4", "s390.frag_release", "pre-c2c224932fd0", "c2c224932fd0", "s390/mm: fix 2KB pgtable release race",
        "no Fixes: tag (Cc: stable): every tree whose 2K halves go back by both page_table_free and "
        "page_table_free_rcu's pending bits", "v5.17 (5.16.3, 5.15.17)", "s390", ("fragment-corrupt",), min_ops=7),
    Bug("Z5", "gup.fast_pmd_recheck", "no", "70cbc3cc78a9", "mm: gup: fix the fast GUP race against THP collapse",
        "2667f50e8b81 (v3.19, the general RCU GUP-fast)", "v6.0 (5.19.y, 5.15.y, 5.10.y, 4.9.y)", "x86_64",
        ("gup-stale-pin",), also={"mm.collapse_gup_sync": "none"}, min_ops=9),
)

BY_KNOB: dict[str, list[Bug]] = {}
for _b in BUGS:
    BY_KNOB.setdefault(_b.knob, []).append(_b)


def fix_text(knob: str) -> str:
    """What `ptfuzz knobs` says of a zoo knob: each pre-fix value and the commit that fixed it."""
    return "; ".join(f"{b.value}: before {b.commit} \"{b.subject}\" ({b.id})" for b in BY_KNOB.get(knob, ()))
