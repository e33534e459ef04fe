"""The pieces a flag's declaration is made of: the allowed range of a numeric
flag (:class:`Interval`), the choices of a ``ChoiceEnum`` field, and the
flag's name on the command line."""

import math
from dataclasses import dataclass
from enum import Enum
from numbers import Integral, Real
from typing import Any, List, Optional


def _finite_number(value: Any) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class Interval:
    """The allowed values of a numeric flag: ``low < x < high``, each end
    closed (``<=``) where said; ``integer``: whole numbers only."""

    low: float
    high: float = math.inf
    closed_low: bool = False
    closed_high: bool = False
    integer: bool = False

    def __contains__(self, value: Any) -> bool:
        if self.integer and (not isinstance(value, Integral) or isinstance(value, bool)):
            return False
        if not _finite_number(value):
            return False
        above = value >= self.low if self.closed_low else value > self.low
        below = value <= self.high if self.closed_high else value < self.high
        return above and below

    def describe(self) -> str:
        """``an integer >= 1``, ``a finite number > 0``, ``a number in [0, 1)``."""
        low = ">=" if self.closed_low else ">"
        if self.integer and self.high == math.inf:
            return f"an integer {low} {self.low:g}"
        if self.high == math.inf:
            return f"a finite number {low} {self.low:g}"
        return (f"a number in {'[' if self.closed_low else '('}{self.low:g}, "
                f"{self.high:g}{']' if self.closed_high else ')'}")


def choices_of(f) -> Optional[List[str]]:
    """The allowed values of a field typed ``ChoiceEnum`` (or ``Optional`` of one)."""
    for candidate in (f.type, *getattr(f.type, "__args__", ())):
        if isinstance(candidate, type) and issubclass(candidate, Enum):
            return [member.value for member in candidate]
    return None


def flag(name: str) -> str:
    """The command-line flag of a field: ``skip_recursions`` is ``--skip-recursions``."""
    return "--" + name.replace("_", "-")


def arch_description(arch: str) -> str:
    return f"--arch {arch}" if arch else "this model"
