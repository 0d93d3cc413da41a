"""Job specs from YAML or JSON files, read strictly (JSON is YAML, so one parser reads both)."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import yaml

from tailor.errors import TailorError

_BOOL_TAG = "tag:yaml.org,2002:bool"
_TIMESTAMP_TAG = "tag:yaml.org,2002:timestamp"
_MERGE_TAG = "tag:yaml.org,2002:merge"


class SpecLoader(yaml.SafeLoader):
    """yaml.SafeLoader read as YAML 1.2 reads a spec, and strict about keys.

    - A key given twice in one mapping is an error: PyYAML (like json) silently keeps the
      last, so `epochs: 3` then `epochs: 30` would train for 30 unseen; the server refuses
      duplicate keys in a JSON body for the same reason.
    - Only true/false are booleans and nothing is a date: YAML 1.1 turns the label names
      `yes`, `no`, `on`, `off` into booleans and `2024-01-01` into a date, which the server
      then refuses as "not a valid string" (or the client cannot even send).
    """

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == _MERGE_TAG:
                continue  # `<<: *defaults` merges; its keys may be overridden on purpose
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, str | int | float | bool):
                continue  # unhashable keys: the base class refuses them itself
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} appears more than once in one mapping",
                    key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


SpecLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag not in (_BOOL_TAG, _TIMESTAMP_TAG)]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
SpecLoader.add_implicit_resolver(_BOOL_TAG, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                                 list("tTfF"))


def load_spec(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A job spec (the body of POST /jobs) from a YAML or JSON file.

    Raises:
        TailorError: `spec_unreadable` when the file cannot be read; `invalid_spec` when it
            is not UTF-8, not YAML, repeats a key, or is not a mapping. The message is one
            line naming the file (and the line, for a YAML problem).
    """
    path = Path(path)
    try:
        spec = yaml.load(path.read_text(encoding="utf-8"), Loader=SpecLoader)  # noqa: S506
    except OSError as exc:
        raise TailorError(None, "spec_unreadable",
                          f"cannot read spec {path}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise TailorError(None, "invalid_spec",
                          f"cannot read spec {path}: not valid UTF-8 (byte "
                          f"0x{exc.object[exc.start]:02x} at offset {exc.start}); save it as "
                          "UTF-8") from exc
    except yaml.YAMLError as exc:
        raise TailorError(None, "invalid_spec",
                          f"cannot read spec {path}: {_yaml_problem(exc)}") from exc
    if not isinstance(spec, dict):
        raise TailorError(None, "invalid_spec",
                          f"spec {path} must be a mapping with name, task, data, ...")
    return spec


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """One line: where in the file, and what (PyYAML's own message spans several lines)."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    where = f"line {mark.line + 1} column {mark.column + 1}: " if mark is not None else ""
    return " ".join(f"{where}{problem}".split())
