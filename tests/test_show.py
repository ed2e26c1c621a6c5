"""ptfuzz show: the engine's dump against what a trace implies, and the report's SVG structure."""
import re
import xml.etree.ElementTree as ET

import pytest

from conftest import ELFS, M, ROOT
from ptfuzz import trace as tracemod
from ptfuzz.engine import replay
from ptfuzz.report.show import build_report, dump_state, kernel_path
from ptfuzz.trace import Trace, ops_from_list

SVG = "{http://www.w3.org/2000/svg}"
XHTML = "{http://www.w3.org/1999/xhtml}"
REG = ROOT / "corpus" / "regressions"
T = 1 << 40


def report(trace, **kw):
    page = build_report(trace, **kw)
    doc = ET.fromstring(page.split("\n", 1)[1])  # the page is well-formed XML after its doctype
    svgs = {s.get("data-state"): s for s in doc.iter(f"{SVG}svg")}
    return page, doc, svgs


def nodes(svg, cls=None):
    out = [g for g in svg.iter(f"{SVG}g") if "node" in g.get("class", "").split()]
    return [g for g in out if cls in g.get("class", "").split()] if cls else out


def classes(el):
    return set(el.get("class", "").split())


def titles(svg, cls):
    return [g.find(f"{SVG}title").text for g in nodes(svg, cls)]


# ---- the dump: the state as the trace builds it ----

def levels_of(tables):
    out = {}
    for t in tables:
        out[t["level"]] = out.get(t["level"], 0) + 1
    return out


def test_dump_s390_tables_fragments_and_gmap():
    ops = [["exec", 1, -1], ["mmap", 1, 0x10000000, 2 * M, 0], ["fault", 1, 0x10000000, 1],
           ["fault", 1, 0x10100000, 1]]
    t = Trace("s390", ops_from_list(ops), elfs=ELFS)
    st = dump_state(t, None, len(ops))["state"]
    (mm,) = st["mms"].values()
    # region-third top; a segment table each for the stack (2^42 - 128K) and for 0x10000000; a PTE table
    # for the stack page and one per touched 1M segment
    assert levels_of(mm["tables"]) == {2: 1, 3: 2, 4: 3}
    by_addr = {x["addr"]: x for x in mm["tables"]}
    for x in mm["tables"][1:]:
        parent, idx = x["parent"]
        assert any(e[0] == idx and e[1] == 1 and e[2] == x["addr"] for e in by_addr[parent]["entries"])
    leaves = [e for x in mm["tables"] if x["level"] == 4 for e in x["entries"]]
    assert sorted(e[3] for e in leaves) == [0x10000000, 0x10100000, (1 << 42) - 4096]
    assert all(e[1] == 2 and e[4] for e in leaves)  # written: writable leaves
    # three 2K PTE tables: two share a 4K page (fragments), the third half of the next page is free
    halves = [(b["addr"], [h[0] for h in b["halves"]]) for b in st["blocks"] if b["frag"]]
    assert sorted(h for _, hs in halves for h in hs) == [0, 1, 1, 1]
    # the gmap: its segment entry shares the host's PTE table for that segment
    ops2 = ops[:1] + [["sysctl_allocate_pgste", 1]] + ops[:1] + ops[1:3] + [
        ["vm_create", 0, 1, 0], ["memslot", 0, 0, 0, 0x10000000, M], ["guest_fault", 0, 0, 1]]
    st = dump_state(Trace("s390", ops_from_list(ops2), elfs=ELFS), None, len(ops2))["state"]
    (vm,) = st["vms"].values()
    # a 5-level gmap (kvm_arch_init_vm: mem_limit TASK_SIZE_MAX): region-first root down to one segment table
    assert vm["links"] == [(0, 0x10000000)] and levels_of(vm["tables"]) == {0: 1, 1: 1, 2: 1, 3: 1}
    seg = [e for x in vm["tables"] if x["level"] == 3 for e in x["entries"]]
    host = next(x for x in st["mms"][vm["mm"]]["tables"] if x["level"] == 4 and x["va"] == 0x10000000)
    assert seg == [(0, 1, host["addr"], 0, True)]


def test_dump_x86_folds_the_p4d_and_stops_before_teardown():
    ops = [["exec", 1, -1], ["mmap", 1, T, 4 * M, 0], ["fault", 1, T, 1], ["fault", 1, T + 2 * M, 0]]
    t = Trace("x86_64", ops_from_list(ops))
    out = dump_state(t, None, len(ops))
    assert out["executed"] == 4 and out["violation"] == 0
    (mm,) = out["state"]["mms"].values()
    # pgd (p4d folded: no table of level 1), then pud/pmd/pte for the stack and for T
    assert levels_of(mm["tables"]) == {0: 1, 2: 2, 3: 2, 4: 3}
    assert out["state"]["geometry"][1][4] is True  # p4d folded
    zero = [e for x in mm["tables"] if x["level"] == 4 for e in x["entries"] if not e[4]]
    assert len(zero) == 1 and zero[0][2] >= 1 << 34  # the read maps the zero page read-only
    assert replay(t).verdict.value == "clean"


# ---- the report ----

def test_s390_gmap_finding_svg_structure():
    trace = tracemod.load(REG / "s390" / "gmap-dangling-u4.msgpack")
    r = replay(trace)
    offending = int(re.search(r"page table (0x[0-9a-f]+)", r.violation.message).group(1), 16)
    page, doc, svgs = report(trace)
    assert set(svgs) == {"before", "after"}
    for role, svg in svgs.items():
        trees = {g.get("data-tree") for g in svg.iter(f"{SVG}g") if g.get("data-tree")}
        assert trees == {"vm0", "mm0"}
        red = [g for g in nodes(svg, "focus") if g.get("data-addr") == hex(offending)]
        assert red, role
        shares = [p for p in svg.iter(f"{SVG}path") if "share" in classes(p)]
        assert [p.get("data-to") for p in shares] == [hex(offending)], role
        assert ("focus" in classes(shares[0])) == (role == "after")  # dangling only after the collapse
        focus_rows = [g for g in svg.iter(f"{SVG}g") if {"row", "r-focus", "r-share"} <= classes(g)]
        assert len(focus_rows) == 1  # the gmap segment entry
    # after: the old PTE table is the new THP's deposit, hanging off the host segment table
    dep = [g for g in nodes(svgs["after"], "deposit") if g.get("data-addr") == hex(offending)]
    assert dep and "focus" in classes(dep[0])
    assert any("r-changed" in classes(g) for g in svgs["after"].iter(f"{SVG}g"))
    # PGSTE pages drawn as PTEs + PGSTEs; the op list anchors the violating op, open
    assert "PGSTEs 2K" in page
    op6 = next(d for d in doc.iter(f"{XHTML}details") if d.get("id") == "op-6")
    assert "bad" in classes(op6) and op6.get("open") == "open"
    assert "collapse_huge_page" in page and "__gmap_link" in page


def test_arm64_stage2_finding_and_folded_levels():
    trace = tracemod.load(REG / "arm64" / "stage2-block-illegal-u7.msgpack")
    _, _, svgs = report(trace)
    for svg in svgs.values():
        assert {g.get("data-tree") for g in svg.iter(f"{SVG}g") if g.get("data-tree")} == {"vm0", "mm0"}
        # the 1G block at stage-2 level 1, a level this 2-level stage 2 (start level 2) does not have
        assert any("S2 L1" in t for t in titles(svg, "ghost"))
        empty = [g for g in svg.iter(f"{SVG}g") if {"row", "r-empty", "r-focus"} <= classes(g)]
        assert any("1G wanted" in "".join(g.itertext()) for g in empty)
        # arm64 4K/48: the p4d is folded: a pass-through with one entry under each pgd entry
        for f in nodes(svg, "folded"):
            assert f.find(f"{SVG}title").text.startswith("p4d is folded")
            assert len([g for g in f.iter(f"{SVG}g") if "row" in classes(g)]) == 1
    assert len(nodes(svgs["before"], "folded")) == 1 and len(nodes(svgs["after"], "folded")) == 2
    assert any("new" in classes(g) for g in nodes(svgs["after"]))  # the hugetlb fault's pud table


def test_arm64_two_level_geometry_draws_three_pass_throughs():
    ops = [["exec", 1, -1], ["mmap", 1, 1 << 32, 32 * M, 0], ["fault", 1, 1 << 32, 1]]
    t = Trace("arm64", ops_from_list(ops), config={"granule": 16384, "va_bits": 36})
    _, _, svgs = report(t)
    (svg,) = svgs.values()  # a clean trace: the end state
    folded = [f.find(f"{SVG}title").text.split(" ")[0] for f in nodes(svg, "folded")]
    assert sorted(folded) == sorted(["p4d", "pud", "pmd"] * 2)  # under each of the two pgd entries
    assert {n.get("data-addr") for n in nodes(svg, "table")} == {hex(x["addr"]) for x in
                                                                   dump_state(t, None, 3)["state"]["mms"][0]["tables"]}


def test_stage2_after_release_draws_the_freed_root_and_the_fault_holding_it():
    trace = tracemod.load(REG / "arm64" / "stage2-after-release-u10.msgpack")
    page, _, svgs = report(trace)
    ghosts = nodes(svgs["before"], "ghost")
    assert [g.get("data-addr") for g in ghosts] == ["0x14000"] and "focus" in classes(ghosts[0])
    assert "cpu 0 guest fault" in "".join(ghosts[0].itertext())
    assert "kvm.fault_holds_mm=no" in page


def test_uaf_walker_holds_a_freed_table():
    trace = tracemod.load(REG / "s390" / "uaf-table-u1.msgpack")
    page, _, svgs = report(trace)
    g = [n for n in nodes(svgs["after"], "ghost") if n.get("data-addr") == "0x10000"]
    assert g and "GUP-fast walker holds this (stale)" in "".join(g[0].itertext())
    assert "segment 0x10000" in "".join(g[0].itertext())  # its level, from the trace's events
    assert "gup_pmd_range" in page  # the walker reads a segment (pmd) entry at op 6


def test_clean_trace_op_selection_and_escaping():
    ops = [["exec", 1, -1], ["mmap", 1, 0x10000000, M, 0], ["fault", 1, 0x10000000, 1]]
    t = Trace("s390", ops_from_list(ops), elfs=ELFS, meta={"note": "<script>alert('x')</script> & more"})
    page, _, svgs = report(t, op=2)
    assert set(svgs) == {"before", "after"}
    assert "<script>" not in page and "&lt;script&gt;" in page
    new = {n.get("data-addr") for n in nodes(svgs["after"], "new")}
    assert len(new) == 2  # the fault's segment and PTE tables
    with pytest.raises(ValueError):
        build_report(t, op=3)


def test_kernel_paths_follow_ops_events_and_knobs():
    t = Trace("arm64", ops_from_list([["guest_fault_commit", 0], ["madvise", 1, 0, 4096, 3]]))
    assert kernel_path("arm64", t.ops[0], [], None, {"kvm.invalidate_retry": "none"})[1].startswith(
        "mmu_invalidate_retry [not checked")
    assert "collapse_huge_page" in kernel_path("arm64", t.ops[1], [])


def test_cli_show(cli, tmp_path):
    src = REG / "arm64" / "stage2-stale-u9.msgpack"
    out = tmp_path / "r.html"
    r = cli("show", src, "-o", out)
    assert r.returncode == 0 and out.read_text().count("<svg") == 2
    r = cli("show", tmp_path / "missing.msgpack")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    r = cli("show", src, "--op", "99", "-o", out)
    assert r.returncode == 2 and "--op 99" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = cli("show", src, "--knob", "nope=1", "-o", out)
    assert r.returncode == 2


def test_m1_report_lists_shm_vmas_and_the_collapsed_page_cache():
    """M1 happens in a VMA the trees cannot show: the VM's mm and the collapsing mm map one shmem object."""
    trace = tracemod.load(REG / "s390" / "gmap-dangling-m1.msgpack")
    state = dump_state(trace, None, len(trace.ops))["state"]
    shm_vmas = [(mm, vma) for mm, md in state["mms"].items() for vma in md["vmas"] if vma[4] >= 0]
    assert len({mm for mm, _ in shm_vmas}) == 2 and all(vma[:2] == (vma[0], vma[0] + M) for _, vma in shm_vmas)
    ((obj, blocks),) = state["shm"]
    assert obj == 0 and blocks and blocks[0][1] != 0  # collapse_file left one PMD-size folio
    page, doc, _ = report(trace)
    tables = {h.get("id"): h for h in doc.iter(f"{XHTML}h2")}
    assert {"vmas", "shmem"} <= set(tables)
    assert page.count("shmem 0 @ pgoff 0x0") == 2 and "PMD-size folio at pfn" in page


def test_m1_kernel_path_is_the_shmem_one():
    """M1's MADV_COLLAPSE goes through collapse_file and retract_page_tables, and its table waits for
    pte_free_defer's grace period, not page_table_free_rcu (which is the one that would gmap_unlink)."""
    trace = tracemod.load(REG / "s390" / "gmap-dangling-m1.msgpack")
    r = replay(trace, steps=True)
    path = kernel_path("s390", trace.ops[7], [e for e in r.events if e[0] == 7])
    assert path[:3] == ["do_madvise", "madvise_collapse", "hpage_collapse_scan_file"]
    assert "collapse_huge_page" not in path and "page_table_free_rcu" not in path
    assert path.index("retract_page_tables") < path.index("pte_free_defer") < path.index("call_rcu (pte_free_now)")


def test_svg_alone_is_the_picture_after_the_violation(cli, tmp_path):
    """-o FILE.svg: one standalone SVG (docs/m1.svg is one): the finding as the heading, the state after the
    violating operation with the offending table in red, the legend; --op picks another operation."""
    m1 = REG / "s390" / "gmap-dangling-m1.msgpack"
    r = cli("show", m1, "-o", "m1.svg")
    assert r.returncode == 0, r.stderr
    doc = ET.parse(tmp_path / "m1.svg").getroot()
    assert doc.tag == f"{SVG}svg" and float(doc.get("width")) >= 640
    texts = ["".join(t.itertext()) for t in doc.iter(f"{SVG}text")]
    assert texts[0] == "gmap-dangling at op 7: madvise(2, 0x20000000, 0x100000, 3)"
    assert texts[1] == replay(tracemod.load(m1)).violation.message
    states = [s.get("data-state") for s in doc.iter(f"{SVG}svg") if s is not doc]
    assert states == ["after"]
    (after,) = (s for s in doc.iter(f"{SVG}svg") if s is not doc)
    assert [g.get("data-addr") for g in nodes(after, "focus")] == ["0x20000"]
    assert "offending table / entry (named by the violation)" in texts
    assert cli("show", m1, "-o", "before.svg", "--op", 6).returncode == 0
    before = ET.parse(tmp_path / "before.svg").getroot()
    assert "the page tables after op 6" in "".join(before.itertext())
    # the README's picture is this file, as `make figures` draws it
    readme = (ROOT / "README.md").read_text()
    assert "docs/m1.svg" in readme.split("```")[0]  # on the first screen, before the two commands
    fig = ET.parse(ROOT / "docs" / "m1.svg").getroot()
    assert next(fig.iter(f"{SVG}text")).text.startswith("gmap-dangling at op 7: madvise")


def test_the_oracle_functions_show_names_exist_in_the_engine():
    """ORACLES names the model function behind each violation kind: each must be a function of native_ext."""
    import re
    from ptfuzz.report.show.paths import ORACLES
    src = "\n".join(p.read_text() for p in (ROOT / "native_ext").rglob("*.c"))
    names = {n.strip() for v in ORACLES.values() if ":" in v for n in v.split(":")[0].split("/")}
    assert names, ORACLES
    missing = [n for n in sorted(names) if not re.search(rf"^[a-z].*\b{re.escape(n)}\(", src, re.M)]
    assert missing == []
