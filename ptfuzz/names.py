"""Names shared with the C engine: operations, knobs, violation kinds, arches, errno values, outcomes."""
import enum
import errno
from dataclasses import dataclass

from . import _engine

_TABLES = _engine.tables()


class Arch(str, enum.Enum):
    S390 = "s390"
    ARM64 = "arm64"
    X86_64 = "x86_64"

    @property
    def index(self) -> int:
        return ARCH_NAMES.index(self.value)


class Outcome(str, enum.Enum):
    """What one operation did: its result 0, an errno, or -16 EBUSY because it would wait for a lock an actor holds
    (it changed nothing; the engine's wait event names the holder)."""
    OK = "ok"
    ERROR = "error"
    BLOCKED = "blocked"


class Verdict(str, enum.Enum):
    CLEAN = "clean"
    VIOLATION = "violation"


ARCH_NAMES: list[str] = list(_TABLES["arches"])
OPS: list[tuple[str, int]] = [tuple(o) for o in _TABLES["ops"]]
OP_NUMBER: dict[str, int] = {name: i for i, (name, _) in enumerate(OPS)}
VIOLATION_KINDS: list[str] = list(_TABLES["violations"][1:])  # index 0 is "none"
LOCK_NAMES: list[str] = list(_TABLES["locks"])  # what a waiting operation waits for (locking.c)
EVENT_NAMES: list[str] = list(_TABLES["events"])  # the --steps events (enum event)
VIOLATION_RULES: dict[str, str] = dict(zip(VIOLATION_KINDS, _TABLES["rules"][1:]))  # each kind's rule
OP_WIDTH = 6  # opcode + 5 arguments in the packed form


@dataclass(frozen=True)
class Knob:
    name: str
    values: tuple[str, ...]
    defaults: tuple[int, int, int]  # per arch, -1 where it does not apply
    description: str

    @property
    def arches(self) -> list[str]:
        return [a for a, d in zip(ARCH_NAMES, self.defaults) if d >= 0]

    def default(self, arch: str) -> str | None:
        d = self.defaults[ARCH_NAMES.index(arch)]
        return self.values[d] if d >= 0 else None


KNOBS: list[Knob] = [Knob(n, tuple(v), tuple(d), desc) for n, v, d, desc in _TABLES["knobs"]]
KNOB_BY_NAME: dict[str, Knob] = {k.name: k for k in KNOBS}


def errno_name(result: int) -> str:
    """0 -> "ok", -12 -> "ENOMEM"."""
    if result == 0:
        return "ok"
    return errno.errorcode.get(-result, f"E{-result}")


def knob_vector(arch: str, knobs: dict[str, str]) -> tuple[int, ...]:
    """The engine's knob indices, defaults filled in; names and values are assumed valid."""
    out = []
    for k in KNOBS:
        value = knobs.get(k.name)
        d = k.defaults[ARCH_NAMES.index(arch)]
        out.append(k.values.index(value) if value is not None else max(d, 0))
    return tuple(out)
