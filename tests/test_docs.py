"""The repository documents itself: every knob, violation kind, opcode and command is in its own docs/ page,
and nothing names a document outside the repository or a path of one machine."""
import re
import subprocess

from conftest import ROOT
from ptfuzz.names import KNOBS, OPS, VIOLATION_KINDS


def doc(name: str) -> str:
    return (ROOT / "docs" / name).read_text()


def test_every_knob_and_value_is_in_knobs_md():
    text = doc("knobs.md")
    missing = [k.name for k in KNOBS if f"`{k.name}`" not in text and k.name not in text]
    missing += [f"{k.name}={v}" for k in KNOBS for v in k.values if v not in text]
    assert not missing, missing


def test_every_violation_kind_is_in_violations_md():
    text = doc("violations.md")
    assert [k for k in VIOLATION_KINDS if f"`{k}`" not in text] == []


def test_every_opcode_is_in_trace_format_md():
    text = doc("trace-format.md")
    assert [name for name, _ in OPS if f"`{name}`" not in text] == []


def test_every_command_is_in_cli_md():
    from ptfuzz.cli import app
    import typer.main
    group = typer.main.get_command(app)
    names = sorted(group.commands)
    text = doc("cli.md")
    assert [n for n in names if not re.search(rf"`ptfuzz {re.escape(n)}\b|^#+ .*\b{re.escape(n)}\b", text, re.M)] == []


def test_nothing_cites_an_outside_document_or_a_machine_path():
    out = subprocess.run(["git", "grep", "-n", "-I", "-E", r"(^|[^[:alnum:]_.])/work/|/tmp/reports|shared/spec",
                          "--", "docs", "README.md", "corpus/README.md", "bench/README.md"],
                         cwd=ROOT, capture_output=True, text=True)
    assert out.stdout == ""
