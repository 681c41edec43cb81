"""Stacking: one system standing for several that differ only in numbers (dies, a split, a page size ...),
its differing numbers numpy arrays over the designs. The lowering and the fast engine take array leaves
(kvnand.program), so a stacked system lowers every design of a sweep in one program. Each stacked system
was validated on its own first; stacking only gathers their numbers."""

from __future__ import annotations

from pydantic import BaseModel


class NotStackable(ValueError):
    """The systems differ in more than numbers (a part, a name, a mapping): they lower to different programs."""


def stack(systems: list, shape: tuple[int, ...]):
    """The first system with every number that differs between `systems` an array of their values in
    `shape` (whose size is the number of systems), the rest shared."""
    return _stack(systems[0], systems, shape)


def is_number(x) -> bool:
    """A number a stacked system may hold as an array (not a bool)."""
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def stack_shape(overrides: dict) -> tuple:
    """What overrides must share to stack: their keys and every value that is not a number (a number may still
    change the lowering's structure: such designs are then walked one by one)."""
    return tuple((k, None if is_number(v) else repr(v)) for k, v in overrides.items())


def _stack(first, values: list, shape):
    if all(v is first for v in values):
        return first
    if isinstance(first, BaseModel):
        if any(type(v) is not type(first) for v in values):
            raise NotStackable(f"{type(first).__name__} parts of different kinds")
        update = {}
        for name in type(first).model_fields:
            mine = getattr(first, name)
            new = _stack(mine, [getattr(v, name) for v in values], shape)
            if new is not mine:
                update[name] = new
        return first.model_copy(update=update) if update else first
    if all(v == first and type(v) is type(first) for v in values):
        return first
    if is_number(first) and all(is_number(v) for v in values):
        import numpy as np

        return np.array(values).reshape(shape)
    raise NotStackable(f"values {first!r} and others that are not numbers")
