"""bench/profile.py: where the engine's time per operation goes, on B1's workload (`make profile`).

Per arch: the engine alone runs the first --ops operations of `gen --seed 1` (median CPU time of 3 runs), then
once under callgrind, counting instructions inside run() only (--toggle-collect=py_run: no Python, no file
reading). Instructions are exact and repeatable on a loaded machine, where timings are not; each share is
turned into nanoseconds per operation by the measured CPU time, which assumes the same instructions per cycle
everywhere (memory-bound code such as table fills is cheaper per instruction than it looks, branchy walks
dearer). Printed: the split by handler (what each operation kind costs in all, and per call) and by source file
and function (self cost). --json FILE also writes the figures.
"""
import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from ptfuzz import trace as tracemod  # noqa: E402
from ptfuzz.engine import replay  # noqa: E402
from ptfuzz.search.gen import generate  # noqa: E402
from ptfuzz.names import ARCH_NAMES, OPS  # noqa: E402

DRIVER = """import sys
from ptfuzz import trace
from ptfuzz.engine import replay
replay(trace.load(sys.argv[1]))
"""
LINE = re.compile(r"^\s*([\d,]+) \(\s*[\d.]+%\)\s+(\*|>)?\s*(\S+?)(?: \(([\d,]+)x\))?(?: \[(.*)\])?$")
# The dispatchers whose direct callees are the operation handlers (and the post-step oracle under ptf_step).
DISPATCH = ("ptf_step", "op_mm", "op_kvm", "op_actor", "op_exec", "mm_put_users")


def _num(s: str) -> int:
    return int(s.replace(",", ""))


def _name(sym: str) -> tuple[str, str]:
    """'native_ext/mm/memory.c:handle_mm_fault' -> ('memory.c', 'handle_mm_fault'); libraries keep their object's name."""
    where, _, fn = sym.rpartition(":")
    return (os.path.basename(where) if where else "?"), re.sub(r"'\d+$|\.(part|constprop|isra)\.\d+", "", fn)


def annotate(out_file: Path, *extra: str) -> list[str]:
    r = subprocess.run(["callgrind_annotate", "--threshold=100", "--auto=no", *extra, str(out_file)], capture_output=True,
                       text=True, check=True)
    return r.stdout.splitlines()


def parse(out_file: Path) -> dict:
    total = 0
    self_cost: dict[tuple[str, str], int] = defaultdict(int)
    for line in annotate(out_file):
        m = LINE.match(line)
        if not m:
            continue
        if "PROGRAM TOTALS" in line:
            total = _num(m.group(1))
            continue
        src, fn = _name(m.group(3))
        obj = os.path.basename(m.group(5) or "")
        where = src if not obj or obj.startswith("_engine") else obj  # engine code by source file, the rest by library
        self_cost[(where, fn)] += _num(m.group(1))  # recursion levels (fn'2) and inlined headers add up
    if not total:
        total = sum(self_cost.values())
    calls: dict[str, dict[str, tuple[int, int]]] = defaultdict(dict)
    caller = None
    for line in annotate(out_file, "--inclusive=yes", "--tree=calling"):
        m = LINE.match(line)
        if not m:
            continue
        _, fn = _name(m.group(3))
        if m.group(2) == "*":
            caller = fn if fn in DISPATCH else None
        elif m.group(2) == ">" and caller:
            cost, n = _num(m.group(1)), _num(m.group(4) or "0")
            old = calls[caller].get(fn, (0, 0))
            calls[caller][fn] = max(old, (cost, n))  # the same call appears under the inline and the file name
    return {"total": total, "self": dict(self_cost), "calls": {k: dict(v) for k, v in calls.items()}}


def profile_arch(arch: str, nops: int, tmp: Path) -> dict:
    t = generate(arch, nops, 1)
    path = tmp / f"profile-{arch}.msgpack"
    tracemod.save(t, path, packed=True)
    loaded = tracemod.load(path)
    cpu = []
    for _ in range(3):
        t0 = time.process_time()
        replay(loaded)
        cpu.append(time.process_time() - t0)
    secs = statistics.median(cpu)
    out = tmp / f"callgrind-{arch}.out"
    drv = tmp / "driver.py"
    drv.write_text(DRIVER)
    # glibc's memset/memcpy switch to `rep stosb`/`rep movsb` above a few KiB, which callgrind counts as one
    # instruction per byte: 16 KiB of table fill would look like 16,384 instructions. Their vector loops
    # instead make the count the work the CPU does.
    env = dict(os.environ, GLIBC_TUNABLES="glibc.cpu.x86_rep_stosb_threshold=0x7fffffff:"
               "glibc.cpu.x86_rep_movsb_threshold=0x7fffffff")
    subprocess.run(["valgrind", "--tool=callgrind", "--toggle-collect=py_run", f"--callgrind-out-file={out}",
                    sys.executable, str(drv), str(path)], check=True, capture_output=True, cwd=ROOT, env=env)
    p = parse(out)
    ns_per_ir = secs * 1e9 / p["total"]
    counts = np.bincount(loaded.ops[:, 0].astype(np.intp), minlength=len(OPS))
    by_file: dict[str, int] = defaultdict(int)
    for (where, _), c in p["self"].items():
        by_file[where] += c

    def row(cost, calls=None):
        r = {"instructions_per_op": round(cost / nops, 1), "ns_per_op": round(cost * ns_per_ir / nops, 1),
             "share": round(cost / p["total"], 4)}
        if calls:
            r.update(calls=calls, ns_per_call=round(cost * ns_per_ir / calls, 1))
        return r

    return {
        "arch": arch, "ops": nops, "cpu_seconds": round(secs, 4), "ns_per_op": round(secs * 1e9 / nops, 1),
        "instructions_per_op": round(p["total"] / nops, 1), "ns_per_instruction": round(ns_per_ir, 4),
        "op_mix": {OPS[i][0]: int(n) for i, n in enumerate(counts) if n},
        "handlers": {caller: {fn: row(c, n) for fn, (c, n) in sorted(callees.items(), key=lambda kv: -kv[1][0])}
                     for caller, callees in p["calls"].items()},
        "files": {f: row(c) for f, c in sorted(by_file.items(), key=lambda kv: -kv[1])},
        "functions": {f"{w}:{fn}": row(c) for (w, fn), c in sorted(p["self"].items(), key=lambda kv: -kv[1])[:25]},
    }


def show(r: dict) -> None:
    print(f"\n{r['arch']}: {r['ns_per_op']} ns/op engine alone over {r['ops']:,} ops "
          f"({r['instructions_per_op']} instructions/op, {r['ns_per_instruction']} ns/instruction)")
    for caller in DISPATCH:
        callees = r["handlers"].get(caller, {})
        if not callees:
            continue
        print(f"  called by {caller}:")
        for fn, v in list(callees.items())[:12]:
            if v["share"] < 0.005:
                continue
            per = f"{v['ns_per_call']:>9,.0f} ns/call x {v['calls']:,}" if v.get("calls") else ""
            print(f"    {fn:<28} {v['ns_per_op']:>7.1f} ns/op {100 * v['share']:5.1f}%  {per}")
    print("  self cost by source file:")
    for f, v in list(r["files"].items())[:10]:
        print(f"    {f:<28} {v['ns_per_op']:>7.1f} ns/op {100 * v['share']:5.1f}%")
    print("  self cost, top functions:")
    for f, v in list(r["functions"].items())[:15]:
        print(f"    {f:<36} {v['ns_per_op']:>7.1f} ns/op {100 * v['share']:5.1f}%")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ops", type=int, default=200_000, help="operations per arch (callgrind runs ~50x slower)")
    ap.add_argument("--arch", action="append", choices=ARCH_NAMES, help="repeatable; default: every arch")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    a = ap.parse_args()
    if not (shutil.which("valgrind") and shutil.which("callgrind_annotate")):
        sys.exit("bench/profile.py: needs valgrind (callgrind) on PATH")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for arch in a.arch or sorted(ARCH_NAMES):
            results.append(profile_arch(arch, a.ops, Path(tmp)))
            show(results[-1])
    if a.json:
        tracemod.atomic_write(a.json, (json.dumps(results, indent=1) + "\n").encode())


if __name__ == "__main__":
    main()
