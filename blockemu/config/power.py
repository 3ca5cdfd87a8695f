"""The [power] section and its governor tunables, the one table (GOVERNOR_TUNABLES) governors check against."""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Any

from blockemu.config.base import choice, non_negative

# devfreq's governor names plus pmqos_qd: the one list.  Each names a class in
# blockemu/policies/governors.py, which checks at import that it has exactly
# these (config stays import-free, so it cannot ask there).
POWER_GOVERNORS = ("performance", "powersave", "userspace", "simple_ondemand", "pmqos_qd")


@dataclass(frozen=True)
class Tunable:
    """A governor tunable: a ``[power]`` key at start-up, a devfreq-style attribute written at run time.

    :data:`GOVERNOR_TUNABLES` lists them, read from :class:`PowerSection`'s
    fields (name, type, default) and their metadata (bounds, source): the
    configuration and the governors (blockemu/policies/governors.py) check
    the same rule.
    """

    name: str
    type: type  # int or float
    default: float
    # Where the default comes from.
    source: str
    # Bounds; a str bound names another tunable, whose current value it is.
    above: float | None = None  # exclusive
    minimum: float | None = None
    maximum: float | str | None = None
    at_least: str | None = None
    # 0 or one of the operating points (opp_freq_hz).
    in_opp_table: bool = False

    def problem(self, value: float, section: PowerSection, opp_table: str) -> str | None:
        """What is wrong with ``value`` next to ``section``'s other values; ``opp_table`` names the points."""
        if self.in_opp_table:
            return None if value == 0 or value in section.opp_freq_hz else f"must be 0 or one of {opp_table}"
        if self.above is not None:
            return None if value > self.above else f"must be > {self.above:g}"
        low = self.minimum if self.minimum is not None else float("-inf")
        high, high_text = float("inf"), ""
        if isinstance(self.maximum, str):
            high = getattr(section, self.maximum)
            high_text = f"{self.maximum} ({high:g})"
        elif self.maximum is not None:
            high, high_text = self.maximum, f"{self.maximum:g}"
        floor = getattr(section, self.at_least) if self.at_least is not None else low
        if low <= value <= high and value >= floor:
            return None
        rule = f"in {low:g}..{high_text}" if high_text else f">= {low:g}"
        if self.at_least is not None:
            rule += f" and >= {self.at_least} ({floor:g})"
        return f"must be {rule}"


def _tunable(source: str, **bounds: Any) -> dict[str, Any]:
    """Field metadata that makes a [power] key a governor tunable (see Tunable)."""
    return {"tunable": {"source": source, **bounds}}


@dataclass(frozen=True)
class PowerSection:
    """Controller frequency scaling and energy, a layer around any device.

    Operating points: Qualcomm UFS host controllers (sm8550/sm8650 device
    trees) list 75, 150 and 300 MHz core clocks.  Busy power at the top point
    ≈ 0.7 W follows Samsung's UFS 4.0 brief (6.0 MB/s per mA of sequential
    read, so ~700 mA at 4200 MB/s) taken at a ~1 V rail; lower points keep
    60 mW of static power and scale the dynamic rest with f·V², with assumed
    voltage corners 0.6 / 0.7 / 0.8 V.  Idle (clock running, link not
    hibernated) is mostly leakage, scaled with V.  These are illustrative
    figures, not one part's datasheet: override them for a specific part.
    """

    # Off by default: the device then runs at its own (top-speed) timing.
    enabled: bool = False
    # Operating points, ascending; devfreq reports frequencies in Hz.
    opp_freq_hz: tuple[int, ...] = (75_000_000, 150_000_000, 300_000_000)
    # Power while serving requests and while idle at each operating point.
    opp_busy_mw: tuple[float, ...] = (150.0, 305.0, 700.0)
    opp_idle_mw: tuple[float, ...] = (45.0, 53.0, 60.0)
    # Share of a request's time in the device that is controller-bound and
    # scales with f_max / f; the rest (NAND tR, program) does not.  0.15 is
    # the controller's part of a 4 KiB UFS read in [ufs] (command_overhead_us
    # 8 of ~59 µs, plus link/DMA): an assumption to sweep, not a measurement.
    controller_bound_share: float = 0.15
    # Time a frequency change stalls the controller (PLL relock and voltage
    # ramp, ~100 µs; UFS gear switching in Linux can take milliseconds).
    transition_latency_us: float = 100.0
    # One of POWER_GOVERNORS, switchable at run time.
    governor: str = "simple_ondemand"
    # The governor tunables, writable at run time (GOVERNOR_TUNABLES below).
    # simple_ondemand (devfreq's names and rules).
    polling_ms: int = field(default=60, metadata=_tunable("UFS hosts' devfreq polling interval", above=0))
    upthreshold: int = field(default=70, metadata=_tunable(
        "UFS hosts' simple_ondemand upthreshold", minimum=1, maximum=100, at_least="downdifferential"))
    downdifferential: int = field(default=5, metadata=_tunable(
        "UFS hosts' simple_ondemand downdifferential", minimum=0, maximum="upthreshold"))
    # userspace: the frequency to run at; 0 keeps the current one.
    set_freq: int = field(default=0, metadata=_tunable("devfreq userspace: keep the current frequency",
                                                       in_opp_table=True))
    # pmqos_qd: a request that arrives with at most qd_threshold requests in
    # flight (itself included) raises the minimum frequency to boost_freq
    # (0 = the highest point) for hold_ms; simple_ondemand runs underneath.
    qd_threshold: int = field(default=1, metadata=_tunable("a request alone in the queue is latency-bound",
                                                           minimum=0))
    boost_freq: int = field(default=0, metadata=_tunable("the highest point", in_opp_table=True))
    hold_ms: float = field(default=60.0, metadata=_tunable("one devfreq polling interval", minimum=0))

    def check(self) -> dict[str, str | None]:
        freqs = self.opp_freq_hz
        count = len(freqs)
        ascending = list(freqs) == sorted(set(freqs))

        def same_length(values: tuple[float, ...]) -> str | None:
            if len(values) != count:
                return f"must have {count} entries, one per opp_freq_hz"
            return None if all(v >= 0 for v in values) else "must be >= 0"

        opp_table = f"opp_freq_hz ({', '.join(map(str, freqs))})"
        return {
            "enabled": None,
            "opp_freq_hz": None if count and ascending and freqs[0] > 0
            else "must be a non-empty array of ascending frequencies > 0",
            "opp_busy_mw": same_length(self.opp_busy_mw),
            "opp_idle_mw": same_length(self.opp_idle_mw)
            # (a wrong opp_busy_mw length is reported for that key, just before this one)
            or (None if len(self.opp_busy_mw) != count
                or all(i <= b for i, b in zip(self.opp_idle_mw, self.opp_busy_mw, strict=True))
                else "must be <= opp_busy_mw at each point"),
            "controller_bound_share": None if 0 <= self.controller_bound_share <= 1 else "must be between 0 and 1",
            "transition_latency_us": non_negative(self.transition_latency_us),
            "governor": choice(self.governor, POWER_GOVERNORS),
            **{t.name: t.problem(getattr(self, t.name), self, opp_table) for t in GOVERNOR_TUNABLES},
        }


def _governor_tunables() -> tuple[Tunable, ...]:
    hints = typing.get_type_hints(PowerSection)
    return tuple(Tunable(f.name, hints[f.name], f.default, **f.metadata["tunable"])  # type: ignore[arg-type]
                 for f in dataclasses.fields(PowerSection) if "tunable" in f.metadata)


# Every governor tunable, in PowerSection's order: the one table the
# configuration and the governors check values against.
GOVERNOR_TUNABLES = _governor_tunables()


