"""Options and helpers shared by the command modules."""
import json
import sys
from pathlib import Path

from ..errors import UsageError
from ..names import ARCH_NAMES
from ..trace import check_knobs


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
