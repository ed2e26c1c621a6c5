"""bench/run.py: the docs/bench.md figures B1-B8, printed and written to bench/results.json (`make bench`).

Every figure is measured in this run, and the "ratios" section compares figures of this run only (with each
other, and with docs/bench.md's targets), since the machines are shared and noisy.

Environment: BENCH_ONLY=B1,B5 (a subset; B4 comes with B3; B3F: atheris' time to bug on U4, U7, U8 and M1
with the generator's semantic features and without), BENCH_QUICK=1 (the smaller defaults in brackets,
for a shared machine: minutes, not hours), BENCH_REPS (3), BENCH_B1_OPS (2000000 [500000]),
BENCH_B2_TIME (30 s [10]), BENCH_B3_TRIALS (10 [3]), BENCH_B3_CAP (60 s [20]), BENCH_B3_ENGINE (atheris |
hypothesis | random), BENCH_B3_ROWS (all; e.g. "Z*" or "Z1,Z2": those rows, no controls), BENCH_B5_GIB (4), BENCH_B7_TRACES (1000 [100]), BENCH_B8_DEPTH (10 [8]),
BENCH_B8_TIME (60 s [15]), BENCH_B7K_TRACES (1000 [50]), BENCH_B7K_KERNELS, BENCH_B7K_FROM. B7K (B7 per
foreign kernel under QEMU, docs/kernels.md) runs only when BENCH_ONLY names it. results.json records the
values used.
"""
import json
import re
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from dataclasses import replace as dc_replace

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from ptfuzz import trace as tracemod  # noqa: E402
from ptfuzz.engine import replay  # noqa: E402
from ptfuzz.names import ARCH_NAMES  # noqa: E402
from ptfuzz.search.gen import generate, s390_elf  # noqa: E402
from ptfuzz.names import OP_NUMBER  # noqa: E402
from ptfuzz.engine import stage1_geometry  # noqa: E402
from ptfuzz.procs import ptfuzz_command  # noqa: E402
from ptfuzz.search.campaign import Campaign, run_campaign  # noqa: E402
from ptfuzz.zoo import BUGS, SAFE_CONTROLS  # noqa: E402
from ptfuzz.search.variants import trial_seed  # noqa: E402

QUICK = os.environ.get("BENCH_QUICK", "") not in ("", "0")


def param(name: str, full, quick):
    """BENCH_<name> from the environment, else docs/bench.md's value (or the BENCH_QUICK one)."""
    return type(full)(os.environ.get(f"BENCH_{name}", quick if QUICK else full))


REPS = param("REPS", 3, 3)
B1_OPS = param("B1_OPS", 2_000_000, 500_000)
B5_GIB = param("B5_GIB", 4, 4)
PTFUZZ = ptfuzz_command()  # the same ptfuzz package as this script imports
# docs/bench.md's targets, for the ratios
TARGET = {"B1_list": 2_000_000, "B1_packed": 10_000_000, "B2_atheris": 20_000, "B3_median_s": 10.0,
          "B8_states_per_s": 1_000_000}


def timed(fn, reps=REPS):
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), min(times), max(times)


def child_run(args):
    """Run a ptfuzz command as a child; wall seconds and the child's peak RSS in bytes."""
    t0 = time.perf_counter()
    code = ("import resource,subprocess,sys;"
            "p=subprocess.run(sys.argv[1:],stdout=subprocess.DEVNULL);"
            "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss*1024);sys.exit(p.returncode)")
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=ROOT)
    return time.perf_counter() - t0, int(out.stdout.strip() or 0), out.returncode


def b1(arch, tmp):
    rows = []
    t = generate(arch, B1_OPS, 1)
    tiny = Path(tmp) / f"b1-{arch}-tiny.msgpack"
    tracemod.save(dc_replace(t, ops=t.ops[:1]), tiny, packed=True)
    med, lo, hi = timed(lambda: child_run([*PTFUZZ, "replay", str(tiny), "--json"]))
    rows.append({"id": "B1", "arch": arch, "form": "-", "what": "fixed cost: a 1-op trace end to end",
                 "ops_per_s": None, "median_s": round(med, 3), "min_s": round(lo, 3), "max_s": round(hi, 3)})
    for form in ("list", "packed"):
        path = Path(tmp) / f"b1-{arch}-{form}.msgpack"
        tracemod.save(t, path, packed=form == "packed")
        med, lo, hi = timed(lambda: child_run([*PTFUZZ, "replay", str(path), "--json"]))
        rows.append({"id": "B1", "arch": arch, "form": form, "what": "end to end (start, read, validate, run, audit)",
                     "ops_per_s": round(B1_OPS / med), "median_s": round(med, 3), "min_s": round(lo, 3),
                     "max_s": round(hi, 3), "file_bytes": path.stat().st_size})
        med, lo, hi = timed(lambda: tracemod.load(path, stream=form == "packed"))
        rows.append({"id": "B1", "arch": arch, "form": form, "what": "read and validate (in process, as replay does)",
                     "ops_per_s": round(B1_OPS / med), "median_s": round(med, 3), "min_s": round(lo, 3),
                     "max_s": round(hi, 3)})
    loaded = tracemod.load(Path(tmp) / f"b1-{arch}-packed.msgpack")
    med, lo, hi = timed(lambda: replay(loaded))
    rows.append({"id": "B1", "arch": arch, "form": "-", "what": "engine only (run, audit, teardown)",
                 "ops_per_s": round(B1_OPS / med), "median_s": round(med, 3), "min_s": round(lo, 3),
                 "max_s": round(hi, 3)})
    return rows


U64_MAX = (1 << 64) - 1


def dense_trace(arch, gib=4):
    base, length = 1 << 36, gib << 30
    pages = length >> 12
    ops = np.zeros((2 + pages, 6), dtype=np.uint64)
    ops[0] = [OP_NUMBER["exec"], 1, (1 << 64) - 1, 0, 0, 0]
    ops[1] = [OP_NUMBER["mmap"], 1, base, length, 0, 0]
    ops[2:, 0] = OP_NUMBER["fault"]
    ops[2:, 1] = 1
    ops[2:, 2] = base + (np.arange(pages, dtype=np.uint64) << np.uint64(12))
    ops[2:, 3] = 1
    return tracemod.Trace(arch, ops, packed=True), base, length


def kernel_table_bytes(arch, base, length, stack_page):
    """What Linux spends on page tables for these pages, counted from the geometry: one table per
    distinct prefix at every level below the top, plus the top; s390 pairs 2K PTE tables in a page."""
    g = stage1_geometry(arch, {})
    levels = [lv for lv in g["per_level"] if not lv["folded"]]
    if arch == "s390":
        levels = levels[2:]  # a new s390 mm has 3 levels: region-third on top
    pages = np.concatenate([np.arange(base, base + length, 4096, dtype=np.uint64),
                            np.array([stack_page], dtype=np.uint64)])
    total = levels[0]["table_bytes"]
    for lv in levels[1:]:
        span = lv["shift"] + (lv["entries"].bit_length() - 1)
        tables = len(np.unique(pages >> np.uint64(span)))
        if arch == "s390" and lv["name"] == "page":
            total += -(-tables // 2) * 4096
        else:
            total += tables * max(lv["table_bytes"], 4096)
    return total


def b5(arch, tmp):
    t, base, length = dense_trace(arch, B5_GIB)
    path = Path(tmp) / f"b5-{arch}.msgpack"
    tracemod.save(t, path)
    secs, rss, rc = child_run([*PTFUZZ, "replay", str(path), "--json"])
    model = replay(t).stats["page_table_bytes_peak"]
    stack_top = {"s390": 1 << 42, "arm64": 1 << 48, "x86_64": (1 << 47) - 4096}[arch]
    kernel = kernel_table_bytes(arch, base, length, stack_top - 4096)
    return [{"id": "B5", "arch": arch, "what": f"{B5_GIB} GiB of 4K pages, one process", "peak_rss_bytes": rss,
             "model_table_bytes": model, "kernel_table_bytes": kernel,
             "rss_target_bytes": int(1.5 * model + (64 << 20)), "rss_within_target": rss <= 1.5 * model + (64 << 20),
             "model_equals_kernel": model == kernel, "seconds": round(secs, 2), "exit": rc,
             "file_bytes": path.stat().st_size}]


def b6(tmp):
    """B6: page-table bytes at peak of one design question each: s390's 2K fragments against full pages, and
    PGSTE for every process (vm.allocate_pgste=1) against the ELF flag on the one process that runs a VM. The
    workload: B5's dense process, and beside it a small QEMU-like process (a VM on 16 MiB of guest memory)."""
    dense, base, length = dense_trace("s390", B5_GIB)
    elfs = [s390_elf(True)]
    qemu = np.array([[OP_NUMBER["exec"], 2, 0, 0, 0, 0], [OP_NUMBER["mmap"], 2, 1 << 32, 16 << 20, 0, 0],
                     [OP_NUMBER["vm_create"], 0, 2, 0, 0, 0], [OP_NUMBER["memslot"], 0, 0, 0, 1 << 32, 16 << 20, ],
                     *[[OP_NUMBER["guest_fault"], 0, g, 1, 0, 0] for g in range(0, 16 << 20, 1 << 20)]],
                    dtype=np.uint64)
    sysctl = np.array([[OP_NUMBER["sysctl_allocate_pgste"], 1, 0, 0, 0, 0]], dtype=np.uint64)
    designs = [("fragments, ELF flag on the VM process", {"s390.pt_alloc": "fragments"}, False),
               ("full-page, ELF flag on the VM process", {"s390.pt_alloc": "full-page"}, False),
               ("fragments, vm.allocate_pgste=1 for every process", {"s390.pt_alloc": "fragments"}, True)]
    rows = []
    for what, knobs, global_pgste in designs:
        qemu_ops = qemu.copy()
        if global_pgste:
            qemu_ops[0, 2] = U64_MAX  # no ELF flag needed: the sysctl gives every new mm PGSTEs
        ops = np.concatenate([sysctl if global_pgste else sysctl[:0], dense.ops, qemu_ops])
        r = replay(tracemod.Trace("s390", ops, knobs=knobs, elfs=elfs))
        rows.append({"id": "B6", "arch": "s390", "design": what, "knobs": knobs,
                     "page_table_bytes_peak": r.stats["page_table_bytes_peak"], "verdict": r.verdict.value,
                     "workload": f"{B5_GIB} GiB dense process + a VM process with 16 MiB of guest memory"})
    first = rows[0]["page_table_bytes_peak"]
    for r in rows:
        r["vs_fragments_elf"] = round(r["page_table_bytes_peak"] / first, 3)
    return rows


B2_TIME = param("B2_TIME", 30.0, 10.0)
B3_TRIALS = param("B3_TRIALS", 10, 3)
B3_CAP = param("B3_CAP", 60.0, 20.0)
B3_ENGINE = os.environ.get("BENCH_B3_ENGINE", "atheris")
# BENCH_B3_ROWS: only these B3 variants (ids, or a prefix with *: "Z*" is the bug zoo), no controls; the other
# variants' rows and the controls are kept from results.json
B3_ROWS = set(filter(None, os.environ.get("BENCH_B3_ROWS", "").split(",")))


def b3_selected(uid: str | None) -> bool:
    return not B3_ROWS or uid in B3_ROWS or any(r.endswith("*") and (uid or "").startswith(r[:-1]) for r in B3_ROWS)
UNSAFE = [("U1", "s390", {"mm.table_free": "immediate"}, {"uaf-table"}),
          ("U2", "s390", {"s390.pgste_decision": "elf-no-restart"}, {"pgste-table-missing"}),
          ("U3", "s390", {"s390.pt_alloc": "fragments-always"}, {"pgste-table-missing", "fragment-corrupt"}),
          ("U4", "s390", {"s390.thp_in_pgste_mm": "allow"}, {"gmap-dangling"}),
          ("U5", "s390", {"s390.pgste_decision": "convert-late", "mm.pmd_recheck": "no"}, {"lost-update"}),
          # v6.6's rmap locks leave PT reclaim the only path that unlinks a PTE table under an rmap walker
          # (docs/model-notes.md), so U6 needs mm.pt_reclaim=yes beside docs/bench.md's mm.pmd_recheck=no
          ("U6", "arm64", {"mm.pmd_recheck": "no", "mm.pt_reclaim": "yes"}, {"lost-update"}),
          ("U7", "arm64", {"arm64.stage2_block_check": "none"}, {"stage2-block-illegal"}),
          ("U8", "arm64", {"arm64.thp_size": "vma-naive"}, {"stage2-oversize"}),
          ("U9", "arm64", {"kvm.invalidate_retry": "none"}, {"stage2-stale"}),
          ("U10", "arm64", {"kvm.fault_holds_mm": "no"}, {"stage2-after-release"}),
          ("U11", "x86_64", {"kvm.invalidate_retry": "none"}, {"stage2-stale"}),
          ("U12", "x86_64", {"mm.table_free": "immediate"}, {"uaf-table"}),
          ("U13", "x86_64", {"kvm.fault_holds_mm": "no"}, {"stage2-stale"}),
          # the invalidation window (inval_hold): a commit that checks only mmu_invalidate_seq (issue 9)
          ("U14", "arm64", {"kvm.invalidate_retry": "seq-only"}, {"stage2-stale"}),
          ("U15", "x86_64", {"kvm.invalidate_retry": "seq-only"}, {"stage2-stale"}),
          ("M1", "s390", {}, {"gmap-dangling"})]
# the bug zoo (docs/history.md): each real bug's pre-fix design
UNSAFE += [(b.id, b.arch, b.knobs, set(b.kinds)) for b in BUGS if b.modelled]
# docs/bench.md's safe controls. Those that leave s390.defer_gmap_unlink=no reach M1 (docs/model-notes.md): for them
# a gmap-dangling finding is M1, not a false alarm, and is counted apart.
CONTROLS = SAFE_CONTROLS


def b2(arch, tmp):
    rows = []
    # atheris twice: as `ptfuzz fuzz` runs it (the engine's edges; with its coverage build, no semantic
    # features) and with the generator's semantic features, which make libFuzzer keep many more inputs and
    # cost executions per second (B3F: what they buy in time to bug)
    for engine, features in (("atheris", False), ("atheris", True), ("hypothesis", None), ("random", None)):
        c = Campaign(arch, {}, Path(tmp) / f"b2-{arch}-{engine}-{features}", max_ops=32, features=features)
        run_campaign(c, engine, B2_TIME, None, 1, True)
        rows.append({"id": "B2", "arch": arch, "engine": engine, "semantic_features": features,
                     "seconds": round(c.elapsed, 1), "executions": c.executions,
                     "execs_per_s": round(c.executions / c.elapsed), "coverage": c.coverage or None,
                     "findings": len(c.findings)})
    return rows


def one_minimal(t):
    from dataclasses import replace as dc_replace
    kind = t.expect["kind"]
    for i in range(len(t.ops)):
        v = replay(dc_replace(t, ops=np.delete(t.ops, i, axis=0))).violation
        if v is not None and v.kind == kind:
            return False
    return True


def time_to_bug(tmp, uid, arch, knobs, kinds, engine, tag="", features=None):
    """B3_TRIALS campaigns (capped at B3_CAP) on one unsafe variant: the B3 row, and a B4 row per finding."""
    times, execs, lengths, b4 = [], [], [], []
    for trial in range(B3_TRIALS):
        # trial seeds as `ptfuzz variants --trials` spaces them: random trials a million runs apart, so that no
        # trial replays another's traces shifted by a few executions
        c = Campaign(arch, knobs, Path(tmp) / f"b3{tag}-{uid}-{trial}", max_ops=32, seed=trial_seed(engine, trial) + 7,
                     features=features)
        # on to the expected kind: another violation first (M1 on most s390 variants) does not end a trial
        run_campaign(c, engine, B3_CAP, None, 1, True, stop_when=lambda c: any(f.kind in kinds for f in c.findings))
        f = next((f for f in c.findings if f.kind in kinds), None)
        if f:
            times.append(f.seconds)
            execs.append(f.executions)
            lengths.append(len(f.trace.ops))
            st = f.minimize_stats
            b4.append({"id": "B4", "variant": uid, "trial": trial, "ops_before": st.ops_before,
                       "ops_after": st.ops_after, "replays": st.replays, "seconds": round(st.seconds, 3),
                       "one_minimal": one_minimal(f.trace)})
    row = {"id": "B3", "variant": uid, "arch": arch, "knobs": knobs, "engine": engine,
           "found": f"{len(times)}/{B3_TRIALS}",
           "median_s": round(statistics.median(times), 3) if times else None,
           "min_s": round(min(times), 3) if times else None, "max_s": round(max(times), 3) if times else None,
           "median_execs": int(statistics.median(execs)) if execs else None,
           "median_ops": statistics.median(lengths) if lengths else None}
    return row, b4


def b3_b4(tmp):
    b3, b4 = [], []
    for uid, arch, knobs, kinds in UNSAFE:
        if not b3_selected(uid):
            continue
        row, rows4 = time_to_bug(tmp, uid, arch, knobs, kinds, B3_ENGINE)
        b3.append(row)
        b4 += rows4
    for arch, knobs in CONTROLS if not B3_ROWS else ():
        c = Campaign(arch, knobs, Path(tmp) / f"b3-control-{arch}-{len(b3)}", max_ops=32)
        run_campaign(c, B3_ENGINE, B3_CAP, None, 1, True)
        m1 = arch == "s390" and knobs.get("s390.defer_gmap_unlink", "no") == "no"
        kinds = sorted({f.kind for f in c.findings})
        b3.append({"id": "B3-control", "arch": arch, "knobs": knobs, "engine": B3_ENGINE,
                   "seconds": round(c.elapsed, 1), "executions": c.executions,
                   "violations": sum(1 for f in c.findings if not (m1 and f.kind == "gmap-dangling")),
                   "m1_findings": sum(1 for f in c.findings if m1 and f.kind == "gmap-dangling"), "kinds": kinds})
    return b3, b4


FEATURE_VARIANTS = ("U4", "U7", "U8", "M1")  # issue 11: time to bug with and without the semantic features


def b3_features(tmp):
    """atheris' time to bug on U4, U7, U8 and M1 with the generator's semantic features (gen.c) counted as
    coverage and without (the default beside the engine's coverage build), same seeds, same caps."""
    from ptfuzz.search.campaign import native_engine_so
    if native_engine_so() is None:  # without the engine's edges, "features off" would fuzz blind
        return [{"id": "B3-features", "skipped": "needs the coverage build of the engine (clang, make setup)"}]
    rows = []
    for uid, arch, knobs, kinds in UNSAFE:
        if uid not in FEATURE_VARIANTS:
            continue
        for on in (True, False):
            row = time_to_bug(tmp, uid, arch, knobs, kinds, "atheris", f"f{on}", features=on)[0]
            rows.append({**row, "id": "B3-features", "features": on})
    return rows


B7_TRACES = param("B7_TRACES", 1000, 100)


def b7(tmp):
    """crosscheck on this machine's own arch: agreement out of B7_TRACES, and traces per second."""
    import platform as plat
    if plat.machine() not in ("x86_64", "aarch64") or not sys.platform.startswith("linux"):
        return [{"id": "B7", "skipped": f"crosscheck runs on x86_64 or aarch64 Linux, not {plat.machine()}"}]
    t0 = time.perf_counter()
    r = subprocess.run([*PTFUZZ, "crosscheck", "--gen", str(B7_TRACES), "--seed", "1", "--json", "-o",
                        str(Path(tmp) / "b7")], capture_output=True, text=True)
    secs = time.perf_counter() - t0
    lines = [json.loads(line) for line in r.stdout.splitlines()]
    if r.returncode not in (0, 1) or not lines:
        return [{"id": "B7", "error": (r.stderr.strip().splitlines() or ["no output"])[-1]}]
    traces, summary = lines[:-1], lines[-1]
    figures = {"result": 0, "processes": 0, "pt_bytes": 0, "pmd_mapped": 0}
    for t in traces:
        if t["first_disagreement"]:
            figures[t["first_disagreement"]["figure"]] += 1
    return [{"id": "B7", "arch": plat.machine(), "traces": summary["traces"], "agree": summary["agree"],
             "first_disagreement_by_figure": figures, "unstable": summary["unstable"], "knobs": summary["knobs"],
             "seconds": round(secs, 1), "traces_per_s": round(summary["traces"] / secs, 1),
             "host": summary["host"]}]


B7K_TRACES = param("B7K_TRACES", 1000, 50)
B7K_KERNELS = os.environ.get("BENCH_B7K_KERNELS", "arm64-6.1 arm64-6.12 arm64-7.2 arm64-7.2-16k s390x-6.1 s390x-6.12 "
                             "s390x-7.2").split()


def b7k_row(kernel, summary, traces, secs, source=None):
    figures = {"result": 0, "processes": 0, "pt_bytes": 0, "pmd_mapped": 0}
    for t in traces:
        if t.get("first_disagreement"):
            figures[t["first_disagreement"]["figure"]] += 1
    row = {"id": "B7K", "kernel": kernel, "release": summary.get("release"), "traces": summary["traces"],
           "agree": summary["agree"], "first_disagreement_by_figure": figures, "unstable": summary["unstable"],
           "guest_errors": summary.get("errors", 0), "knobs": summary["knobs"],
           "boot_s": summary.get("boot_seconds"), "seconds": round(secs, 1),
           "traces_per_s": summary.get("traces_per_second")}
    if source:
        row["source"] = source
    return row


def b7k(tmp):
    """B7 per foreign kernel under QEMU (docs/kernels.md): boot seconds, agreement, traces per second.
    Opt-in (BENCH_ONLY=B7K: an hour or more at full size); a kernel that is not fetched, or tools that are
    missing, give a skipped row. BENCH_B7K_FROM=DIR takes `crosscheck --kernel K --json` outputs saved as
    DIR/K.json instead of running them (the row names its source)."""
    rows = []
    src = os.environ.get("BENCH_B7K_FROM")
    for k in B7K_KERNELS:
        if src:
            f = Path(src) / f"{k}.json"
            if not f.is_file():
                rows.append({"id": "B7K", "kernel": k, "skipped": f"no {f}"})
                continue
            lines = [json.loads(x) for x in f.read_text().splitlines() if x.startswith("{")]
            summary = lines[-1]
            rows.append(b7k_row(k, summary, lines[:-1], summary.get("seconds", 0), source=str(f)))
            continue
        t0 = time.perf_counter()
        r = subprocess.run(["nice", "-n", "10", *PTFUZZ, "crosscheck", "--kernel", k, "--gen", str(B7K_TRACES),
                            "--seed", "1", "--json", "-o", str(Path(tmp) / "b7k" / k)], capture_output=True, text=True)
        secs = time.perf_counter() - t0
        lines = [json.loads(x) for x in r.stdout.splitlines() if x.startswith("{")]
        if r.returncode not in (0, 1) or not lines:
            rows.append({"id": "B7K", "kernel": k, "skipped": (r.stderr.strip().splitlines() or ["no output"])[-1]})
            continue
        rows.append(b7k_row(k, lines[-1], lines[:-1], secs))
    return rows


B8_DEPTH = param("B8_DEPTH", 10, 8)
B8_TIME = param("B8_TIME", 60.0, 15.0)


# The invalidation window needs a second cpu (inval_hold on the one a guest fault occupies is refused); one
# pid keeps that search small (docs/check.md).
B8_ARGS = {"U14": ["--cpus", "2", "--pids", "1"], "U15": ["--cpus", "2", "--pids", "1"]}


def b8(tmp, b3_rows):
    """`ptfuzz check` on each arch's defaults and on each unsafe variant (M1 is s390's defaults): the verdict,
    the depth reached, states per second, and the shortest counterexample's length and time against the
    fuzzer's median time to the same bug (B3, when it ran in this run). Whatever else check's JSON reports
    (per-depth figures, say) is kept under "check"."""
    probe = subprocess.run([*PTFUZZ, "check", "--help"], capture_output=True, text=True)
    if probe.returncode != 0:
        return [{"id": "B8", "skipped": "not available: this ptfuzz has no `check` command"}]
    fuzz_median = {r["variant"]: r["median_s"] for r in b3_rows if r["id"] == "B3"}
    configs = [(f"{a} defaults", a, {}, None) for a in ("arm64", "x86_64")] + [(u, a, k, kinds) for u, a, k, kinds in UNSAFE]
    rows = []
    for label, arch, knobs, kinds in configs:
        args = [*PTFUZZ, "check", "--arch", arch, *(f"--knob={k}={v}" for k, v in knobs.items()),
                *B8_ARGS.get(label, []), "--depth", str(B8_DEPTH), "--time", str(B8_TIME), "--json", "--corpus", str(Path(tmp) / f"b8-{label}")]
        t0 = time.perf_counter()
        r = subprocess.run(args, capture_output=True, text=True, cwd=ROOT)
        secs = time.perf_counter() - t0
        records = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
        if r.returncode not in (0, 1, 3) or not records:
            rows.append({"id": "B8", "config": label, "exit": r.returncode,
                         "error": (r.stderr.strip().splitlines() or ["no output"])[-1]})
            continue
        rec = records[-1]
        kind = (rec.get("violation") or {}).get("kind")
        seconds = rec.get("seconds") or secs
        length = len(tracemod.load(rec["path"]).ops) if rec.get("path") else None
        rows.append({"id": "B8", "config": label, "arch": arch, "knobs": knobs, "verdict": rec.get("verdict"),
                     "depth": rec.get("depth"), "states": rec.get("states"), "distinct": rec.get("distinct"),
                     "seconds": round(seconds, 2),
                     "states_per_s": round(rec["states"] / seconds) if rec.get("states") and seconds else None,
                     "violation": kind, "expected": sorted(kinds) if kinds else "none",
                     "as_expected": (kind in kinds) if kinds else kind is None, "counterexample_ops": length,
                     "fuzzer_median_s": fuzz_median.get(label), "check": rec})
    return rows



B8_CORE = ("x86_64", ["--pids", "1", "--depth", "8"])  # exhausts in seconds: every run does the same work


def _check_run(args, env, tmp):
    """One `ptfuzz check ... --json` in a child: (record, wall s, CPU s of the child and its workers)."""
    before = os.times()
    t0 = time.perf_counter()
    r = subprocess.run([*PTFUZZ, "check", *args, "--json", "--corpus", str(Path(tmp) / "b8-core")], capture_output=True,
                       text=True, cwd=ROOT, env={**os.environ, **(env or {})})
    wall = time.perf_counter() - t0
    after = os.times()
    cpu = (after.children_user + after.children_system) - (before.children_user + before.children_system)
    recs = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    return (recs[-1] if recs else {"error": r.stderr.strip()[-200:]}), wall, cpu


CG_DRIVER = """import sys
from ptfuzz.search.check import check
check(sys.argv[1], {}, int(sys.argv[2]), pids=int(sys.argv[3]), seconds=3600)
"""


def _step_share(tmp, arch="x86_64", depth=6, pids=1):
    """Instructions (callgrind, repeatable on a loaded machine) of the one-process search per state tried, and
    of the engine's step alone per state: their ratio is the search's states/s over the engine's own steps/s
    on the same steps, at equal instructions per cycle. None without valgrind."""
    import shutil
    if not shutil.which("valgrind"):
        return None
    driver, out = Path(tmp) / "b8_cg.py", Path(tmp) / "b8.callgrind"
    driver.write_text(CG_DRIVER)
    r = subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", "--toggle-collect=checker_run",
                        sys.executable, str(driver), arch, str(depth), str(pids)], capture_output=True, text=True,
                       cwd=ROOT)
    if r.returncode != 0 or not out.exists():
        return None
    ann = subprocess.run(["callgrind_annotate", "--inclusive=yes", str(out)], capture_output=True, text=True).stdout
    figures = {}
    for line in ann.splitlines():
        m = re.match(r"^\s*([\d,]+) \(.*?\)\s+\S*?:(checker_run|ptf_step|ptf_digest_sym|ptf_finish|ptf_copy|ptf_same) ", line)
        if m and m.group(2) not in figures:
            figures[m.group(2)] = int(m.group(1).replace(",", ""))
    if "checker_run" not in figures or "ptf_step" not in figures:
        return None
    return {"instructions": figures, "step_share": round(figures["ptf_step"] / figures["checker_run"], 3)}


B8_COMMUTE_STATES = param("B8_COMMUTE_STATES", 150, 40)


def b8_commute():
    """How much any partial-order reduction could prune, measured on check's own alphabet (arm64 and x86_64
    defaults, 2 pids, 1 cpu, 1 VM): at states along random walks (1-7 operations that change something), every
    pair of operations that each change the state is stepped in both orders from a copy; the pair commutes when
    both orders reach the same digest with the same results and no violation. A sleep set can skip one order of
    a commuting pair only, and a persistent set needs an operation that commutes with everything another one
    could do, so the commuting share bounds every POR on this alphabet, whatever its independence rules; the
    share --por's rules declare (ALWAYS or APART, ptfuzz/search/por.py) is beside it."""
    import random
    from ptfuzz import _engine
    from ptfuzz.engine import CONFIG_ORDER
    from ptfuzz.names import ARCH_NAMES, knob_vector
    from ptfuzz.search.check import DEFAULTS, ELFS, alphabet, domains
    from ptfuzz.search.por import ALWAYS, APART, independent
    from ptfuzz.trace import CONFIG_DEFAULTS
    cfg = tuple(int(CONFIG_DEFAULTS[k]) for k in CONFIG_ORDER)
    rows = []
    for arch in ("arm64", "x86_64"):
        ops = alphabet(arch, domains(arch, {}, DEFAULTS["pids"], DEFAULTS["cpus"], DEFAULTS["vms"], DEFAULTS["addrs"]))
        rng = random.Random(8)
        states = changing = pairs = commuting = declared = 0
        while states < B8_COMMUTE_STATES:
            e = _engine.Engine(ARCH_NAMES.index(arch), knob_vector(arch, {}), cfg, tuple(ELFS[arch]))
            for _ in range(rng.randrange(1, 8)):
                d = e.digest()
                moves = []
                for op in ops:
                    w = e.clone()
                    r = w.step(op)
                    if w.violation() is None and w.digest() != d:
                        moves.append((op, r, w))
                if not moves:
                    break
                states += 1
                changing += len(moves)
                for i in range(len(moves)):
                    a, ra, wa = moves[i]
                    for x, rx, wx in moves[i + 1:]:
                        pairs += 1
                        declared += independent(a, x) in (ALWAYS, APART)
                        ax, xa = wa.clone(), wx.clone()
                        rax, rxa = ax.step(x), xa.step(a)
                        commuting += (ax.violation() is None and xa.violation() is None and rax == rx and rxa == ra
                                      and ax.digest() == xa.digest())
                e = rng.choice(moves)[2]
        rows.append({"id": "B8-commute", "arch": arch, "alphabet": len(ops), "states": states,
                     "changing_per_state": round(changing / states, 2), "pairs": pairs,
                     "commuting_share": round(commuting / pairs, 4) if pairs else None,
                     "declared_share": round(declared / pairs, 4) if pairs else None})
    return rows


def b8_core(tmp):
    """Per-core speed, scaling with jobs, the POR reduction factor and the depth reached in B8_TIME, each as a
    ratio of two runs in this run. "before": check.c as it was (one process, no POR, every successor digested:
    PTFUZZ_CHECK_SAME=0, PTFUZZ_CHECK_NOOP=0); "after": the defaults (every core, --por, ptf_same, ptf_noop)."""
    arch, args = B8_CORE
    rows = []
    runs = {}
    before = {"PTFUZZ_CHECK_SAME": "0", "PTFUZZ_CHECK_NOOP": "0"}
    for label, extra, env in (("before", ["--jobs", "1", "--no-por"], before),
                              ("one process without ptf_noop", ["--jobs", "1", "--no-por"], {"PTFUZZ_CHECK_NOOP": "0"}),
                              ("one process", ["--jobs", "1", "--no-por"], {}),
                              ("levels 1 job", ["--jobs", "1", "--por"], {}),
                              ("levels 2 jobs no por", ["--jobs", "2", "--no-por"], {}),
                              ("levels 2 jobs", ["--jobs", "2", "--por"], {}),
                              ("2 cpus no por", ["--jobs", "1", "--no-por", "--cpus", "2", "--depth", "7"], {}),
                              ("2 cpus por", ["--jobs", "1", "--por", "--cpus", "2", "--depth", "7"], {}),
                              # two processes: where the state-dependent rule (POR_APART, lvl.c) can prune
                              ("2 pids no por", ["--jobs", "1", "--no-por", "--pids", "2", "--depth", "7"], {}),
                              ("2 pids static por", ["--jobs", "1", "--por", "--pids", "2", "--depth", "7"],
                               {"PTFUZZ_POR_APART": "0"}),
                              ("2 pids por", ["--jobs", "1", "--por", "--pids", "2", "--depth", "7"], {})):
            rec, wall, cpu = _check_run(["--arch", arch, *args, *extra], env, tmp)
            runs[label] = (rec, wall, cpu)
            rows.append({"id": "B8-core", "config": label, "arch": arch, "args": args + extra, "env": env,
                         "verdict": rec.get("verdict"), "states": rec.get("states"), "pruned": rec.get("pruned"),
                         "distinct": rec.get("distinct"), "wall_s": round(wall, 2), "cpu_s": round(cpu, 2),
                         "states_per_cpu_s": round(rec["states"] / cpu) if rec.get("states") and cpu else None,
                         "worker_cpu_s": rec.get("worker_cpu_s")})
    share = _step_share(tmp)
    if share:
        rows.append({"id": "B8-core", "config": "instructions, one process", "arch": "x86_64",
                     "args": ["--pids", "1", "--depth", "6"], **share})
    for label, tool_args in (("before", ["--jobs", "1", "--no-por"]), ("after, static por", []), ("after", [])):
        for a in ("arm64", "x86_64"):
            env = before if label == "before" else {}
            if label == "after, static por":  # --por's static rules alone (before the state-dependent rule)
                env = {"PTFUZZ_POR_APART": "0"}
            rec, wall, cpu = _check_run(["--arch", a, "--depth", "20", "--time", str(B8_TIME), *tool_args], env, tmp)
            rows.append({"id": "B8-depth", "config": f"{a} defaults {label}", "arch": a, "args": tool_args,
                         "verdict": rec.get("verdict"), "depth_reached": rec.get("depth"),
                         "distinct": rec.get("distinct"), "states": rec.get("states"), "wall_s": round(wall, 1),
                         "cpu_s": round(cpu, 1), "jobs": rec.get("jobs"), "por": rec.get("por")})
    return rows


def ratios(results) -> dict:
    """Figures of this run against each other and against docs/bench.md's targets (value / target: >= 1 meets a
    throughput target, <= 1 a time or memory one)."""
    out = {}
    pick = {(r["id"], r.get("arch"), r.get("form"), r.get("what", "")[:10]): r for r in results}
    for arch in sorted(ARCH_NAMES):
        packed, lst = pick.get(("B1", arch, "packed", "end to end")), pick.get(("B1", arch, "list", "end to end"))
        engine, fixed = pick.get(("B1", arch, "-", "engine onl")), pick.get(("B1", arch, "-", "fixed cost"))
        if packed and lst and engine:
            out[f"B1 {arch} packed end to end / target 10M ops/s"] = round(packed["ops_per_s"] / TARGET["B1_packed"], 3)
            out[f"B1 {arch} list end to end / target 2M ops/s"] = round(lst["ops_per_s"] / TARGET["B1_list"], 3)
            out[f"B1 {arch} list / packed (end to end)"] = round(lst["ops_per_s"] / packed["ops_per_s"], 3)
            out[f"B1 {arch} packed end to end / engine only"] = round(packed["ops_per_s"] / engine["ops_per_s"], 3)
            out[f"B1 {arch} fixed cost / packed end to end time"] = round(fixed["median_s"] / packed["median_s"], 3)
    for r in results:
        if r["id"] == "B2" and r["engine"] == "atheris":
            what = "atheris, semantic features," if r.get("semantic_features") else "atheris"
            out[f"B2 {r['arch']} {what} execs/s / target 20k"] = round(r["execs_per_s"] / TARGET["B2_atheris"], 3)
        elif r["id"] == "B3-features" and r.get("features"):
            off = next((o for o in results if o["id"] == "B3-features" and o["variant"] == r["variant"]
                        and not o["features"]), None)
            if off and r["median_execs"] and off["median_execs"]:
                out[f"B3 {r['variant']} atheris executions to bug, features on / off"] = round(
                    r["median_execs"] / off["median_execs"], 3)
        elif r["id"] == "B3" and r["median_s"] is not None:
            out[f"B3 {r['variant']} median s / target 10 s"] = round(r["median_s"] / TARGET["B3_median_s"], 3)
        elif r["id"] == "B5":
            out[f"B5 {r['arch']} peak RSS / target"] = round(r["peak_rss_bytes"] / r["rss_target_bytes"], 3)
        elif r["id"] == "B8" and r.get("states_per_s"):
            out[f"B8 {r['config']} states/s / target 1M"] = round(r["states_per_s"] / TARGET["B8_states_per_s"], 3)
    core = {r["config"]: r for r in results if r["id"] == "B8-core"}
    per = {k: v.get("states_per_cpu_s") for k, v in core.items()}
    if per.get("before") and per.get("one process"):
        out["B8 states per CPU-s, one process, after / before (ptf_same, ptf_noop)"] = round(
            per["one process"] / per["before"], 3)
    if per.get("one process without ptf_noop") and per.get("one process"):
        out["B8 states per CPU-s, one process, with / without ptf_noop"] = round(
            per["one process"] / per["one process without ptf_noop"], 3)
    share = core.get("instructions, one process", {}).get("step_share")
    if share:
        out["B8 states/s / the engine's own steps/s on the same steps (callgrind step share)"] = share
    if per.get("one process"):
        out["B8 one process states per CPU-s / target 1M"] = round(per["one process"] / TARGET["B8_states_per_s"], 3)
    two, one = core.get("levels 2 jobs no por"), core.get("one process")
    if two and one and two.get("wall_s") and one.get("wall_s"):
        out["B8 states/s wall, 2 jobs / 1 process (load-dependent)"] = round(one["wall_s"] / two["wall_s"], 3)
        if two.get("worker_cpu_s"):
            out["B8 speedup on 2 idle cores: 1-process CPU-s / slowest of 2 workers' CPU-s"] = round(
                one["cpu_s"] / max(two["worker_cpu_s"]), 3)
    for a, b, name in (("levels 2 jobs no por", "levels 2 jobs", "defaults"), ("2 cpus no por", "2 cpus por", "--cpus 2"),
                       ("2 pids no por", "2 pids por", "--pids 2"),
                       ("2 pids no por", "2 pids static por", "--pids 2, static rules only")):
        if core.get(a, {}).get("states") and core.get(b, {}).get("states"):
            out[f"B8 POR reduction factor (states generated without / with), {name}"] = round(
                core[a]["states"] / core[b]["states"], 3)
    depth = {r["config"]: r for r in results if r["id"] == "B8-depth"}
    for a in ("arm64", "x86_64"):
        x, y = depth.get(f"{a} defaults before"), depth.get(f"{a} defaults after")
        if x and y and x.get("depth_reached") is not None and y.get("depth_reached") is not None:
            out[f"B8 {a} defaults depth reached in B8_TIME, after - before"] = y["depth_reached"] - x["depth_reached"]
        z = depth.get(f"{a} defaults after, static por")
        if z and y and z.get("depth_reached") is not None and y.get("depth_reached") is not None:
            out[f"B8 {a} defaults depth reached in B8_TIME, after - after with static por only"] = (
                y["depth_reached"] - z["depth_reached"])
    return out


def show(r) -> str:
    if r["id"] == "B1":
        rate = f"{r['ops_per_s']:>12,} ops/s" if r["ops_per_s"] else " " * 18
        return (f"B1 {r['arch']:<6} {r['form']:<6} {r['what']:<48} {rate} "
                f"(median {r['median_s']}s, {r['min_s']}-{r['max_s']})")
    if r["id"] == "B5":
        return (f"B5 {r['arch']:<6} peak RSS {r['peak_rss_bytes'] / 2**20:.1f} MiB "
                f"(target {r['rss_target_bytes'] / 2**20:.1f} MiB), model tables {r['model_table_bytes']:,} B, "
                f"kernel {r['kernel_table_bytes']:,} B, equal={r['model_equals_kernel']}")
    return " ".join(f"{k}={v}" for k, v in r.items() if k not in ("check", "host"))


SECTIONS = ("B1", "B2", "B3", "B3F", "B5", "B6", "B7", "B7K", "B8")


def section(row_id: str) -> str:
    """The section a result row belongs to (B4 and the B3 controls come with B3)."""
    return {"B4": "B3", "B3-control": "B3", "B3-features": "B3F", "B8-core": "B8", "B8-depth": "B8",
            "B8-commute": "B8"}.get(row_id, row_id)


def main():
    only = set(filter(None, os.environ.get("BENCH_ONLY", "").split(",")))
    want = lambda *ids: not only or bool(set(ids) & only)  # noqa: E731
    rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout.strip()
    run = {"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "git_revision": rev,
           "load_average_at_start": os.getloadavg(),
           "parameters": {"quick": QUICK, "reps": REPS, "b1_ops": B1_OPS, "b2_time_s": B2_TIME,
                          "b3_trials": B3_TRIALS, "b3_cap_s": B3_CAP, "b3_engine": B3_ENGINE,
                          "b3_rows": sorted(B3_ROWS) or "all", "b5_gib": B5_GIB,
                          "b7_traces": B7_TRACES, "b7k_traces": B7K_TRACES, "b8_depth": B8_DEPTH, "b8_time_s": B8_TIME}}
    # BENCH_ONLY re-measures some sections and keeps the others' rows from results.json, each section
    # saying which run measured it ("sections"): ratios between sections of different runs say so too
    path = ROOT / "bench" / "results.json"
    old = json.loads(path.read_text()) if only and path.exists() else {}
    redo = {s for s in SECTIONS if want(s) or (s == "B3" and want("B4"))}
    results = [r for r in old.get("results", []) if section(r["id"]) not in redo
               or (B3_ROWS and section(r["id"]) == "B3" and not (r["id"] in ("B3", "B4") and b3_selected(r["variant"])))]
    before = {k: old[k] for k in ("date", "git_revision", "parameters") if k in old}
    before["load_average_at_start"] = old.get("load_average_at_start", old.get("machine", {}).get("load_average_at_start"))
    sections = {s: old.get("sections", {}).get(s, before) for s in SECTIONS
                if s not in redo and any(section(r["id"]) == s for r in results)}
    sections.update({s: run for s in redo})
    doc = {"machine": {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count()},
           **run, "sections": sections, "results": results}

    def add(rows):
        """Print and record as they come: an interrupted run keeps what it measured."""
        for r in rows:
            print(show(r), flush=True)
        results.extend(rows)
        doc["ratios"] = ratios(results)
        tracemod.atomic_write(path, (json.dumps(doc, indent=1) + "\n").encode())

    with tempfile.TemporaryDirectory() as tmp:
        for arch in sorted(ARCH_NAMES):
            if want("B1"):
                add(b1(arch, tmp))
            if want("B5"):
                add(b5(arch, tmp))
        if want("B6"):
            add(b6(tmp))
        for arch in sorted(ARCH_NAMES):
            if want("B2"):
                add(b2(arch, tmp))
        if want("B7"):
            add(b7(tmp))
        if "B7K" in only:  # opt-in: boots every kernel of BENCH_B7K_KERNELS
            add(b7k(tmp))
        b3 = [r for r in results if r["id"] == "B3"]  # kept from an earlier run, or measured now
        if "B3" in redo:
            new3, b4 = b3_b4(tmp)
            add(new3 + b4)
            b3 = [r for r in results if r["id"] == "B3"]
        if want("B8"):
            add(b8_core(tmp))
            add(b8_commute())
            add(b8(tmp, b3))
        if want("B3F"):
            add(b3_features(tmp))
    doc["ratios"] = ratios(results)
    for name, value in doc["ratios"].items():
        print(f"ratio {name}: {value}")
    print(f"written to {ROOT / 'bench' / 'results.json'}")


if __name__ == "__main__":
    main()
