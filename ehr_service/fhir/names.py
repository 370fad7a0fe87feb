"""How a person's name reads (R4 HumanName, §2.24.0.9): the name a reader
should see, in the order its script writes it.

- The name chosen: ``official``, else ``usual``, else the first one that is not
  ``old``, else the first.
- ``HumanName.text`` if present: the name as its owner writes it.
- Otherwise, built from the parts: in Han script family name then given names,
  with no space (王芳); in other scripts given names then family, spaced
  (Fletcher Hyatt); prefixes first and suffixes last. Between parts of different
  scripts (王 Fang) a space keeps them apart.
"""

from __future__ import annotations

import re
from typing import Any

_HAN = re.compile(
    r"[\u2e80-\u2fdf\u3005\u3007\u3021-\u3029\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f]"
)
_USE_ORDER = ("official", "usual")


def is_han(text: str) -> bool:
    """Written in Han script (ignoring spaces and the middle dot of transliterations)."""
    letters = [c for c in text if not c.isspace() and c not in "·・-"]
    return bool(letters) and all(_HAN.match(c) for c in letters)


def chosen_name(names: Any) -> dict[str, Any] | None:
    candidates = [n for n in names if isinstance(n, dict)] if isinstance(names, list) else []
    for use in _USE_ORDER:
        for name in candidates:
            if name.get("use") == use:
                return name
    current = [n for n in candidates if n.get("use") != "old"]
    chosen = current or candidates
    return chosen[0] if chosen else None


def _strings(value: Any) -> list[str]:
    items = value if isinstance(value, list) else [value]
    return [s.strip() for s in items if isinstance(s, str) and s.strip()]


def _joined(parts: list[str]) -> str:
    out = ""
    for part in parts:
        if out and not (is_han(out[-1]) and is_han(part[0])):
            out += " "
        out += part
    return out


def display_name(names: Any) -> str | None:
    """The name of a Patient (or Practitioner, RelatedPerson) as a reader sees it."""
    name = chosen_name(names)
    if name is None:
        return None
    text = name.get("text")
    if isinstance(text, str) and text.strip():
        return text.strip()
    family = _strings(name.get("family"))
    given = _strings(name.get("given"))
    prefix, suffix = _strings(name.get("prefix")), _strings(name.get("suffix"))
    core = family + given if family and is_han(family[0]) else given + family
    return _joined(prefix + core + suffix) or None
