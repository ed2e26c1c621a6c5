"""identity.py: fingerprints of everything the engine decides, to prove a refactor changed no behaviour.

`record OUT` writes one JSON line per item: every corpus trace (verdict, violation, per-operation results, events,
digest), generated traces per arch (workload and fuzz profiles: the packed bytes, their outcome and digest), and
check's alphabet with a bounded search's counts per arch. `compare A B` names the first item that differs.
`make identity BASE=REV` records REV (built in a temporary worktree) and the work tree, and compares them.
The imports below are the only part that knows the package's layout: a change that moves these modules updates
them, and the tool still reads a tree from before the move (each name is tried where it lives now, then where it
lived)."""
import hashlib
import importlib
import json
import os
import sys
from pathlib import Path

# the tree whose corpus is fingerprinted: the work tree, or the base revision's checkout (make identity)
ROOT = Path(os.environ.get("IDENTITY_ROOT", Path(__file__).resolve().parent.parent))
GENERATED = 2000  # traces per arch: half workloads, half fuzz-profile traces
ARCHES = ("s390", "arm64", "x86_64")


def _attr(name: str, *modules: str):
    for m in modules:
        try:
            mod = importlib.import_module(m)
        except ImportError:
            continue
        if hasattr(mod, name):
            return getattr(mod, name)
    raise ImportError(f"{name} not found in {modules}")


def _api():
    replay = _attr("replay", "ptfuzz.engine", "ptfuzz.trace.engine", "ptfuzz.model.engine")
    load = _attr("load", "ptfuzz.trace", "ptfuzz.trace.io", "ptfuzz.trace.file")
    generate = _attr("generate", "ptfuzz.gen", "ptfuzz.search.gen")
    fuzz_trace = _attr("fuzz_trace", "ptfuzz.fuzzgen", "ptfuzz.search.fuzzgen", "ptfuzz.search.gen")
    random_choices = _attr("RandomChoices", "ptfuzz.fuzzgen", "ptfuzz.search.fuzzgen", "ptfuzz.search.gen")
    alphabet = _attr("alphabet", "ptfuzz.check", "ptfuzz.search.check")
    domains = _attr("domains", "ptfuzz.check", "ptfuzz.search.check")
    check = _attr("check", "ptfuzz.check", "ptfuzz.search.check")
    return replay, load, generate, fuzz_trace, random_choices, alphabet, domains, check


def _h(data) -> str:
    return hashlib.sha256(data if isinstance(data, bytes) else json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def _outcome(replay, t) -> dict:
    r = replay(t, steps=True)
    v = r.violation
    return {"verdict": r.verdict.value, "violation": None if v is None else [v.kind, v.op_index, v.message],
            "results": _h(bytes(int(x) & 0xFF for x in r.op_results[: r.executed])),
            "events": _h([list(map(int, ev)) for ev in r.events or []]), "digest": r.digest}


def record(out: Path) -> None:
    replay, load, generate, fuzz_trace, random_choices, alphabet, domains, check = _api()
    lines = []
    for path in sorted((ROOT / "corpus").rglob("*.msgpack")):
        lines.append({"item": f"corpus/{path.relative_to(ROOT / 'corpus')}", **_outcome(replay, load(path))})
    for arch in ARCHES:
        for seed in range(GENERATED // 2):
            t = generate(arch, 64, seed)
            lines.append({"item": f"gen/{arch}/{seed}", "ops": _h(t.ops.tobytes()), **_outcome(replay, t)})
        for seed in range(GENERATED // 2):
            t = fuzz_trace(arch, random_choices(seed), 48, {})
            lines.append({"item": f"fuzz/{arch}/{seed}", "ops": _h(t.ops.tobytes()), **_outcome(replay, t)})
        d = domains(arch, {}, 2, 2, 1, 2)
        rows = alphabet(arch, d)
        r = check(arch, {}, 4 if arch == "s390" else 5, seconds=600)
        lines.append({"item": f"check/{arch}", "alphabet": _h(rows), "verdict": r.verdict.value,
                      "states": r.states, "distinct": r.distinct})
    out.write_text("".join(json.dumps(x, sort_keys=True) + "\n" for x in lines))
    print(f"identity: {len(lines)} items -> {out}")


def compare(a: Path, b: Path) -> int:
    la, lb = a.read_text().splitlines(), b.read_text().splitlines()
    da = {json.loads(x)["item"]: x for x in la}
    db = {json.loads(x)["item"]: x for x in lb}
    if da.keys() != db.keys():
        print(f"identity: items differ: only in {a}: {sorted(da.keys() - db.keys())[:5]}, "
              f"only in {b}: {sorted(db.keys() - da.keys())[:5]}")
        return 1
    diff = [k for k in da if da[k] != db[k]]
    for k in diff[:5]:
        print(f"identity: {k} differs:\n  {da[k]}\n  {db[k]}")
    print(f"identity: {len(da) - len(diff)}/{len(da)} items identical")
    return 1 if diff else 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "record":
        record(Path(sys.argv[2]))
    elif len(sys.argv) == 4 and sys.argv[1] == "compare":
        sys.exit(compare(Path(sys.argv[2]), Path(sys.argv[3])))
    else:
        sys.exit("usage: identity.py record OUT | compare A B")
