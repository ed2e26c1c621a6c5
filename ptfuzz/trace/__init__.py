"""Traces: the format (schema, the Trace record, list and packed operations, validation), reading and writing
files (io; the packed reader that streams, packed), and the JSON view. `from ptfuzz import trace` gives all of it."""
from .format import (ARG_KINDS, ARM64_VA_BITS, CONFIG_DEFAULTS, CONFIG_RULES, FORMAT, KIND_MAX, KIND_TEXT,
                     TOP_KEYS, U64_MAX, VERSION, FileTrace, OpsSection, Trace, check_config, check_knobs,
                     check_ops, from_map, op_text, op_to_list, ops_from_list, to_map)
from .io import atomic_write, dumps, load, loads, save, trace_error
from .jsonview import from_json_doc, to_json_doc

__all__ = ["ARG_KINDS", "ARM64_VA_BITS", "CONFIG_DEFAULTS", "CONFIG_RULES", "FORMAT", "KIND_MAX", "KIND_TEXT",
           "TOP_KEYS", "U64_MAX", "VERSION", "FileTrace", "OpsSection", "Trace", "check_config", "check_knobs",
           "check_ops", "from_map", "op_text", "op_to_list", "ops_from_list", "to_map", "atomic_write", "dumps",
           "load", "loads", "save", "trace_error", "from_json_doc", "to_json_doc"]
