"""ptfuzz geometry: the level layout the engine uses."""
import typer
from rich.console import Console

from ..engine import stage1_geometry, stage2_geometry
from ..errors import UsageError
from ..trace import check_config
from .app import app
from .common import check_arch, print_json


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
        check_config(arch, config)
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
