"""Pass rules, checks and verdicts.

A claim is judged in each regime by one or more checks. A check is a statistic with its value, its
95% interval and a ``Rule`` fixed in code before anything runs. The verdict is

    NOT_APPLICABLE  when the claim's hypothesis is not met in that regime (the numbers are still
                    reported: "not applicable" is a statement about the premise, not a pass);
    HOLDS           when the hypothesis is met and every check passes its rule;
    FAILS           otherwise.

A negative control (a setting where the claim should not hold) is evaluated with the same rule and
reported beside the verdict; it never changes the verdict, but a control that passes is flagged,
because then the check does not discriminate in that regime.
"""

from __future__ import annotations

import math
import operator
from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any


class Verdict(str, Enum):
    HOLDS = "HOLDS"
    FAILS = "FAILS"
    NOT_APPLICABLE = "NOT_APPLICABLE"


_OPS = {">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt}
_BOUNDS = {"value": "the value", "ci_lo": "the 95% CI lower bound",
           "ci_hi": "the 95% CI upper bound"}


@dataclass(frozen=True)
class Rule:
    """Passes when ``bound`` (the value or an end of its interval) ``op`` ``threshold``."""

    bound: str
    op: str
    threshold: float

    def __post_init__(self):
        if self.bound not in _BOUNDS:
            raise ValueError(f"Rule.bound={self.bound!r} is invalid: one of {', '.join(_BOUNDS)}")
        if self.op not in _OPS:
            raise ValueError(f"Rule.op={self.op!r} is invalid: one of {', '.join(_OPS)}")

    def passes(self, value: float, ci: tuple[float, float]) -> bool:
        x = {"value": value, "ci_lo": ci[0], "ci_hi": ci[1]}[self.bound]
        return bool(math.isfinite(x) and _OPS[self.op](x, self.threshold))

    def describe(self) -> str:
        return f"{_BOUNDS[self.bound]} {self.op} {self.threshold:g}"


@dataclass(frozen=True)
class Check:
    """One statistic against its rule."""

    statistic: str
    value: float
    ci: tuple[float, float]
    rule: Rule

    @property
    def passed(self) -> bool:
        return self.rule.passes(self.value, self.ci)

    def to_dict(self) -> dict:
        return {"statistic": self.statistic, "value": _num(self.value),
                "ci": [_num(self.ci[0]), _num(self.ci[1])], "rule": self.rule.describe(),
                "passed": self.passed}


@dataclass(frozen=True)
class Condition:
    """One measured condition of a hypothesis: met when ``rule`` passes on ``value``."""

    statistic: str
    value: float
    rule: Rule

    @property
    def met(self) -> bool:
        return self.rule.passes(self.value, (self.value, self.value))

    def to_dict(self) -> dict:
        return {"statistic": self.statistic, "value": _num(self.value),
                "rule": self.rule.describe(), "met": self.met}


@dataclass(frozen=True)
class Hypothesis:
    """The claim's premise in words, and the measured conditions that decide whether it is met
    (none: it holds by construction of the data)."""

    statement: str
    conditions: tuple[Condition, ...] = ()

    @property
    def met(self) -> bool:
        return all(c.met for c in self.conditions)

    def to_dict(self) -> dict:
        return {"statement": self.statement, "met": self.met,
                "conditions": [c.to_dict() for c in self.conditions]}


@dataclass(frozen=True)
class Evaluation:
    """What a claim's ``evaluate`` returns for one regime (all seeds pooled)."""

    hypothesis: Hypothesis
    checks: tuple[Check, ...]
    n_pairs: int
    control: Check | None = None
    control_setting: str = ""
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def verdict(self) -> Verdict:
        if not self.hypothesis.met:
            return Verdict.NOT_APPLICABLE
        return Verdict.HOLDS if all(c.passed for c in self.checks) else Verdict.FAILS

    @property
    def control_ok(self) -> bool | None:
        """True when the control does *not* pass the rule (as it should); None without one."""
        return None if self.control is None else not self.control.passed

    def to_row(self, regime: str, seeds: list[int]) -> dict:
        """The ``regimes[]`` entry of verify.json."""
        head = self.checks[0]
        row = {"regime": regime, "verdict": self.verdict.value, "statistic": head.statistic,
               "value": _num(head.value), "ci": [_num(head.ci[0]), _num(head.ci[1])],
               "rule": " and ".join(c.rule.describe() if i == 0 else
                                    f"{c.statistic}: {c.rule.describe()}"
                                    for i, c in enumerate(self.checks)),
               "seeds": list(seeds), "n_pairs": int(self.n_pairs),
               "hypothesis": self.hypothesis.to_dict(),
               "checks": [c.to_dict() for c in self.checks]}
        if self.control is not None:
            row["control"] = {"setting": self.control_setting, **self.control.to_dict(),
                              "as_expected": self.control_ok}
        row["details"] = _jsonable(self.details)
        return row


def _num(x: float) -> float | None:
    """JSON has no NaN: undefined numbers become null."""
    x = float(x)
    return x if math.isfinite(x) else None


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if hasattr(obj, "tolist"):  # numpy scalars and arrays
        return _jsonable(obj.tolist())
    if isinstance(obj, float):
        return _num(obj)
    if hasattr(obj, "__dataclass_fields__"):
        return _jsonable(asdict(obj))
    return obj
