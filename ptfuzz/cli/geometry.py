"""ptfuzz geometry: the level layout the engine uses."""
import typer
from rich.console import Console

from .. import _engine
from ..engine import CONFIG_ORDER
from ..errors import UsageError
from ..names import ARCH_NAMES
from ..trace import CONFIG_DEFAULTS, _check_config
from . import app
from .common import check_arch, print_json


def stage1_geometry(arch: str, config: dict) -> dict:
    cfg = {**CONFIG_DEFAULTS, **config}
    levels, pmd_shift, pud_shift = _engine.geometry(ARCH_NAMES.index(arch), tuple(int(cfg[k]) for k in CONFIG_ORDER))
    page = 1 << levels[-1][1]
    leaf_sizes = sorted({1 << shift for _, shift, _, _, folded, leaf in levels if leaf and not folded}, reverse=True)
    return {
        "arch": arch, "stage": 1, "levels": sum(1 for lv in levels if not lv[4]), "start_level": 0,
        "pgd_pages": 1, "folded": [lv[0] for lv in levels if lv[4]], "leaf_sizes": leaf_sizes,
        "page_size": page, "pmd_size": 1 << pmd_shift, "pud_size": (1 << pud_shift) if pud_shift else None,
        "per_level": [{"name": n, "shift": s, "entries": e, "table_bytes": b, "folded": f}
                      for n, s, e, b, f, _ in levels],
    }


def stage2_geometry(arch: str, config: dict, ipa_bits: int) -> dict:
    cfg = {**CONFIG_DEFAULTS, **config}
    try:
        levels, start, pages = _engine.geometry2(ARCH_NAMES.index(arch), tuple(int(cfg[k]) for k in CONFIG_ORDER),
                                                 ipa_bits)
    except NotImplementedError:
        raise UsageError(f"{arch} has no stage-2 geometry (s390 guests use the gmap)") from None
    except ValueError:
        raise UsageError(f"--ipa-bits {ipa_bits}: not a supported IPA size for this granule") from None
    page = 1 << levels[-1][1]
    leaf_sizes = sorted({1 << lv[1] for lv in levels if lv[5]}, reverse=True)
    return {
        "arch": arch, "stage": 2, "levels": len(levels) - start, "start_level": start, "pgd_pages": pages,
        "ipa_bits": ipa_bits or 40, "folded": [], "leaf_sizes": leaf_sizes, "page_size": page,
        "per_level": [{"level": i, "shift": s, "entries": e, "table_bytes": b}
                      for i, (_, s, e, b, folded, _) in enumerate(levels) if not folded],
    }


@app.command()
def geometry(arch: str = typer.Option(..., "--arch", help="s390, arm64 or x86_64."),
             granule: int = typer.Option(None, "--granule", help="arm64 granule: 4096, 16384, 65536."),
             va_bits: int = typer.Option(None, "--va-bits", help="arm64 VA bits."),
             la57: bool = typer.Option(False, "--la57", help="x86_64 5-level paging."),
             pa_bits: int = typer.Option(None, "--pa-bits", help="arm64 PA bits: 48, or 52 with 64K pages (FEAT_LPA)."),
             stage2: bool = typer.Option(False, "--stage2", help="KVM stage-2 geometry."),
             ipa_bits: int = typer.Option(None, "--ipa-bits", help="Stage-2 IPA size."),
             json_out: bool = typer.Option(False, "--json", help="JSON output.")):
    """The page-table level layout: shift, entries and table size per level, leaf sizes.

    Examples:

      ptfuzz geometry --arch s390

      ptfuzz geometry --arch x86_64 --la57 --json

      ptfuzz geometry --arch arm64 --granule 65536 --va-bits 52 --pa-bits 52 --stage2 --ipa-bits 52
    """
    check_arch(arch)
    config = {}
    if granule is not None:
        config["granule"] = granule
    if va_bits is not None:
        config["va_bits"] = va_bits
    if la57:
        config["la57"] = True
    if pa_bits is not None:
        config["pa_bits"] = pa_bits
    try:
        _check_config(arch, config)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if stage2 or ipa_bits is not None:
        g = stage2_geometry(arch, config, ipa_bits or 0)
    else:
        g = stage1_geometry(arch, config)
    if json_out:
        print_json(g)
        return
    c = Console(highlight=False, soft_wrap=True)
    c.print(f"{arch} stage {g['stage']}: {g['levels']} levels, page {g['page_size']} bytes, "
            f"leaf sizes {', '.join(str(s) for s in g['leaf_sizes'])}")
    if g["stage"] == 2:
        c.print(f"  start level {g['start_level']}, {g['pgd_pages']} concatenated PGD page(s), IPA {g['ipa_bits']} bits")
    for lv in g["per_level"]:
        name = lv.get("name") or f"level {lv['level']}"
        c.print(f"  {name:<14} shift {lv['shift']:>2}  entries {lv['entries']:>6}  "
                f"table {lv['table_bytes']:>6} B{'  (folded)' if lv.get('folded') else ''}")
