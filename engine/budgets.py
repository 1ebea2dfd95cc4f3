"""Budgets of a search (MACs, latency in ms, parameters): parsing, feasibility, and which step fits.

A budget outside what the channel space can reach is a user error caught before any work: below
the smallest configuration nothing fits, and above the full network the search would answer "the
full network", which is never what was meant.  `feasible_range` gives the MACs and parameter range
without data or training, so the API can validate a request when it arrives.

A budget may also be a share of the full network (``"40%"``): a user rarely knows a network's MACs
by heart, and "40% of the full network" is what the papers report.  Specs keep such a budget as
the string, so it survives JSON and means the same on any worker; `budgets_of` turns it into an
amount once the full network's figures are known (`resolve_target`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from engine.spec import BUDGET_KINDS
from models import build_supernet, count_macs, count_params
from models.space import ChannelSpace

UNITS = {"macs": "MACs", "params": "params", "latency_ms": "latency"}
"""What a budget of each kind counts, as written after its figure."""
_SUFFIX = {"": 1, "k": 1e3, "m": 1e6, "g": 1e9, "t": 1e12}
_PERCENT = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*%\s*$")
_AMOUNT = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*([kmgt]?)\s*$", re.IGNORECASE)


class BudgetError(ValueError):
    """A budget that cannot be met (or is malformed); the message gives the feasible range."""


class Measured(Protocol):
    macs: int
    params: int
    latency_ms: float | None


@dataclass(frozen=True)
class Budget:
    kind: str  # one of BUDGET_KINDS
    target: float

    def value(self, point: Measured) -> float | None:
        return getattr(point, self.kind)

    def fits(self, point: Measured) -> bool:
        value = self.value(point)
        return value is not None and value <= self.target

    @property
    def label(self) -> str:
        """A file-name-safe name: ``macs-2M``, ``latency_ms-1.5``, ``params-100k``."""
        return (
            f"{self.kind}-{self.target:g}"
            if self.kind == "latency_ms"
            else f"{self.kind}-{format_amount(self.target, 4)}"
        )

    def describe(self) -> str:
        if self.kind == "latency_ms":
            return f"{self.target:g} ms"
        return f"{format_amount(self.target)} {UNITS[self.kind]}"


def parse_amount(text: str | float | int) -> float:
    """``"2M"`` -> 2e6, ``"300k"`` -> 3e5, ``"1.5G"`` -> 1.5e9; plain numbers pass through."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        return float(text)
    match = _AMOUNT.match(str(text))
    if not match:
        raise BudgetError(f"cannot read {text!r} as an amount (examples: 2M, 300k, 1.5G, 1500000)")
    return float(match.group(1)) * _SUFFIX[match.group(2).lower()]


def parse_amounts(text: str) -> list[float]:
    """A comma-separated list of amounts (``"2M,4M"``)."""
    return [parse_amount(part) for part in text.split(",") if part.strip()]


Ranges = dict[str, dict[str, float]]
"""``{kind: {"min", "max"}}``: what a search of one network can reach, by budget kind."""

Target = float | int | str
"""A budget as given: an amount (``2000000``, ``"2M"``) or a share of the full network (``"40%"``)."""


def percent_of(value: Target) -> float | None:
    """The percentage a ``"40%"`` budget names (None for an amount); raises for a share outside (0, 100]."""
    if not isinstance(value, str) or "%" not in value:
        return None
    match = _PERCENT.match(value)
    if not match:
        raise BudgetError(f"cannot read {value!r} as a share of the full network (example: 40%)")
    percent = float(match.group(1))
    if not 0 < percent <= 100:
        raise BudgetError(f"a budget share must be above 0% and at most 100%, got {value!r}")
    return percent


def parse_target(value: Target) -> Target:
    """One budget as typed: ``"40%"`` stays a (normalised) share, anything else becomes its amount."""
    percent = percent_of(value)
    return f"{percent:g}%" if percent is not None else parse_amount(value)


def parse_targets(text: str) -> list[Target]:
    """A comma-separated list of budgets, amounts or shares (``"2M,4M"``, ``"40%,60%"``)."""
    return [parse_target(part) for part in text.split(",") if part.strip()]


def resolve_target(value: Target, full: float | None, kind: str = "macs") -> float:
    """The amount a budget stands for: a share is taken of ``full`` (the full network's figure)."""
    percent = percent_of(value)
    if percent is None:
        return parse_amount(value)
    if full is None:
        raise BudgetError(f"a {kind} budget of {value} needs the full network's {kind}, which is not known here")
    return full * percent / 100.0


def format_amount(value: float, digits: int = 3) -> str:
    """2000000 -> ``2M``, 2150000 -> ``2.15M``, 950 -> ``950``."""
    for suffix, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.{digits}g}{suffix}"
    return f"{value:.{digits}g}"


def check_targets(
    macs: Iterable[Target] = (), latency_ms: Iterable[Target] = (), params: Iterable[Target] = ()
) -> None:
    """Raise `BudgetError` unless there is a budget and each is a positive amount or a share in (0, 100]%."""
    given = {"macs": list(macs), "latency_ms": list(latency_ms), "params": list(params)}
    if not any(given.values()):
        raise BudgetError("give at least one budget (MACs, latency in ms, or params)")
    for kind, targets in given.items():
        for target in targets:
            if percent_of(target) is None and not parse_amount(target) > 0:
                raise BudgetError(f"a {kind} budget must be positive, got {parse_amount(target):g}")


def budgets_of(
    macs: Iterable[Target] = (),
    latency_ms: Iterable[Target] = (),
    params: Iterable[Target] = (),
    full: dict[str, float] | None = None,
) -> list[Budget]:
    """The budget list of a request, in the order given; at least one budget is required.

    Shares (``"40%"``) are taken of ``full[kind]``, the full network's MACs, latency or params.
    """
    full = full or {}
    given = {"macs": list(macs), "latency_ms": list(latency_ms), "params": list(params)}
    check_targets(**given)
    return [Budget(kind, resolve_target(v, full.get(kind), kind)) for kind in BUDGET_KINDS for v in given[kind]]


def space_range(space: ChannelSpace) -> Ranges:
    """MACs and params of the smallest and the full configuration."""
    small, full = space.smallest(), space.full()
    return {
        "macs": {"min": count_macs(space, small), "max": count_macs(space, full)},
        "params": {"min": count_params(space, small), "max": count_params(space, full)},
    }


def feasible_range(
    arch: str, input_size: int, num_classes: int, width_mult: float = 1.0, width_min: float = 0.25, divisor: int = 8
) -> Ranges:
    """``{"macs": {"min", "max"}, "params": {"min", "max"}}`` a search of this network can reach."""
    supernet = build_supernet(arch, num_classes, input_size, width_mult, divisor, width_min)
    return space_range(supernet.space)


def check_budgets(budgets: list[Budget], ranges: Ranges) -> None:
    """Raise `BudgetError` for every budget outside its range, naming the feasible range."""
    problems = []
    for budget in budgets:
        if budget.kind not in ranges:
            raise BudgetError(f"no {budget.kind} range is known, so a {budget.kind} budget cannot be checked")
        low, high = ranges[budget.kind]["min"], ranges[budget.kind]["max"]
        where = "below the smallest" if budget.target < low else "above the full" if budget.target > high else None
        if where:
            problems.append(
                f"{budget.describe()} is {where} configuration; feasible range is "
                f"{_describe(budget.kind, low)} to {_describe(budget.kind, high)}"
            )
    if problems:
        raise BudgetError("; ".join(problems))


def _describe(kind: str, value: float) -> str:
    return Budget(kind, value).describe()


def describe_target(kind: str, value: Target) -> str:
    """A budget as requested, for people: ``"60% MACs"`` for a share, ``"2M MACs"`` for an amount."""
    percent = percent_of(value)
    if percent is None:
        return _describe(kind, parse_amount(value))
    return f"{percent:g}% {UNITS[kind]}"


def until_all_met(budgets: list[Budget]) -> Callable[[Sequence[Measured]], bool]:
    """A stop test for a growing trajectory: true once every budget is fitted by some point.

    It looks at each point once (the trajectory only grows), so checking after every step is cheap.
    """
    unmet, seen = list(budgets), 0

    def done(points: Sequence[Measured]) -> bool:
        nonlocal unmet, seen
        for point in points[seen:]:
            unmet = [b for b in unmet if not b.fits(point)]
        seen = len(points)
        return not unmet

    return done


def first_fit(points: list, budget: Budget):
    """The first point of a trajectory that fits ``budget`` (None if none does)."""
    return next((p for p in points if budget.fits(p)), None)
