"""Options and helpers shared by the command modules."""
import json
import sys
from pathlib import Path

from .. import releases
from ..errors import UsageError
from ..names import ARCH_NAMES
from ..trace import check_knobs

KERNEL_VERSION_HELP = ("Start from the knob values of this Linux release (6.6 to 6.19, or a stable point release "
                       "such as 6.6.60; docs/releases.md); --knob overrides them.")


def parse_knobs(arch: str, items: list[str] | None) -> dict:
    knobs = {}
    for item in items or []:
        name, sep, value = item.partition("=")
        if not sep:
            raise UsageError(f"--knob {item!r}: expected NAME=VALUE")
        knobs[name] = value
    try:
        return check_knobs(arch, knobs, where="--knob")
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def preset_knobs(arch: str, items: list[str] | None, kernel_version: str | None) -> dict:
    """--knob NAME=VALUE over release --kernel-version's preset (every knob the release has at another value
    than v6.6's); without --kernel-version, only the --knob values. The preset is named on stderr."""
    knobs = parse_knobs(arch, items)
    if kernel_version is None:
        return knobs
    p = releases.preset(arch, kernel_version)
    print(f"ptfuzz: {p.describe(knobs)}", file=sys.stderr)
    return {**p.knobs, **knobs}


def release_trace_knobs(path, trace, items: list[str] | None, kernel_version: str, presets: dict) -> dict:
    """A trace replayed as release --kernel-version: the knobs the trace sets give way to the release's
    values (a design no release has does not carry over; a note says so), then the release's preset, then
    --knob. `presets` caches one preset per arch, named on stderr the first time."""
    knobs = parse_knobs(trace.arch, items)
    p = presets.get(trace.arch)
    if p is None:
        p = presets[trace.arch] = releases.preset(trace.arch, kernel_version)
        print(f"ptfuzz: {p.describe(knobs)}", file=sys.stderr)
    replaced = {k: v for k, v in trace.knobs.items() if k not in knobs and p.value(k) != v}
    if replaced:
        was = ", ".join(f"{k}={v}" for k, v in replaced.items())
        now = ", ".join(f"{k}={p.value(k)}" for k in replaced)
        print(f"ptfuzz: note: {path} sets {was}; replayed as kernel {p.version} with {now} (--knob keeps a "
              "trace's value)", file=sys.stderr)
    return {**{k: p.value(k) for k in trace.knobs}, **p.knobs, **knobs}


def check_arch(arch: str) -> str:
    if arch not in ARCH_NAMES:
        raise UsageError(f"--arch {arch!r}: must be one of {', '.join(ARCH_NAMES)}")
    return arch


def trace_files(paths: list[Path]) -> list[Path]:
    out = []
    for p in paths:
        if p.is_dir():
            found = sorted(p.rglob("*.msgpack"))
            if not found:
                raise UsageError(f"{p}: no *.msgpack traces in this directory")
            out.extend(found)
        elif p.exists():
            out.append(p)
        else:
            raise UsageError(f"{p}: no such file or directory")
    return out


def print_json(obj) -> None:
    sys.stdout.write(json.dumps(obj, sort_keys=False) + "\n")
