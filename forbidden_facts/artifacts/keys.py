"""`Key` and `Artifact`: how a summary JSON's keys are declared and read."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar


class Key(str):
    """One key of a summary JSON (its text), and where a paper value sits below it.

    Args:
        key: The top-level key in the file.
        *below: Keys or list indices under it (``Key("total_effect_ci", 0)``).
        number: Whether the value is one of the paper's numbers (a table cell or macro).
        optional: Whether a file may lack the key (it then reads as None).
    """

    path: tuple
    number: bool
    optional: bool
    name: str

    def __new__(cls, key: str, *below: str | int, number: bool = True, optional: bool = False):
        obj = super().__new__(cls, key)
        obj.path = (key, *below)
        obj.number = number
        obj.optional = optional
        obj.name = key
        return obj

    def __set_name__(self, owner, name: str) -> None:
        self.name = name

    def read(self, data: Mapping, source: str) -> Any:
        """The value this key names in `data` (an artifact read from `source`)."""
        if self.path[0] not in data:
            if self.optional:
                return None
            raise KeyError(
                f"{source} has no key {self.path[0]!r}: it was written by an older version of "
                "the workflow. Rerun the rule that writes it (snakemake --forcerun <rule>, or "
                "delete the file) so that it follows forbidden_facts/artifacts/."
            )
        value: Any = data
        for step in self.path:
            if isinstance(value, Mapping):
                value = value.get(step)
            elif isinstance(value, list | tuple) and isinstance(step, int):
                value = value[step] if -len(value) <= step < len(value) else None
            else:
                value = None
            if value is None:
                return None
        return value


class Artifact:
    """A summary JSON: its path (as the rules spell it) and its keys."""

    PATH: ClassVar[str] = ""

    @classmethod
    def keys(cls) -> dict[str, Key]:
        """Every declared key by its name (the paper's name for its value)."""
        out: dict[str, Key] = {}
        for klass in reversed(cls.__mro__):
            out |= {n: v for n, v in vars(klass).items() if isinstance(v, Key)}
        return out

    @classmethod
    def required(cls) -> list[str]:
        """The top-level keys every file of this kind has."""
        return list(dict.fromkeys(k.path[0] for k in cls.keys().values() if not k.optional))

    @classmethod
    def numbers(cls, data: Mapping, source: str | None = None) -> dict[str, Any]:
        """The paper's numbers in one file: ``{name: value}`` for every number key."""
        source = source or cls.PATH
        return {n: k.read(data, source) for n, k in cls.keys().items() if k.number}
