"""Linux releases as knob presets: the value each knob has in a release, for the paths the model has.

The model follows v6.6 (every knob's default). A knob whose alternative value is some later release's
behaviour gets a Change below: the first mainline release with that value, the stable point releases
that got it by backport, the arches it applies to, and the commit. A release's preset is the v6.6
defaults with every Change that release has applied. Knobs without a Change (mm.table_free,
kvm.invalidate_retry, s390.defer_gmap_unlink, ...) have alternatives no release in the table shipped, so
every preset leaves them at their defaults. docs/releases.md has the table and how each boundary was
checked.

Presets cover FLOOR to NEWEST and their stable point releases. Before v6.6 the model has no paths for what
changed (6.5/6.6's retract_page_tables without mmap_lock and pte_free_defer, for one), and after NEWEST
nothing was checked (7.0 moves the s390 gmap into KVM; PT_RECLAIM for every arch with RCU table free was
still in mm-unstable after 6.19): those releases are an error, not a guess.
"""
import re
from dataclasses import dataclass, field

from .errors import UsageError
from .names import KNOB_BY_NAME, KNOBS

FLOOR = "6.6"
NEWEST = "6.19"
MAINLINE = tuple(f"6.{minor}" for minor in range(6, 20))  # 6.6 ... 6.19; 6.19 is followed by 7.0

_VERSION = re.compile(r"v?(\d+)\.(\d+)(?:\.(\d+))?")


@dataclass(frozen=True)
class Change:
    """From `since` (a mainline release) and from each stable point release in `backports` on (in that
    release's own series only), `knob` has `value` on `arches` (None: every arch the knob applies to)."""
    knob: str
    value: str
    since: str
    commit: str
    subject: str
    backports: tuple[str, ...] = ()
    arches: tuple[str, ...] | None = None
    # False: the boundary itself was not found in the history. `after` is then the newest release known to
    # have the old value, and releases between `after` and `since` are reported as unverified.
    verified: bool = True
    after: str | None = None
    note: str = ""


CHANGES: tuple[Change, ...] = (
    # s390 page tables: whole 4K pages, no 2K fragments. d08d4e7cd6bf "s390/mm: use full 4KB page for 2KB
    # PTE", merged in the 6.7 merge window (seen in a mainline-based tree on 2023-11-09, with
    # "amd-drm-next-6.7" beside it); later commits say "Since commit d08d4e7cd6bf ... there is no fragmented
    # page tracking on s390". No stable backport (a rework, not a fix).
    Change("s390.pt_alloc", "full-page", "6.7", "d08d4e7cd6bf", "s390/mm: use full 4KB page for 2KB PTE"),
    # do_set_pmd refuses a PMD leaf where THP is disabled (VM_NOHUGEPAGE, s390 KVM). 2b0f922323cc, in
    # mainline by 6.12-rc4 (Greg's FAILED backport mails of 2024-10-18), so 6.12. Backports: stable
    # 6.11.y commit 5f060ba4c8f7, between "Linux 6.11.5" and "Linux 6.11.6"; 6.6.y commit 3d544942c001,
    # between "Linux 6.6.59" and "Linux 6.6.60" (kernel.org push logs). 6.7.y-6.10.y had ended. A 6.1.y
    # backport was posted too (below the floor, release not checked).
    Change("mm.file_pmd_nohuge", "ptes", "6.12", "2b0f922323cc",
           "mm: don't install PMD mappings when THPs are disabled by the hw/process/vma",
           backports=("6.6.60", "6.11.6")),
    # A write fault on the huge zero page maps a new THP (do_huge_zero_wp_pmd). 1ced09e0331f, pulled into
    # mainline on 2024-11-23, after v6.12 and before 6.13-rc1 (torvalds/linux push log): 6.13. A feature:
    # no backport.
    Change("mm.huge_zero_wp", "thp", "6.13", "1ced09e0331f", "mm: allocate THP on hugezeropage wp-fault"),
    # CONFIG_PT_RECLAIM (default y) selectable on x86_64 only: 4817f70c25b6, in v6.14-rc1 (the 2025-02 xfs
    # regression bisect: "After deselect PT_RECLAIM on v6.14-rc1, the issue is gone"). arm64 and s390 have
    # no Change: ARCH_SUPPORTS_PT_RECLAIM stayed x86-only through 6.19; "mm: make PT_RECLAIM depends on
    # MMU_GATHER_RCU_TABLE_FREE" (v4 of 2026-01-27, rebased on v6.19-rc7) was still in mm-unstable on
    # 2026-02-11, after 6.19, and its release is not known here.
    Change("mm.pt_reclaim", "yes", "6.14", "4817f70c25b6", "x86: select ARCH_SUPPORTS_PT_RECLAIM if X86_64",
           arches=("x86_64",), note="the preset assumes the default CONFIG_PT_RECLAIM=y"),
    # is_mergeable_anon_vma checks the source's anon_vma_chain: 879bca0a2c4f (author date 2025-04-08),
    # "another VMA merging related one in 6.16" (David Hildenbrand, linux-mm). Its mremap follow-ups of
    # 2026-01 went to 6.18.y only; no backport of 879bca0a2c4f itself was found.
    Change("mm.merge_unfaulted", "yes", "6.16", "879bca0a2c4f",
           "mm/vma: fix incorrectly disallowed anonymous VMA merges"),
    # MADV_COLLAPSE without SCAN_PAGE_RO: 473b73222f3d (with 62b98015d988 "mm: enable khugepaged anonymous
    # collapse on non-writable regions") was the head of mm-stable for the 6.18 merge window and is in a
    # mainline-based tree of 2025-10-03: 6.18. A feature: no backport.
    Change("mm.collapse_readonly", "yes", "6.18", "473b73222f3d",
           "mm: drop all references of writable and SCAN_PAGE_RO"),
    # UNVERIFIED boundary: `ptfuzz crosscheck` saw a 6.18.y host allocate the PMD table and map the folio
    # where v6.6's collapse_pte_mapped_thp returns SCAN_PMD_NULL; the commit was not found, so 6.7-6.17 keep
    # v6.6's value and are flagged.
    Change("mm.collapse_pmd_alloc", "yes", "6.18", "", "(not identified)", verified=False, after="6.6",
           note="seen on 6.18.y by ptfuzz crosscheck; the commit and the first release are not identified"),
    # x86 access_ok against USER_PTR_MAX (runtime_const, = TASK_SIZE_MAX) instead of the sign bit: the series
    # "x86: fix user address masking non-canonical speculation issue" (Linus Torvalds, posted Oct 2024 during
    # 6.12-rc; the arch_cpu_finalize_init hunk read in its patch mails). KVM_SET_USER_MEMORY_REGION's access_ok then
    # refuses a range ending past TASK_SIZE_MAX: measured on a 6.18 host by `crosscheck --kvm`. The commit id and
    # any stable backport are not identified here, so the boundary is flagged.
    Change("kvm.memslot_access_ok", "user-ptr-max", "6.12", "",
           "x86: fix user address masking non-canonical speculation issue", arches=("x86_64",), verified=False,
           after="6.6", note="first release from the patch's date; commit and backports not identified"),
    # mremap's multi-VMA move and its earlier checks: Lorenzo Stoakes' series "mm/mremap: permit mremap() move of
    # multiple VMAs" (v3 of 2025-07-11; with "mm/mremap: check remap conditions earlier" and "mm/mremap: move
    # remap_is_valid() into check_prep_vma()"), in mm trees during the 6.17 merge window; seen on a 6.18.y host by
    # `ptfuzz crosscheck`. The mainline commit id is not identified here (the mm-unstable ids differ), so flagged.
    Change("mremap.move_multi_vma", "yes", "6.17", "", "mm/mremap: permit mremap() move of multiple VMAs",
           verified=False, after="6.6", note="series merged for 6.17 by its dates; mainline id not identified"),
    # No Change for two knobs `crosscheck --kvm --kernel` found (docs/knobs.md):
    # - arm64.task_size_max=52 is a build option (CONFIG_ARM64_VA_BITS=52 on a CPU running 48-bit VA: access_ok's
    #   TASK_SIZE_MAX is 2^52), Debian's 4K/16K arm64 kernels from 6.12 on; no release has it by default.
    # - mm.collapse_subblock=ok (madvise_collapse returns 0 for a range with no whole PMD block) was seen on 7.2
    #   and not on 6.18; the commit is not identified and 7.x is past NEWEST, so no preset sets it.
)


def parse_version(text: str) -> tuple[int, int, int]:
    """"6.12" -> (6, 12, 0), "6.6.60" -> (6, 6, 60), "v6.13" -> (6, 13, 0); ValueError otherwise."""
    m = _VERSION.fullmatch(str(text).strip())
    if not m:
        raise ValueError(text)
    return int(m[1]), int(m[2]), int(m[3] or 0)


def _series(v: tuple[int, int, int]) -> tuple[int, int]:
    return v[0], v[1]


def has(change: Change, version: tuple[int, int, int]) -> bool:
    """Whether a release has the change: at or after its mainline release, or at or after the backport in
    the release's own stable series (6.6.60 has 2b0f922323cc, 6.7.5 does not)."""
    if version >= parse_version(change.since):
        return True
    return any(_series(b) == _series(version) and version >= b for b in map(parse_version, change.backports))


def changes_for(knob: str, arch: str) -> list[Change]:
    return [c for c in CHANGES if c.knob == knob and (c.arches is None or arch in c.arches)]


@dataclass
class Preset:
    """A release's knob values on one arch. `values`: every knob with a Change on this arch, at its value
    in the release; `knobs`: those that differ from the v6.6 default (what the engine is given);
    `unverified`: knob -> why its value for this release is not certain."""
    version: str
    arch: str
    values: dict = field(default_factory=dict)
    knobs: dict = field(default_factory=dict)
    unverified: dict = field(default_factory=dict)

    def value(self, knob: str) -> str | None:
        """The release's value of any knob of the arch: its Change's, else the v6.6 default."""
        return self.values.get(knob, KNOB_BY_NAME[knob].default(self.arch))

    def describe(self, overrides: dict | None = None) -> str:
        """One line for the start of a run: "kernel 6.12 on s390: mm.file_pmd_nohuge=ptes, ..."."""
        shown = ", ".join(f"{k}={v}" for k, v in sorted(self.knobs.items()))
        line = f"kernel {self.version} on {self.arch}: " + (
            f"{shown}; every other knob at its v6.6 default" if shown else "every knob at its v6.6 default")
        overrides = {k: v for k, v in (overrides or {}).items() if self.value(k) != v}
        if overrides:
            line += "; --knob over it: " + ", ".join(f"{k}={v}" for k, v in sorted(overrides.items()))
        if self.unverified:
            line += "; unverified: " + "; ".join(f"{k}={self.value(k)} ({why})" for k, why in self.unverified.items())
        return line


def known_versions() -> str:
    return f"{FLOOR} to {NEWEST} and their stable point releases"


def check_version(text: str, option: str = "--kernel-version") -> str:
    """The release as given (without a leading v), or UsageError naming what the table covers."""
    try:
        v = parse_version(text)
    except ValueError:
        raise UsageError(f"{option} {text!r}: not a release number (MAJOR.MINOR or MAJOR.MINOR.PATCH, "
                         "e.g. 6.12 or 6.6.60)") from None
    name = f"{v[0]}.{v[1]}"
    if name not in MAINLINE:
        why = (f"before {FLOOR}, the release the model follows (older releases differ in paths it does not have)"
               if v < parse_version(FLOOR) else f"newer than {NEWEST}, the newest release checked"
               if v > parse_version(NEWEST) else "not a Linux release")
        raise UsageError(f"{option} {text}: no preset: {why}; the table covers {known_versions()} "
                         "(docs/releases.md)")
    return str(text).strip().removeprefix("v")


def preset(arch: str, version: str, option: str = "--kernel-version") -> Preset:
    """Release `version`'s knob values on `arch`; a knob that does not apply to the arch is skipped."""
    name = check_version(version, option)
    v = parse_version(name)
    p = Preset(name, arch)
    for k in KNOBS:
        if arch not in k.arches:
            continue
        changes = changes_for(k.name, arch)
        if not changes:
            continue
        value = k.default(arch)
        for c in changes:
            if has(c, v):
                value = c.value
                if not c.verified:
                    p.unverified[k.name] = f"first seen on {c.since}, commit not identified"
            elif not c.verified and c.after is not None and v > parse_version(c.after):
                p.unverified[k.name] = f"{c.value} from some release after {c.after}, first seen on {c.since}"
        p.values[k.name] = value
        if value != k.default(arch):
            p.knobs[k.name] = value
    p.knobs = dict(sorted(p.knobs.items()))
    return p


def parse_versions(text: str, option: str = "--kernel-versions") -> list[str]:
    """A comma-separated list of releases, or "all" (every mainline release in the table), in order given."""
    if text.strip() == "all":
        return list(MAINLINE)
    out = []
    for item in (s.strip() for s in text.split(",")):
        if not item:
            raise UsageError(f"{option} {text!r}: empty item (give releases separated by commas, e.g. 6.6,6.12)")
        name = check_version(item, option)
        if name not in out:
            out.append(name)
    return out


def boundaries(knob: str) -> list[dict]:
    """The knob's Changes as plain data (ptfuzz knobs --json)."""
    return [{"value": c.value, "since": c.since, "backports": list(c.backports),
             "arches": list(c.arches) if c.arches else KNOB_BY_NAME[knob].arches,
             "commit": c.commit or None, "subject": c.subject, "verified": c.verified,
             **({"after": c.after} if c.after else {}), **({"note": c.note} if c.note else {})}
            for c in CHANGES if c.knob == knob]


def boundary_text(knob: str) -> str:
    """"ptes: 6.12 (6.6.60, 6.11.6) 2b0f922323cc" for the knobs table."""
    parts = []
    for c in CHANGES:
        if c.knob != knob:
            continue
        text = f"{c.value}: {c.since}+"
        if c.backports:
            text += f" ({', '.join(b + '+' for b in c.backports)})"
        if c.arches:
            text += f" on {', '.join(c.arches)}"
        text += f" {c.commit}" if c.commit else ""
        parts.append(text + ("" if c.verified else " [unverified]"))
    return "; ".join(parts)
