"""CI formats and figures: JUnit from replay, SARIF 2.1.0 from fuzz and replay, replay --json --steps,
variants --trials --plot, and one-line exit-2 errors for output paths that cannot be written."""
import json
import xml.etree.ElementTree as ET
from dataclasses import replace

import pytest

from conftest import ROOT
from ptfuzz import trace as tracemod

CORPUS = ROOT / "corpus"
U1 = CORPUS / "regressions" / "s390" / "uaf-table-u1.msgpack"
SARIF_LEVELS = {"none", "note", "warning", "error"}


def check_sarif(doc: dict) -> list[dict]:
    """The SARIF 2.1.0 schema's required fields, and what code scanning needs, checked by hand (neither
    the jsonschema package nor the schema itself is available offline); returns the results."""
    assert doc["version"] == "2.1.0"
    assert doc["$schema"].endswith("sarif-schema-2.1.0.json")
    assert isinstance(doc["runs"], list) and len(doc["runs"]) == 1
    run = doc["runs"][0]
    driver = run["tool"]["driver"]
    assert isinstance(driver["name"], str) and driver["name"]
    rules = driver.get("rules", [])
    assert all(isinstance(r["id"], str) and r["shortDescription"]["text"] for r in rules)
    assert isinstance(run["results"], list)
    for res in run["results"]:
        assert isinstance(res["ruleId"], str) and res["message"]["text"].strip()
        assert rules[res["ruleIndex"]]["id"] == res["ruleId"]
        assert res.get("level", "warning") in SARIF_LEVELS
        assert res["locations"], res
        for loc in res["locations"]:
            phys = loc["physicalLocation"]
            assert isinstance(phys["artifactLocation"]["uri"], str) and phys["artifactLocation"]["uri"]
            assert phys["region"]["startLine"] >= 1
    return run["results"]


@pytest.fixture
def plain_u1(tmp_path):
    """U1 without its expect: a trace whose violation nobody expected."""
    path = tmp_path / "plain-u1.msgpack"
    tracemod.save(replace(tracemod.load(U1), expect=None, meta=None), path)
    return path


def test_junit_from_replay_corpus_validates(cli, tmp_path):
    r = cli("replay", CORPUS, "--junit", "replay.xml")
    assert r.returncode == 0, r.stderr
    root = ET.parse(tmp_path / "replay.xml").getroot()
    files = sorted(str(p) for p in CORPUS.rglob("*.msgpack"))
    assert root.tag == "testsuites" and root.get("tests") == str(len(files)) and root.get("failures") == "0"
    (suite,) = root.findall("testsuite")
    cases = suite.findall("testcase")
    assert sorted(c.get("name") for c in cases) == files
    for c in cases:
        assert c.get("classname").startswith("ptfuzz.replay.") and float(c.get("time")) >= 0
        assert c.find("failure") is None


def test_junit_and_sarif_from_replay_carry_the_violation(cli, tmp_path, plain_u1):
    r = cli("replay", U1, plain_u1, "--junit", "j.xml", "--sarif", "s.sarif")
    assert r.returncode == 1, r.stderr
    suite = ET.parse(tmp_path / "j.xml").getroot().find("testsuite")
    assert suite.get("tests") == "2" and suite.get("failures") == "1"
    failure = {c.get("name"): c.find("failure") for c in suite.findall("testcase")}
    assert failure[str(U1)] is None
    f = failure[str(plain_u1)]
    assert f.get("type") == "uaf-table" and f.get("message").startswith("expected clean, got uaf-table at op 6:")
    assert "freed since it took the pointer" in f.get("message")
    (res,) = check_sarif(json.loads((tmp_path / "s.sarif").read_text()))
    assert res["ruleId"] == "uaf-table" and res["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] \
        == "plain-u1.msgpack"
    text = res["message"]["text"]
    assert "Minimized trace (" in text and "[0] exec(1, -1)" in text and "walk_step(0)" in text


def test_sarif_names_a_lost_violation(cli, tmp_path):
    r = cli("replay", U1, "--knob", "mm.table_free=rcu", "--sarif", "s.sarif")
    assert r.returncode == 1
    (res,) = check_sarif(json.loads((tmp_path / "s.sarif").read_text()))
    assert res["ruleId"] == "expect-unmet" and res["level"] == "warning"
    assert "expected uaf-table, but the trace replays clean" in res["message"]["text"]


def test_sarif_from_a_fuzz_finding(cli, tmp_path):
    r = cli("fuzz", "--arch", "s390", "--engine", "random", "--knob", "mm.table_free=immediate", "--runs", 20000,
            "--corpus", "c", "--sarif", "fuzz.sarif", "--json")
    assert r.returncode == 1, r.stderr
    finding = json.loads(r.stdout.splitlines()[0])
    doc = json.loads((tmp_path / "fuzz.sarif").read_text())
    (res,) = check_sarif(doc)
    assert res["ruleId"] == finding["kind"] == "uaf-table"
    uri = res["locations"][0]["physicalLocation"]["artifactLocation"]["uri"]
    assert uri == finding["path"] and (tmp_path / uri).is_file() and uri.startswith("c/regressions/s390/")
    lines = res["message"]["text"].splitlines()
    assert lines[0].startswith(("uaf-table at walk_step", "uaf-table at walk_pin")) and f"Minimized trace ({finding['ops']} operations" in lines[1]
    assert len([line for line in lines if line.startswith("  [")]) == finding["ops"]
    assert res["partialFingerprints"]["ptfuzzFinding/v1"]


def test_replay_json_steps_carries_results_and_events(cli):
    rec = json.loads(cli("replay", U1, "--json", "--steps").stdout)
    steps = rec["steps"]
    assert [s["index"] for s in steps] == list(range(7)) and rec["teardown"] == []
    munmap = steps[5]
    assert munmap["name"] == "munmap" and munmap["op"].startswith("munmap(1, 0x10000000")
    assert munmap["result"] == 0 and munmap["errno"] is None
    assert [e["event"] for e in munmap["events"]] == ["leaf_zap", "data_free", "table_free", "table_free"]
    assert munmap["events"][2]["text"].startswith("- table ") and len(munmap["events"][2]["args"]) == 4
    assert "steps" not in json.loads(cli("replay", U1, "--json").stdout)


def test_bad_report_paths_are_one_line_and_exit_2(cli, tmp_path):
    (tmp_path / "adir").mkdir()
    for args in (["replay", U1, "--junit", "missing/r.xml"], ["replay", U1, "--sarif", "adir"],
                 ["fuzz", "--arch", "s390", "--time", 60, "--sarif", "missing/f.sarif"],
                 ["variants", "--arch", "s390", "--plot", "v.pdf"],
                 ["variants", "--arch", "s390", "--time-per-variant", 60, "--plot", "missing/v.svg"]):
        r = cli(*args)
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr and r.stderr.startswith("ptfuzz: --")


def test_survival_plot_writes_svg_and_png(tmp_path):
    from ptfuzz.report.plots import survival_plot
    rows = [{"label": "mm.table_free=immediate", "times": [0.002, 0.01, 0.3, None], "budget": 2.0},
            {"label": "kvm.fault_holds_mm=no", "times": [0.0, 0.05, 0.07, 1.5], "budget": 2.0},
            {"label": "(defaults)", "times": [None] * 4, "budget": 2.0}]
    svg = survival_plot(rows, tmp_path / "s.svg", "engine random, budget 2 s per trial")
    root = ET.parse(svg).getroot()
    text = ET.tostring(root, encoding="unicode")
    assert root.tag.endswith("svg") and "budget 2 s per trial" in text and "(defaults)" in text
    png = survival_plot(rows, tmp_path / "s.png", "caption")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000
    with pytest.raises(ValueError):
        survival_plot(rows, tmp_path / "s.pdf", "caption")


def test_variants_trials_and_plot(cli, tmp_path):
    r = cli("variants", "--arch", "x86_64", "--time-per-variant", 600, "--runs-per-variant", 1000, "--trials", 2,
            "--plot", "v.svg", "--json")
    assert r.returncode == 0, r.stderr
    rows = {json.dumps(row["knobs"], sort_keys=True): row for row in map(json.loads, r.stdout.splitlines())}
    unsafe = rows['{"kvm.invalidate_retry": "none"}']
    assert unsafe["verdict"] == "unsafe" and unsafe["found"] == 2 and unsafe["trials"] == 2
    assert [t["seed"] for t in unsafe["runs"]] == [0, 1_000_000] and unsafe["seconds"] is not None
    safe = rows["{}"]
    assert safe["verdict"] == "safe" and safe["found"] == 0 and safe["seconds"] is None
    assert all(t["seconds"] is None for t in safe["runs"])
    assert "kvm.invalidate_retry=none" in (tmp_path / "v.svg").read_text()
