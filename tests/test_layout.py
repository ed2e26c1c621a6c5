"""test_layout.py: the C engine's layout (issue 18): no circle between its files, each layer calling only the
layers below it (the arch code and KVM reached through ops tables), no function over 100 lines but the listed
ones, and every C function docs/model-notes.md names in its "model function" column exists."""
import collections
import functools
import glob
import os
import re
import shutil
import subprocess
import sysconfig
import tempfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NATIVE = os.path.join(ROOT, "native_ext")


def engine_sources():
    """What setup.py builds into ptfuzz._engine: every .c below native_ext/ but the crosscheck helper (host/)."""
    return sorted(os.path.relpath(p, NATIVE) for p in glob.glob(os.path.join(NATIVE, "**", "*.c"), recursive=True)
                  if not os.path.relpath(p, NATIVE).startswith("host" + os.sep))


# The layers, lowest first: a file may call its own layer and the layers below. mm/ sits below arch/ because
# generic mm code reaches the arch only through struct mm_ops (s390's gmap.c calls mm helpers, as the kernel's
# arch/s390/mm/gmap.c does); kvm/ is reached from mm/ only through struct mmu_notifier_ops. engine.c is the
# dispatcher; the search (gen, check, digest, snap) drives it and the binding (py/) drives everything.
LAYERS = [
    ("core/report.c",),            # violate, emit: calls nothing of the engine's
    ("core/", "fs/"),
    ("mm/",),
    ("arch/",),
    ("kvm/",),
    ("oracle/",),
    ("engine.c",),
    ("search/",),
    ("py/",),
]


def layer(path):
    for i, prefixes in enumerate(LAYERS):
        if any(path == p or (p.endswith("/") and path.startswith(p)) for p in prefixes):
            return i
    raise AssertionError(f"{path}: in no layer of test_layout.LAYERS")


@functools.lru_cache(maxsize=None)
def symbol_graph():
    """{file: {callee file: symbols}} from the objects' defined and undefined symbols (nm)."""
    if not shutil.which("gcc") or not shutil.which("nm"):
        pytest.skip("needs gcc and nm")
    includes = ["-I" + sysconfig.get_paths()["include"], "-I" + NATIVE]
    tmp = tempfile.mkdtemp(prefix="ptfuzz-layout-")
    try:
        jobs = {}
        for src in engine_sources():
            obj = os.path.join(tmp, src.replace(os.sep, "_") + ".o")
            # setup.py's flags (no -D of its own); -O0: only the symbols matter, and it is faster
            jobs[src] = (obj, subprocess.Popen(["gcc", "-c", "-std=c11", "-O0", "-fPIC", *includes,
                                                os.path.join(NATIVE, src), "-o", obj],
                                               stderr=subprocess.PIPE, text=True))
        defined, undefined = {}, {}
        for src, (obj, proc) in jobs.items():
            _, err = proc.communicate()
            assert proc.returncode == 0, f"gcc -c {src}: {err}"
            out = subprocess.run(["nm", obj], capture_output=True, text=True, check=True).stdout
            rows = [line.split() for line in out.splitlines()]
            defined[src] = {r[2] for r in rows if len(r) == 3 and r[1] in "TDRBCG"}
            undefined[src] = {r[1] for r in rows if len(r) == 2 and r[0] == "U"}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    owner = {}
    for src, syms in defined.items():
        for s in syms:
            assert s not in owner, f"{s} defined in both {owner[s]} and {src}"
            owner[s] = src
    graph = {src: collections.defaultdict(set) for src in defined}
    for src, syms in undefined.items():
        for s in syms:
            if s in owner and owner[s] != src:
                graph[src][owner[s]].add(s)
    return graph


def test_no_circle_between_engine_files():
    graph = symbol_graph()
    assert set(graph) == set(engine_sources()) and len(graph["engine.c"]) > 5, "the symbol scan found too little"
    state, stack = {}, []

    def visit(f):
        state[f] = 1
        stack.append(f)
        for g in graph[f]:
            if state.get(g) == 1:
                cycle = stack[stack.index(g):] + [g]
                raise AssertionError("circle: " + " -> ".join(cycle))
            if g not in state:
                visit(g)
        stack.pop()
        state[f] = 2

    for f in sorted(graph):
        if f not in state:
            visit(f)


def test_each_file_calls_only_its_layer_and_below():
    bad = [f"{f} -> {g} ({', '.join(sorted(syms))})"
           for f, callees in symbol_graph().items() for g, syms in callees.items() if layer(g) > layer(f)]
    assert not bad, "calls up:\n" + "\n".join(bad)


def test_report_calls_nothing_and_only_the_search_and_binding_call_the_dispatcher():
    graph = symbol_graph()
    assert not graph["core/report.c"], f"core/report.c calls {dict(graph['core/report.c'])}"
    callers = sorted(f for f, callees in graph.items() if "engine.c" in callees)
    assert all(f.startswith(("search/", "py/")) for f in callers), callers
    # the kernel paths reach the arch and KVM through ops tables, never by name
    for f, callees in graph.items():
        if f.startswith(("core/", "mm/")):
            assert not [g for g in callees if g.startswith(("arch/", "kvm/"))], (f, dict(callees))
    # generic KVM reaches the arch's KVM code through struct kvm_arch_ops (e->kvm_ops), never by name
    assert not [g for g in graph["kvm/kvm_main.c"] if g.startswith("arch/")], dict(graph["kvm/kvm_main.c"])


# Functions over 100 lines, each with why it stays whole.
LONG_FUNCTIONS: set = set()  # none: ptf_copy's shmem part is copy_shm, after dst holds its own buffers again
MAX_LINES = 100


def c_functions():
    """(file, name, lines) of every function defined in the engine's sources and headers."""
    found = []
    paths = [p for p in glob.glob(os.path.join(NATIVE, "**", "*.[ch]"), recursive=True)
             if not os.path.relpath(p, NATIVE).startswith("host" + os.sep)]
    head = re.compile(r"^[A-Za-z_][\w \*]*?\**\b(\w+)\(")
    for path in sorted(paths):
        lines = open(path).read().split("\n")
        start = name = None
        for i, line in enumerate(lines):
            if start is None:
                m = head.match(line)
                if not m or line.rstrip().endswith(";") or line.startswith(("typedef", "#")) or \
                        "=" in line.split("(")[0]:
                    continue
                if "{" in line and line.rstrip().endswith("}"):  # a one-line function
                    found.append((os.path.relpath(path, NATIVE), m.group(1), 1))
                    continue
                j = i
                while j < len(lines) and not lines[j].rstrip().endswith(("{", ";", "}")):
                    j += 1
                if j < len(lines) and lines[j].rstrip().endswith("{"):
                    start, name = i, m.group(1)
            elif line.startswith("}"):
                found.append((os.path.relpath(path, NATIVE), name, i - start + 1))
                start = None
    return found


def test_no_function_over_100_lines_but_the_listed():
    fns = c_functions()
    assert len(fns) > 300, "the function scan found too little: its pattern no longer fits the sources"
    long = {(f, n): k for f, n, k in fns if k > MAX_LINES}
    assert set(long) <= LONG_FUNCTIONS, f"over {MAX_LINES} lines: {sorted(set(long) - LONG_FUNCTIONS)}"
    stale = LONG_FUNCTIONS - set(long)
    assert not stale, f"no longer over {MAX_LINES} lines (drop them from LONG_FUNCTIONS): {sorted(stale)}"


def model_function_names():
    """(file, function) for each file.c:function in the "model function" column of docs/model-notes.md."""
    text = open(os.path.join(ROOT, "docs", "model-notes.md")).read()
    names, col = [], None
    for line in text.split("\n"):
        if not line.startswith("|"):
            col = None
            continue
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip().strip("|"))]
        if "model function" in cells:
            col = cells.index("model function")
            continue
        if col is None or col >= len(cells) or set(cells[col]) <= set("-: "):
            continue
        names += re.findall(r"([\w/.-]+\.c):(\w+)", cells[col])
    return names


def test_model_notes_name_functions_that_exist():
    names = model_function_names()
    assert len(names) > 50
    where = collections.defaultdict(set)
    for f, n, _ in c_functions():
        where[n].add(f)
    for src in engine_sources():  # and the tables the column names (core/names.c:op_defs)
        text = open(os.path.join(NATIVE, src)).read()
        for m in re.finditer(r"^(?:const |static )*[\w ]+?\*?\s*(?:const )?\b(\w+)\s*(?:\[[^\]]*\])?\s*=", text, re.M):
            where[m.group(1)].add(src)
    missing = sorted({f"{f}:{n}" for f, n in names if n not in where and not f.startswith("host/")})
    assert not missing, f"docs/model-notes.md names functions native_ext does not have: {missing}"
    moved = sorted({f"{f}:{n} (now {', '.join(sorted(where[n]))})" for f, n in names
                    if n in where and f not in where[n]})
    assert not moved, f"docs/model-notes.md names the wrong file: {moved}"
