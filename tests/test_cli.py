"""The command line as a user runs it: exit codes, one-line errors, JSON, --steps, and every command."""
import json

import msgpack
import numpy as np

from conftest import ROOT

CORPUS = ROOT / "corpus"
U1 = CORPUS / "regressions" / "s390" / "uaf-table-u1.msgpack"


def test_replay_corpus_passes(cli):
    r = cli("replay", CORPUS)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "FAIL" not in r.stdout and "replay summary" in r.stdout


def test_replay_json_fields(cli):
    r = cli("replay", U1, "--json")
    assert r.returncode == 0
    rec = json.loads(r.stdout)
    assert rec["verdict"] == "violation" and rec["matched"] is True
    assert rec["violation"]["kind"] == "uaf-table" and rec["violation"]["op_index"] == 6
    assert rec["violation"]["op"].startswith("walk_step")
    for key in ("page_table_bytes_peak", "tables_allocated", "tables_freed", "rcu_callbacks", "data_pages_peak",
                "results"):
        assert key in rec["stats"]
    assert len(rec["digest"]) == 16


def test_knob_override_changes_the_verdict(cli):
    r = cli("replay", U1, "--knob", "mm.table_free=rcu", "--json")
    assert r.returncode == 1
    rec = json.loads(r.stdout)
    assert rec["verdict"] == "clean" and rec["matched"] is False


def test_steps_reads_like_strace(cli):
    r = cli("replay", U1, "--steps")
    assert "[   5] munmap(1, 0x10000000, 0x100000) = 0" in r.stdout
    assert "- table segment at" in r.stdout and "!! uaf-table" in r.stdout


def test_bad_input_is_one_line_and_exit_2(cli, tmp_path):
    (tmp_path / "g.msgpack").write_bytes(b"\x00garbage")
    (tmp_path / "m.msgpack").write_bytes(msgpack.packb({"format": "ptfuzz-trace", "version": 1, "arch": "s390",
                                                        "ops": [["mmap", 1, 2, 3]]}))
    for args in (["replay", "g.msgpack"], ["replay", "m.msgpack"], ["replay", "missing.msgpack"],
                 ["replay", U1, "--knob", "mm.table_free=sometimes"], ["replay", U1, "--knob", "nonsense"],
                 ["fuzz", "--arch", "mips"], ["replay", U1, "--bogus-flag"],
                 ["fuzz", "--arch", "s390", "--engine", "random", "--semantic-features"]):
        r = cli(*args)
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, (args, r.stderr)
    r = cli("replay", "m.msgpack")
    assert 'm.msgpack: ops[0]: "mmap" takes 4 arguments, got 3' in r.stderr


def test_stage2_geometry_json(cli):
    g = json.loads(cli("geometry", "--arch", "arm64", "--granule", 4096, "--stage2", "--ipa-bits", 40, "--json").stdout)
    assert (g["levels"], g["start_level"], g["pgd_pages"]) == (3, 1, 2)
    assert g["leaf_sizes"] == [1 << 30, 1 << 21, 4096]
    r = cli("geometry", "--arch", "s390", "--stage2")
    assert r.returncode == 2 and "gmap" in r.stderr
    r = cli("geometry", "--arch", "arm64", "--granule", 16384, "--va-bits", 39)
    assert r.returncode == 2 and r.stderr.count("\n") == 1


def test_trace_json_round_trip(cli, tmp_path):
    assert cli("trace", "to-json", U1, "-o", tmp_path / "u1.json").returncode == 0
    assert cli("trace", "from-json", tmp_path / "u1.json", "-o", tmp_path / "u1.msgpack").returncode == 0
    assert (tmp_path / "u1.msgpack").read_bytes() == U1.read_bytes()
    show = cli("trace", "show", U1)
    assert "walk_begin(0, 1, 0x10000000)" in show.stdout


def test_gen_is_deterministic_and_valid(cli, tmp_path):
    for name in ("a", "b"):
        assert cli("gen", "--arch", "s390", "--ops", 500, "--seed", 5, "--packed", "-o", f"{name}.msgpack").returncode == 0
    assert (tmp_path / "a.msgpack").read_bytes() == (tmp_path / "b.msgpack").read_bytes()
    r = cli("replay", "a.msgpack", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["ops"] == 500


def test_knobs_and_geometry_json(cli):
    knobs = json.loads(cli("knobs", "--arch", "s390", "--json").stdout)
    names = {k["name"] for k in knobs}
    assert {"mm.table_free", "s390.pgste_decision", "s390.pt_alloc"} <= names
    assert "kvm.invalidate_retry" not in names
    g = json.loads(cli("geometry", "--arch", "s390", "--json").stdout)
    assert g["levels"] == 5 and g["leaf_sizes"] == [1 << 31, 1 << 20, 4096]


def test_minimize_gives_a_one_minimal_trace(cli, tmp_path):
    from ptfuzz import trace as tracemod
    from ptfuzz.engine import replay
    from ptfuzz.search.gen import generate
    knobs = {"mm.table_free": "immediate"}
    found = next(t for t in (generate("s390", 64, seed) for seed in range(500)) if replay(t, knobs).violation)
    tracemod.save(found, tmp_path / "w.msgpack")
    r = cli("minimize", "w.msgpack", "--knob", "mm.table_free=immediate", "-o", "small.msgpack", "--json")
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["one_minimal"] and summary["ops_after"] < summary["ops_before"]
    rep = json.loads(cli("replay", "small.msgpack", "--json").stdout)
    assert rep["matched"] and rep["violation"]["kind"] == summary["kind"]
    small = tracemod.load(tmp_path / "small.msgpack")
    for i in range(len(small.ops)):  # 1-minimal, checked independently of the minimizer
        fewer = tracemod.Trace(small.arch, np.delete(small.ops, i, axis=0), knobs=small.knobs, elfs=small.elfs)
        v = replay(fewer).violation
        assert v is None or v.kind != summary["kind"]


def test_geometry_pa_bits(cli):
    """kvm_set_ipa_limit: a 52-bit IPA needs FEAT_LPA's 52-bit PA, which needs the 64K granule."""
    r = cli("geometry", "--arch", "arm64", "--granule", 65536, "--va-bits", 52, "--pa-bits", 52, "--stage2",
            "--ipa-bits", 52, "--json")
    assert r.returncode == 0, r.stderr
    g = json.loads(r.stdout)
    assert g["ipa_bits"] == 52 and g["page_size"] == 65536 and g["per_level"][0]["shift"] == 42
    assert cli("geometry", "--arch", "arm64", "--granule", 65536, "--stage2", "--ipa-bits", 52).returncode == 2
    bad = cli("geometry", "--arch", "arm64", "--pa-bits", 52)
    assert bad.returncode == 2 and "pa_bits 52 needs granule 65536" in bad.stderr


def command_paths() -> list[list[str]]:
    """Every command and group, as argv prefixes: [] (ptfuzz itself), ["fuzz"], ["trace"], ["trace", "show"]..."""
    from ptfuzz import cli as climod
    climod._register([])  # every command module
    paths: list[list[str]] = [[]]

    def walk(t, prefix):
        for c in t.registered_commands:
            paths.append(prefix + [c.name or c.callback.__name__.replace("_", "-")])
        for g in t.registered_groups:
            paths.append(prefix + [g.name])
            walk(g.typer_instance, prefix + [g.name])
    walk(climod.app, [])
    return paths


def test_help_of_every_command(tmp_path):
    """--help reads as a Typer tool's: no value type beside a flag (typer 0.29 printed `--json <bool>` and
    `--help <bool>`), and the examples right after the one-line summary, before the details and the options."""
    import subprocess
    import sys
    env = {**__import__("os").environ, "COLUMNS": "200", "TERM": "dumb"}
    paths = command_paths()
    assert ["fuzz"] in paths and ["trace", "show"] in paths and len(paths) >= 15
    for argv in paths:
        r = subprocess.run([sys.executable, "-m", "ptfuzz", *argv, "--help"], capture_output=True, text=True,
                           cwd=tmp_path, env=env, timeout=60)
        where = f"ptfuzz {' '.join(argv)} --help"
        assert r.returncode == 0, f"{where}: {r.stderr}"
        assert "<bool>" not in r.stdout and "BOOLEAN" not in r.stdout, f"{where}:\n{r.stdout}"
        lines = [line.strip() for line in r.stdout.splitlines() if line.strip()]
        usage = next(i for i, line in enumerate(lines) if line.startswith("Usage:"))
        summary, header, first = lines[usage + 1: usage + 4]
        assert header == "Examples:", f"{where}: examples do not come first:\n{r.stdout}"
        assert not summary.startswith("Examples") and first.startswith(" ".join(["ptfuzz", *argv])), where
        assert "[not dim]" not in r.stdout, where
