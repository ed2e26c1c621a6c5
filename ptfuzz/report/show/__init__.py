"""ptfuzz show: a finding as a picture. One self-contained HTML file (inline CSS and SVG, no scripts, no
network): the trace with each operation's result, events and the kernel functions of the paths taken, and,
for the violating operation, the page-table trees involved before and after it, drawn from the engine's own
state (`_engine.dump`): the host mm's levels (folded levels as the kernel folds them), the gmap or stage 2 /
TDP beside it, s390 fragment pages, deposits, tables waiting for RCU, and the offending table or entry in red.

By section, each importing only those above it: paths (the kernel functions of an operation's paths), state
(the engine's state; what a violation names), tree (the drawing model of one tree), svg (layout and SVG),
forest (which trees a picture shows), page (the pictures around an operation; the HTML page; the SVG).
"""
from .page import build_report, build_svg
from .paths import kernel_path
from .state import dump_state

__all__ = ["build_report", "build_svg", "dump_state", "kernel_path"]
