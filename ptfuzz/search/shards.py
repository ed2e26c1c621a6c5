"""`ptfuzz check --shard I/N` result files and `ptfuzz check --merge DIR`.

A shard searches every depth before the split depth like every other shard (the first depth whose level
holds at least 8N states: each shard computes the same levels, so the same split), then keeps only the
states of that level whose digest hashes to I (native_ext/search/lvl.c, lvl_shard_of) and searches on
from those. Every sequence of at most D operations either ends before the split depth (searched by every
shard) or passes through exactly one state of the split level, kept by exactly one shard, whose search
covers every continuation of it (breadth first with deduplication inside the shard, as in the whole
search). So N shards that each exhausted depth D together prove depth D, and the least depth every shard
exhausted is a bound; a violation found by any shard is real (it is replayed before it is written), and it
is a shortest one when no shard stopped before the depth just below it."""
import json
from pathlib import Path

from ..errors import UsageError
from ..trace.io import atomic_write

FORMAT = 1


def parse_shard(text: str) -> tuple:
    i, sep, n = text.partition("/")
    try:
        i, n = int(i), int(n)
    except ValueError:
        raise UsageError(f"--shard {text!r}: expected I/N, e.g. 0/4") from None
    if not sep or not 0 <= i < n or n > 4096:
        raise UsageError(f"--shard {text!r}: I/N with 0 <= I < N <= 4096")
    return i, n


def proved(rec: dict) -> int:
    """The depth a shard's result proves: every sequence of at most that many operations, in its share."""
    if rec["verdict"] == "violation":
        return rec["depth"] - 1  # breadth first: every shorter one was searched
    return rec["depth"]


def write_result(directory: Path, r, domains: dict) -> Path:
    """The shard's result, written atomically (a temporary file in the same directory, renamed)."""
    i, n = r.shard
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    rec = {"format": FORMAT, **r.to_json(), "shard_index": i, "shards": n, "domains": domains,
           "ops": None if r.trace is None else [_text(o) for o in r.trace.ops]}
    path = directory / f"shard-{i}-of-{n}.json"
    atomic_write(path, json.dumps(rec, indent=1, sort_keys=True).encode())
    return path


def _text(row):
    from ..trace import op_text
    return op_text(row)


SAME = ("arch", "knobs", "max_depth", "alphabet", "domains", "por")


def merge_dir(directory: Path, out) -> int:
    """Print what the shard files in directory prove together; returns the exit code (0 the bound holds
    for the whole depth, 1 a violation, 3 some shard stopped short or is missing, 2 bad input)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise UsageError(f"--merge {directory}: not a directory")
    recs = []
    for p in sorted(directory.glob("shard-*-of-*.json")):
        try:
            rec = json.loads(p.read_text())
            rec["_file"] = p.name
            int(rec["shard_index"]), int(rec["shards"]), rec["verdict"], int(rec["depth"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise UsageError(f"--merge {directory}: {p.name}: not a shard result ({exc})") from None
        recs.append(rec)
    if not recs:
        raise UsageError(f"--merge {directory}: no shard-I-of-N.json files")
    n = recs[0]["shards"]
    for rec in recs:
        if rec["shards"] != n or any(rec.get(k) != recs[0].get(k) for k in SAME):
            diff = [k for k in ("shards",) + SAME if rec.get(k) != recs[0].get(k)]
            raise UsageError(f"--merge {directory}: {rec['_file']} and {recs[0]['_file']} are different searches "
                             f"({', '.join(diff)})")
    have = {rec["shard_index"] for rec in recs}
    missing = sorted(set(range(n)) - have)
    first = recs[0]
    max_depth = first["max_depth"]
    bound = min(proved(rec) for rec in recs)
    viols = sorted((rec for rec in recs if rec["verdict"] == "violation"), key=lambda r: (r["depth"], r["shard_index"]))
    knobs = ", ".join(f"{k}={v}" for k, v in first["knobs"].items()) or "default knobs"
    out.print(f"{len(have)} of {n} shards, {first['arch']} ({knobs}), depth {max_depth}, alphabet "
              f"{first['alphabet']} operations", markup=False)
    if missing:
        out.print(f"missing shards: {', '.join(map(str, missing))}: no bound is proved for their share", markup=False)
    else:
        out.print(f"bound proved: no violation in any sequence of <= {bound} operations "
                  f"(every shard searched to at least that depth)", markup=False)
    for rec in recs:
        out.print(f"  shard {rec['shard_index']}/{n}: {rec['verdict']}, depth {rec['depth']}, "
                  f"{rec['distinct']:,} distinct, {rec['seconds']:.1f}s", markup=False)
    if viols:
        v = viols[0]
        shortest = not missing and v["depth"] <= bound + 1
        out.print(f"violation {v['violation']['kind']} in {v['depth']} operations (shard {v['shard_index']}), "
                  f"{'a shortest counterexample' if shortest else 'the shortest found (not proved shortest: a shard stopped earlier)'}",
                  markup=False)
        out.print(f"  {v['violation']['message']}", markup=False)
        for i, op in enumerate(v.get("ops") or []):
            out.print(f"  [{i}] {op}", markup=False)
        if v.get("path"):
            out.print(f"  written to {v['path']} (on the runner of shard {v['shard_index']})", markup=False)
        return 1
    if missing or bound < max_depth:
        return 3
    return 0
