"""Cumulative BPF maps read as intervals: what changed since the last read, and the totals of
the whole run.

A tool's kernel side only ever adds to its map entries (no reset between reads, so no event is
lost between a read and a clear). Each read takes the change since the previous one; an entry
whose owner is gone (a process that exited, a socket that closed) is retired: its last values go
into the run's totals and the entry leaves the map, so a long run over many short-lived processes
does not fill it.

Values are anything with `a - b` (the change), `a + b` (totals) and truth (non-zero): Log2Hist,
Counts, or a tool's own small class.
"""
from __future__ import annotations

import os
from typing import Callable, Generic, Iterable, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class Counts:
    """Named integer counters that subtract and add field by field."""
    __slots__ = ("values",)

    def __init__(self, values: dict[str, int]):
        self.values = values

    @classmethod
    def of(cls, structs, names: Iterable[str]) -> "Counts":
        """The named fields of a struct, or summed over a per-CPU list of structs."""
        parts = structs if isinstance(structs, list) else [structs]
        return cls({name: sum(getattr(p, name) for p in parts) for name in names})

    @classmethod
    def zero(cls, names: Iterable[str]) -> "Counts":
        return cls(dict.fromkeys(names, 0))

    def __getitem__(self, name: str) -> int:
        return self.values[name]

    def __sub__(self, other: "Counts") -> "Counts":
        return Counts({k: v - other.values.get(k, 0) for k, v in self.values.items()})

    def __add__(self, other: "Counts") -> "Counts":
        return Counts({k: v + other.values.get(k, 0) for k, v in self.values.items()})

    def __bool__(self) -> bool:
        return any(self.values.values())

    def __eq__(self, other) -> bool:
        return isinstance(other, Counts) and self.values == other.values

    def __repr__(self) -> str:
        return f"Counts({self.values})"


class CumulativeMap(Generic[K, V]):
    """Reads a BPF hash map of cumulative values.

    decode(key, value) -> (K, V) turns a map entry into a hashable key and a value; retire(K, V)
    says whether its owner is gone (the entry is then deleted once its values are taken)."""

    def __init__(self, bpf_map, decode: Callable[[object, object], tuple[K, V]],
                 retire: Callable[[K, V], bool] | None = None):
        self.map = bpf_map
        self.decode = decode
        self.retire = retire or (lambda key, value: False)
        self.live: dict[K, V] = {}          # the last values read of entries still in the map
        self.retired: dict[K, V] = {}       # the final values of entries that left the map

    def read(self) -> dict[K, V]:
        """The non-zero changes since the last read, by key."""
        changes: dict[K, V] = {}
        for raw_key, raw_value in self.map.items():
            key, value = self.decode(raw_key, raw_value)
            before = self.live.get(key)
            change = value - before if before is not None else value
            if change:
                changes[key] = change
            self.live[key] = value
            if self.retire(key, value):
                self.map.delete(raw_key)
                del self.live[key]
                old = self.retired.get(key)
                self.retired[key] = value + old if old is not None else value
        return changes

    def totals(self) -> dict[K, V]:
        """Everything counted since the start, by key (retired entries included)."""
        merged = dict(self.retired)
        for key, value in self.live.items():
            merged[key] = value + merged[key] if key in merged else value
        return merged


def alive(pid: int) -> bool:
    """The process still exists (its counters may still grow)."""
    return os.path.exists(f"/proc/{pid}")
