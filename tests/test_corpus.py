"""The corpus is tested data: every file replays to its expect; every regression is clean under default knobs."""
import re
from dataclasses import replace
from pathlib import Path

import pytest

from conftest import ROOT
from ptfuzz import trace as tracemod
from ptfuzz.engine import replay

CORPUS = sorted((ROOT / "corpus").rglob("*.msgpack"))
REGRESSIONS = [p for p in CORPUS if "regressions" in p.parts]


def test_corpus_is_not_empty():
    assert len(REGRESSIONS) >= 5 and len(CORPUS) > len(REGRESSIONS)


@pytest.mark.parametrize("path", CORPUS, ids=lambda p: str(p.relative_to(ROOT / "corpus")))
def test_corpus_file_matches_expect(path: Path):
    t = tracemod.load(path)
    assert replay(t).matches(t)


def defaults_violate(t) -> bool:
    """A mainline finding (docs/bench.md M1): the v6.6 defaults themselves violate; meta.fixed_by names the design
    that closes it."""
    return bool((t.meta or {}).get("defaults_violate"))


@pytest.mark.parametrize("path", REGRESSIONS, ids=lambda p: p.name)
def test_regression_is_clean_with_knobs_at_default(path: Path):
    t = tracemod.load(path)
    assert t.expected_kind()
    if defaults_violate(t):
        assert not t.knobs and t.meta.get("fixed_by"), "a mainline regression sets no knobs and names its fix"
        assert replay(t).violation.kind == t.expected_kind()
        assert replay(replace(t, knobs=t.meta["fixed_by"])).violation is None
        return
    assert t.knobs
    assert replay(replace(t, knobs={})).violation is None


@pytest.mark.parametrize("path", REGRESSIONS, ids=lambda p: p.name)
def test_regression_file_name_follows_the_scheme(path: Path):
    t = tracemod.load(path)
    assert path.name.startswith(t.expected_kind() + "-") and path.parent.name == t.arch
    ident = path.stem[len(t.expected_kind()) + 1:]
    assert re.fullmatch(r"u\d+|m\d+|z\d+|[0-9a-f]{8}", ident), path.name
    assert ident.startswith("m") == defaults_violate(t), "-mN is the id of a regression violating under defaults"


def test_corpus_source_and_files_agree(tmp_path, monkeypatch):
    """corpus/make_corpus.py writes exactly the committed files."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("make_corpus", ROOT / "corpus" / "make_corpus.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    monkeypatch.setattr(mod, "HERE", tmp_path)
    for p in mod.build():
        committed = ROOT / "corpus" / p.relative_to(tmp_path)
        assert committed.read_bytes() == p.read_bytes(), committed
