"""YAML output every reader parses back to the same values, whichever YAML it speaks.

kubectl and Helm read YAML with Go's YAML 1.1 parser, where ``y``, ``n``,
``on``, ``off`` and ``yes`` are booleans, ``1:20`` is a base-60 number and
``0o17`` or ``1_000`` are numbers; PyYAML quotes only some of these. An
image called ``y`` or an env value ``on`` would reach the cluster as a
boolean (the property test comparing Helm's rendering with ours found
this). So a string is written plain only when it cannot be anything else,
double-quoted otherwise; multi-line strings (PEM keys) are ``|`` blocks.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any, Final

import yaml

_PLAIN: Final = re.compile(r"^[A-Za-z_/][A-Za-z0-9_./-]*$")
_AMBIGUOUS: Final = frozenset(["y", "n", "yes", "no", "on", "off", "true", "false", "null"])


class _Dumper(yaml.SafeDumper):  # type: ignore[misc]
    """SafeDumper with the string rules above."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    if "\n" in value.rstrip("\n"):
        style: str | None = "|"
    elif _PLAIN.match(value) and value.lower() not in _AMBIGUOUS:
        style = None
    else:
        style = '"'
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _represent_str)


def dump(data: Any) -> str:
    """One document, keys in insertion order, ASCII only (escapes for the rest)."""
    text: str = yaml.dump(data, Dumper=_Dumper, sort_keys=False, width=1000)
    return text


def dump_all(documents: Iterable[Any]) -> str:
    """Documents each led by ``---``, as kubectl reads them."""
    return "".join("---\n" + dump(d) for d in documents)
