"""Linux releases as knob presets (ptfuzz/releases.py, docs/releases.md): the table against knob_defs, the
version arithmetic (stable point releases), and --kernel-version / --kernel-versions on the command line."""
import json
import re

import pytest

from conftest import ROOT
from ptfuzz import releases
from ptfuzz.errors import UsageError
from ptfuzz.names import ARCH_NAMES, KNOB_BY_NAME, KNOBS
from ptfuzz.trace import Trace, load, save
from ptfuzz.search.variants import variants

REG = ROOT / "corpus" / "regressions"
M1 = REG / "s390" / "gmap-dangling-m1.msgpack"
U4 = REG / "s390" / "gmap-dangling-u4.msgpack"
U6 = REG / "arm64" / "lost-update-u6.msgpack"


# --- the table ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("change", releases.CHANGES, ids=lambda c: f"{c.knob}={c.value}")
def test_every_change_names_a_knob_value_and_arches_of_knob_defs(change):
    k = KNOB_BY_NAME.get(change.knob)
    assert k is not None, change.knob
    assert change.value in k.values
    arches = change.arches or k.arches
    assert set(arches) <= set(k.arches) and set(arches) <= set(ARCH_NAMES)
    for arch in arches:
        assert change.value != k.default(arch), "a change to the v6.6 default is no change"
    assert change.since in releases.MAINLINE
    since = releases.parse_version(change.since)
    for b in change.backports:
        v = releases.parse_version(b)
        assert f"{v[0]}.{v[1]}" in releases.MAINLINE and v[2] > 0 and v < since, b
    if change.verified:
        assert re.fullmatch(r"[0-9a-f]{12}", change.commit) and change.subject
    else:
        assert change.note and change.after in releases.MAINLINE


def test_the_floor_release_is_the_v66_defaults_on_every_arch():
    for arch in ARCH_NAMES:
        p = releases.preset(arch, releases.FLOOR)
        assert p.knobs == {} and p.unverified == {}
        for name, value in p.values.items():
            assert value == KNOB_BY_NAME[name].default(arch)


def test_a_knob_that_does_not_apply_to_the_arch_is_skipped():
    assert "s390.pt_alloc" not in releases.preset("x86_64", "6.19").values
    assert releases.preset("s390", "6.19").knobs["s390.pt_alloc"] == "full-page"
    for arch in ARCH_NAMES:
        for name in releases.preset(arch, "6.19").values:
            assert arch in KNOB_BY_NAME[name].arches


@pytest.mark.parametrize("version, value", [
    ("6.6", "map"), ("6.6.59", "map"), ("6.6.60", "ptes"), ("6.6.130", "ptes"), ("6.7", "map"),
    ("6.10.14", "map"), ("6.11", "map"), ("6.11.5", "map"), ("6.11.6", "ptes"), ("6.12", "ptes"), ("6.19", "ptes")])
def test_stable_point_releases_compare_within_their_series(version, value):
    """2b0f922323cc: 6.12, backported as 6.6.60 and 6.11.6; the 6.7-6.10 series never got it."""
    assert releases.preset("s390", version).value("mm.file_pmd_nohuge") == value


def test_pt_reclaim_is_x86_64_from_614_only():
    assert releases.preset("x86_64", "6.13").value("mm.pt_reclaim") == "no"
    assert releases.preset("x86_64", "6.14").value("mm.pt_reclaim") == "yes"
    for arch in ("arm64", "s390"):
        assert releases.preset(arch, "6.19").value("mm.pt_reclaim") == "no"


def test_each_release_gains_its_changes_in_order():
    want = {"6.6": {}, "6.7": {"s390.pt_alloc": "full-page"},
            "6.12": {"s390.pt_alloc": "full-page", "mm.file_pmd_nohuge": "ptes"},
            "6.13": {"s390.pt_alloc": "full-page", "mm.file_pmd_nohuge": "ptes", "mm.huge_zero_wp": "thp"},
            "6.16": {"s390.pt_alloc": "full-page", "mm.file_pmd_nohuge": "ptes", "mm.huge_zero_wp": "thp",
                     "mm.merge_unfaulted": "yes"},
            "6.18": {"s390.pt_alloc": "full-page", "mm.file_pmd_nohuge": "ptes", "mm.huge_zero_wp": "thp",
                     "mm.merge_unfaulted": "yes", "mm.collapse_readonly": "yes", "mm.collapse_pmd_alloc": "yes",
                     "mremap.move_multi_vma": "yes"}}
    for version, knobs in want.items():
        assert releases.preset("s390", version).knobs == knobs, version


def test_an_unverified_boundary_is_flagged_between_the_known_releases():
    assert "mm.collapse_pmd_alloc" not in releases.preset("arm64", "6.6").unverified
    p = releases.preset("arm64", "6.12")
    assert p.value("mm.collapse_pmd_alloc") == "no" and "after 6.6" in p.unverified["mm.collapse_pmd_alloc"]
    assert "unverified: mm.collapse_pmd_alloc=no" in p.describe()
    assert "mm.collapse_pmd_alloc" in releases.preset("arm64", "6.18").unverified


@pytest.mark.parametrize("text", ["6.5", "6.1.115", "5.15", "7.0", "6.20", "banana", "6.12-rc1", "6", ""])
def test_unknown_releases_are_an_error_not_a_guess(text):
    with pytest.raises(UsageError) as e:
        releases.preset("s390", text)
    assert "\n" not in str(e.value) and "--kernel-version" in str(e.value)


def test_version_lists():
    assert releases.parse_versions("6.18, 6.6.60,6.6,6.6") == ["6.18", "6.6.60", "6.6"]
    assert releases.parse_versions("all") == list(releases.MAINLINE)
    assert releases.parse_version("v6.13") == (6, 13, 0) and releases.check_version("v6.13") == "6.13"
    with pytest.raises(UsageError):
        releases.parse_versions("6.6,,6.12")


def test_variants_around_a_release_vary_away_from_its_preset():
    base = releases.preset("s390", "6.12").knobs
    vs = variants("s390", base)
    assert vs[0] == {} and {"s390.pt_alloc": "fragments"} in vs and {"s390.pt_alloc": "full-page"} not in vs
    assert {"mm.file_pmd_nohuge": "map"} in vs
    # the combination (full-page, defer_gmap_unlink=yes) is defer_gmap_unlink=yes alone over 6.12
    assert {"s390.pt_alloc": "full-page", "s390.defer_gmap_unlink": "yes"} not in vs
    assert variants("s390") == variants("s390", {})


# --- the command line ------------------------------------------------------------------------------------

def test_replay_kernel_version_sets_the_release_knobs(cli):
    r = cli("replay", M1, "--kernel-version", "6.12", "--json")
    assert r.returncode == 0, r.stderr
    rec = json.loads(r.stdout)
    assert rec["kernel_version"] == "6.12"
    assert rec["knobs"] == {"mm.file_pmd_nohuge": "ptes", "s390.pt_alloc": "full-page"}
    assert rec["violation"]["kind"] == "gmap-dangling"  # M1: 2b0f922323cc does not stop the retract
    assert "ptfuzz: kernel 6.12 on s390: mm.file_pmd_nohuge=ptes, s390.pt_alloc=full-page;" in r.stderr
    r = cli("replay", M1, "--kernel-version", "6.6.60", "--json")
    assert json.loads(r.stdout)["knobs"] == {"mm.file_pmd_nohuge": "ptes"}
    r = cli("replay", M1, "--kernel-version", "6.6.59", "--json")
    assert json.loads(r.stdout)["knobs"] == {}


def test_explicit_knob_overrides_the_preset(cli):
    r = cli("replay", M1, "--kernel-version", "6.12", "--knob", "s390.pt_alloc=fragments", "--knob",
            "mm.pt_reclaim=yes", "--json")
    rec = json.loads(r.stdout)
    assert rec["knobs"] == {"mm.file_pmd_nohuge": "ptes", "s390.pt_alloc": "fragments", "mm.pt_reclaim": "yes"}
    assert "--knob over it: mm.pt_reclaim=yes, s390.pt_alloc=fragments" in r.stderr


def test_trace_knobs_give_way_to_the_release_unless_given_again(cli):
    """u4 was found with s390.thp_in_pgste_mm=allow, a design no release has: as 6.12 it is clean."""
    r = cli("replay", U4, "--kernel-version", "6.12", "--json")
    rec = json.loads(r.stdout)
    assert r.returncode == 1 and rec["verdict"] == "clean" and rec["knobs"]["s390.thp_in_pgste_mm"] == "forbid"
    assert "sets s390.thp_in_pgste_mm=allow; replayed as kernel 6.12 with s390.thp_in_pgste_mm=forbid" in r.stderr
    r = cli("replay", U4, "--kernel-version", "6.12", "--knob", "s390.thp_in_pgste_mm=allow", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["violation"]["kind"] == "gmap-dangling"


@pytest.mark.parametrize("args", [
    ["replay", M1, "--kernel-version", "7.0"],
    ["replay", M1, "--kernel-version", "6.12.x"],
    ["fuzz", "--arch", "s390", "--engine", "random", "--runs", 10, "--kernel-version", "5.10"],
    ["check", "--arch", "s390", "--depth", 1, "--kernel-version", "6.5"],
    ["variants", "--arch", "s390", "--kernel-version", "6.20"],
    ["variants", "--kernel-versions", "6.6,5.15", "--replay", M1],
    ["variants", "--arch", "s390", "--kernel-version", "6.12", "--kernel-versions", "6.6,6.12"],
    ["variants", "--replay", M1],
], ids=["replay-new", "replay-malformed", "fuzz", "check", "variants", "variants-list", "both", "replay-alone"])
def test_unknown_version_is_one_line_and_exit_2(cli, args):
    r = cli(*args)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("ptfuzz: ") and "Traceback" not in r.stderr
    assert r.stdout == ""


def test_fuzz_and_check_report_the_release(cli, tmp_path):
    r = cli("fuzz", "--arch", "x86_64", "--engine", "random", "--runs", 200, "--kernel-version", "6.14",
            "--corpus", tmp_path / "c", "--json")
    summary = json.loads(r.stdout.splitlines()[-1])
    assert summary["kernel_version"] == "6.14"
    assert summary["knobs"] == {"kvm.memslot_access_ok": "user-ptr-max", "mm.file_pmd_nohuge": "ptes",
                                "mm.huge_zero_wp": "thp", "mm.pt_reclaim": "yes"}
    assert ("kernel 6.14 on x86_64: kvm.memslot_access_ok=user-ptr-max, mm.file_pmd_nohuge=ptes, mm.huge_zero_wp=thp, "
            "mm.pt_reclaim=yes") in r.stderr
    r = cli("check", "--arch", "x86_64", "--pids", 1, "--depth", 3, "--kernel-version", "6.14", "--json")
    rec = json.loads(r.stdout)
    assert r.returncode == 0 and rec["kernel_version"] == "6.14" and rec["knobs"]["mm.pt_reclaim"] == "yes"


def test_knobs_lists_release_boundaries(cli):
    rows = {k["name"]: k for k in json.loads(cli("knobs", "--json").stdout)}
    b = rows["mm.file_pmd_nohuge"]["releases"]
    assert b[0]["since"] == "6.12" and b[0]["backports"] == ["6.6.60", "6.11.6"] and b[0]["commit"] == "2b0f922323cc"
    assert rows["mm.pt_reclaim"]["releases"][0]["arches"] == ["x86_64"]
    assert rows["mm.table_free"]["releases"] == []
    assert len(rows) == len(KNOBS)


def test_variants_over_releases_replays_m1_on_every_s390_release(cli):
    r = cli("variants", "--kernel-versions", "6.18,6.6,6.6.60,6.12", "--replay", REG / "s390", "--json")
    assert r.returncode == 0, r.stderr
    lines = [json.loads(x) for x in r.stdout.splitlines()]
    rows, summary = {row["trace"].rsplit("/", 1)[1]: row for row in lines[:-1]}, lines[-1]
    assert summary["kernel_versions"] == ["6.6", "6.6.60", "6.12", "6.18"]
    assert rows["gmap-dangling-m1.msgpack"]["releases"] == dict.fromkeys(summary["kernel_versions"], "gmap-dangling")
    # found with a design no release has: reached on none
    assert set(rows["gmap-dangling-u4.msgpack"]["releases"].values()) == {None}
    assert set(rows["uaf-table-u1.msgpack"]["releases"].values()) == {None}
    assert summary["kinds"] == [{"arch": "s390", "kind": "gmap-dangling", "affects": ["6.6", "6.6.60", "6.12", "6.18"],
                                 "not_reached": []}]


def test_variants_over_releases_shows_the_pt_reclaim_boundary(cli, tmp_path):
    """U6 on x86_64: without the pmd recheck, only PT reclaim frees a table under an rmap walker, and x86_64
    has PT reclaim from 6.14: the what-if mm.pmd_recheck=no reaches lost-update on 6.14 and later only."""
    u6 = load(U6)
    save(Trace("x86_64", u6.ops, knobs=dict(u6.knobs), elfs=u6.elfs, expect=u6.expect), tmp_path / "u6.msgpack")
    r = cli("variants", "--kernel-versions", "6.6,6.13,6.14,6.19", "--replay", "u6.msgpack",
            "--knob", "mm.pmd_recheck=no")
    assert r.returncode == 0, r.stderr
    assert re.search(r"x86_64\s*│\s*lost-update\s*│\s*6\.14, 6\.19\s*│\s*6\.6, 6\.13", r.stdout), r.stdout
    r = cli("variants", "--kernel-versions", "6.13,6.14", "--replay", "u6.msgpack", "--json")
    assert json.loads(r.stdout.splitlines()[-1])["kinds"] == []  # pmd_recheck=no is the trace's, not a release's


def test_variants_over_releases_fuzzes_each_preset(cli):
    r = cli("variants", "--arch", "s390", "--kernel-versions", "6.12,6.6", "--runs-per-variant", 10000,
            "--time-per-variant", 600, "--json")
    assert r.returncode == 0, r.stderr
    lines = [json.loads(x) for x in r.stdout.splitlines()]
    assert [row["kernel_version"] for row in lines[:-1]] == ["6.6", "6.12"]
    assert lines[1]["knobs"] == {"mm.file_pmd_nohuge": "ptes", "s390.pt_alloc": "full-page"}
    summary = lines[-1]
    assert summary["mode"] == "fuzz" and summary["arch"] == "s390"
    assert {"arch": "s390", "kind": "gmap-dangling", "affects": ["6.6", "6.12"], "not_reached": []} in summary["kinds"]
