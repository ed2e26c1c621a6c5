"""The JSON view of a trace (`ptfuzz trace show --json`, `ptfuzz trace pack` of a .json): a trace's map with its
ELF images as base64."""
import base64
from typing import Any

from .format import Trace, from_map, to_map
from .io import trace_error

def to_json_doc(trace: Trace) -> dict:
    doc = to_map(trace, packed=False)
    if "elfs" in doc:
        doc["elfs"] = [{"base64": base64.b64encode(b).decode()} for b in doc["elfs"]]
    return doc


def from_json_doc(doc: Any, path="<json>") -> Trace:
    try:
        if isinstance(doc, dict) and "elfs" in doc:
            elfs = doc["elfs"]
            if not isinstance(elfs, list) or not all(isinstance(e, dict) and set(e) == {"base64"} for e in elfs):
                raise ValueError('elfs: each entry must be {"base64": "..."}')
            try:
                doc = {**doc, "elfs": [base64.b64decode(e["base64"], validate=True) for e in elfs]}
            except (ValueError, TypeError):
                raise ValueError("elfs: invalid base64") from None
        return from_map(doc)
    except ValueError as exc:
        raise trace_error(path, exc) from None
