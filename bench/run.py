"""bench/run.py: the BENCH.md figures (B1-B5, B7), printed and written to bench/results.json.

Environment: BENCH_ONLY=B1,B3 (a subset), BENCH_REPS (3), BENCH_B1_OPS (2000000), BENCH_B2_TIME (30 s),
BENCH_B3_TRIALS (10), BENCH_B3_CAP (60 s), BENCH_B3_ENGINE (atheris | hypothesis | random),
BENCH_B7_TRACES (1000).
"""
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from ptfuzz import trace as tracemod  # noqa: E402
from ptfuzz.engine import replay  # noqa: E402
from ptfuzz.names import ARCH_NAMES  # noqa: E402
from ptfuzz.gen import generate  # noqa: E402
from ptfuzz.names import OP_NUMBER  # noqa: E402
from ptfuzz.cli.geometry import stage1_geometry  # noqa: E402
from ptfuzz.procs import ptfuzz_command  # noqa: E402

REPS = int(os.environ.get("BENCH_REPS", "3"))
B1_OPS = int(os.environ.get("BENCH_B1_OPS", "2000000"))
PTFUZZ = ptfuzz_command()  # the same ptfuzz package as this script imports


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
    for form in ("list", "packed"):
        path = Path(tmp) / f"b1-{arch}-{form}.msgpack"
        tracemod.save(t, path, packed=form == "packed")
        med, lo, hi = timed(lambda: child_run([*PTFUZZ, "replay", str(path), "--json"]))
        rows.append({"id": "B1", "arch": arch, "form": form, "what": "end to end (read, validate, run, audit)",
                     "ops_per_s": round(B1_OPS / med), "median_s": round(med, 3), "min_s": round(lo, 3),
                     "max_s": round(hi, 3)})
    loaded = tracemod.load(Path(tmp) / f"b1-{arch}-packed.msgpack")
    med, lo, hi = timed(lambda: replay(loaded))
    rows.append({"id": "B1", "arch": arch, "form": "-", "what": "engine only (run, audit, teardown)",
                 "ops_per_s": round(B1_OPS / med), "median_s": round(med, 3), "min_s": round(lo, 3),
                 "max_s": round(hi, 3)})
    return rows


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
    t, base, length = dense_trace(arch)
    path = Path(tmp) / f"b5-{arch}.msgpack"
    tracemod.save(t, path)
    secs, rss, rc = child_run([*PTFUZZ, "replay", str(path), "--json"])
    model = replay(t).stats["page_table_bytes_peak"]
    stack_top = {"s390": 1 << 42, "arm64": 1 << 48, "x86_64": (1 << 47) - 4096}[arch]
    kernel = kernel_table_bytes(arch, base, length, stack_top - 4096)
    return [{"id": "B5", "arch": arch, "what": "4 GiB of 4K pages, one process", "peak_rss_bytes": rss,
             "model_table_bytes": model, "kernel_table_bytes": kernel,
             "rss_target_bytes": int(1.5 * model + (64 << 20)), "rss_within_target": rss <= 1.5 * model + (64 << 20),
             "model_equals_kernel": model == kernel, "seconds": round(secs, 2)}]


B2_TIME = float(os.environ.get("BENCH_B2_TIME", "30"))
B3_TRIALS = int(os.environ.get("BENCH_B3_TRIALS", "10"))
B3_CAP = float(os.environ.get("BENCH_B3_CAP", "60"))
B3_ENGINE = os.environ.get("BENCH_B3_ENGINE", "atheris")
UNSAFE = [("U1", "s390", {"mm.table_free": "immediate"}, {"uaf-table"}),
          ("U2", "s390", {"s390.pgste_decision": "elf-no-restart"}, {"pgste-table-missing"}),
          ("U3", "s390", {"s390.pt_alloc": "fragments-always"}, {"pgste-table-missing", "fragment-corrupt"}),
          ("U4", "s390", {"s390.thp_in_pgste_mm": "allow"}, {"gmap-dangling"}),
          ("U5", "s390", {"s390.pgste_decision": "convert-late", "mm.pmd_recheck": "no"}, {"lost-update"}),
          ("U6", "arm64", {"mm.pmd_recheck": "no"}, {"lost-update"}),
          ("U7", "arm64", {"arm64.stage2_block_check": "none"}, {"stage2-block-illegal"}),
          ("U8", "arm64", {"arm64.thp_size": "vma-naive"}, {"stage2-oversize"}),
          ("U9", "arm64", {"kvm.invalidate_retry": "none"}, {"stage2-stale"}),
          ("U10", "arm64", {"kvm.fault_holds_mm": "no"}, {"stage2-after-release"}),
          ("U11", "x86_64", {"kvm.invalidate_retry": "none"}, {"stage2-stale"}),
          ("U12", "x86_64", {"mm.table_free": "immediate"}, {"uaf-table"}),
          ("U13", "x86_64", {"kvm.fault_holds_mm": "no"}, {"stage2-stale"}),
          # the invalidation window (inval_hold): a commit that checks only mmu_invalidate_seq (issue 9)
          ("U14", "arm64", {"kvm.invalidate_retry": "seq-only"}, {"stage2-stale"}),
          ("U15", "x86_64", {"kvm.invalidate_retry": "seq-only"}, {"stage2-stale"})]
CONTROLS = [("s390", {}), ("arm64", {}), ("x86_64", {}), ("s390", {"s390.pt_alloc": "full-page"}),
            ("s390", {"s390.pgste_decision": "sysctl-only"}), ("s390", {"s390.pgste_decision": "convert-late"}),
            ("s390", {"s390.defer_gmap_unlink": "yes", "s390.thp_in_pgste_mm": "allow"}),
            ("arm64", {"arm64.stage2_block_check": "can-map-block-size"}),
            ("arm64", {"arm64.stage2_block_check": "has-pmd"}), ("arm64", {"arm64.stage2_block_check": "has-pud"}),
            ("arm64", {"kvm.fault_holds_mm": "no", "kvm.release_check": "root"}),
            ("x86_64", {"kvm.fault_holds_mm": "no", "kvm.release_check": "root"})]


def b2(arch, tmp):
    from ptfuzz.cli.fuzz import run_campaign
    from ptfuzz.fuzz import Campaign
    rows = []
    for engine in ("atheris", "hypothesis", "random"):
        c = Campaign(arch, {}, Path(tmp) / f"b2-{arch}-{engine}", max_ops=32)
        run_campaign(c, engine, B2_TIME, None, 1, True)
        rows.append({"id": "B2", "arch": arch, "engine": engine, "seconds": round(c.elapsed, 1),
                     "executions": c.executions, "execs_per_s": round(c.executions / c.elapsed),
                     "coverage": c.coverage or None, "findings": len(c.findings)})
    return rows


def one_minimal(t):
    from dataclasses import replace as dc_replace
    kind = t.expect["kind"]
    for i in range(len(t.ops)):
        v = replay(dc_replace(t, ops=np.delete(t.ops, i, axis=0))).violation
        if v is not None and v.kind == kind:
            return False
    return True


def b3_b4(tmp):
    from ptfuzz.cli.fuzz import run_campaign
    from ptfuzz.fuzz import Campaign
    b3, b4 = [], []
    for uid, arch, knobs, kinds in UNSAFE:
        times, execs, lengths = [], [], []
        for trial in range(B3_TRIALS):
            c = Campaign(arch, knobs, Path(tmp) / f"b3-{uid}-{trial}", max_ops=32, seed=1000 * trial + 7)
            run_campaign(c, B3_ENGINE, B3_CAP, None, 1, False)
            f = c.findings[0] if c.findings else None
            if f and f.kind in kinds:
                times.append(f.seconds)
                execs.append(f.executions)
                lengths.append(len(f.trace.ops))
                st = f.minimize_stats
                b4.append({"id": "B4", "variant": uid, "trial": trial, "ops_before": st.ops_before,
                           "ops_after": st.ops_after, "replays": st.replays, "seconds": round(st.seconds, 3),
                           "one_minimal": one_minimal(f.trace)})
        b3.append({"id": "B3", "variant": uid, "arch": arch, "knobs": knobs, "engine": B3_ENGINE,
                   "found": f"{len(times)}/{B3_TRIALS}",
                   "median_s": round(statistics.median(times), 3) if times else None,
                   "min_s": round(min(times), 3) if times else None, "max_s": round(max(times), 3) if times else None,
                   "median_execs": int(statistics.median(execs)) if execs else None,
                   "median_ops": statistics.median(lengths) if lengths else None})
    for arch, knobs in CONTROLS:
        c = Campaign(arch, knobs, Path(tmp) / f"b3-control-{arch}-{len(b3)}", max_ops=32)
        run_campaign(c, B3_ENGINE, B3_CAP, None, 1, True)
        b3.append({"id": "B3-control", "arch": arch, "knobs": knobs, "engine": B3_ENGINE,
                   "seconds": round(c.elapsed, 1), "executions": c.executions, "violations": len(c.findings)})
    return b3, b4


B7_TRACES = int(os.environ.get("BENCH_B7_TRACES", "1000"))


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


def main():
    results = []
    only = set(filter(None, os.environ.get("BENCH_ONLY", "").split(",")))
    with tempfile.TemporaryDirectory() as tmp:
        for arch in sorted(ARCH_NAMES):
            if not only or "B1" in only:
                results += b1(arch, tmp)
            if not only or "B5" in only:
                results += b5(arch, tmp)
            if not only or "B2" in only:
                results += b2(arch, tmp)
        if not only or "B7" in only:
            results += b7(tmp)
        if not only or {"B3", "B4"} & only:
            b3, b4 = b3_b4(tmp)
            results += b3 + b4
    rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout.strip()
    doc = {"machine": {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count()},
           "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "git_revision": rev, "reps": REPS,
           "results": results}
    tracemod.atomic_write(ROOT / "bench" / "results.json", (json.dumps(doc, indent=1) + "\n").encode())
    for r in results:
        if r["id"] in ("B2", "B3", "B3-control", "B4", "B7"):
            print(" ".join(f"{k}={v}" for k, v in r.items()))
        elif r["id"] == "B1":
            print(f"B1 {r['arch']:<6} {r['form']:<6} {r['what']:<42} {r['ops_per_s']:>12,} ops/s "
                  f"(median {r['median_s']}s, {r['min_s']}-{r['max_s']})")
        else:
            print(f"B5 {r['arch']:<6} peak RSS {r['peak_rss_bytes'] / 2**20:.1f} MiB "
                  f"(target {r['rss_target_bytes'] / 2**20:.1f} MiB), model tables {r['model_table_bytes']:,} B, "
                  f"kernel {r['kernel_table_bytes']:,} B, equal={r['model_equals_kernel']}")
    print(f"written to {ROOT / 'bench' / 'results.json'}")


if __name__ == "__main__":
    main()
