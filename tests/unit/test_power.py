"""The power layer and its governors on scripted loads: exact frequency timelines and energy."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from blockemu.api import Route
from blockemu.clock import VirtualClock
from blockemu.config import POWER_GOVERNORS, ConfigError, PowerSection, config_from_mapping
from blockemu.devices.base import ApiError, Capabilities, MetricFamily
from blockemu.layers.power import PowerModel
from blockemu.policies.governors import (
    GOVERNORS,
    MAX_FREQ,
    BoostState,
    GovernorTransitionError,
    GovernorTunables,
    PmQosQueueDepth,
    TunableError,
    ondemand_freq,
)
from blockemu.runtime import DeviceRuntime
from blockemu.stack import build
from blockemu.timing import UnitTimeline
from tests.conftest import api, small_ufs_config

MHZ = 1_000_000
MiB = 1024 * 1024
MS = 1_000_000
US = 1_000


class FifoDevice:
    """One server with a fixed service time: the simplest device that queues."""

    name = "fifo"
    kind = "fifo"
    size_bytes = 1 << 20
    capabilities = Capabilities()

    def __init__(self, service_ns: int) -> None:
        self.service_ns = service_ns
        self.timeline = UnitTimeline(1)
        self.starts: list[int] = []

    def _op(self, now_ns: int) -> int:
        self.starts.append(now_ns)
        return self.timeline.occupy_one(now_ns, 0, self.service_ns)

    def read(self, offset: int, buf: memoryview, now_ns: int) -> int:
        return self._op(now_ns)

    def write(self, offset: int, data: memoryview, fua: bool, now_ns: int) -> int:
        return self._op(now_ns)

    def trim(self, offset: int, length: int, now_ns: int) -> int:
        return self._op(now_ns)

    def write_zeroes(self, offset: int, length: int, fua: bool, now_ns: int) -> int:
        return self._op(now_ns)

    def flush(self, now_ns: int) -> int:
        return self._op(now_ns)

    def background_step(self, now_ns: int) -> int | None:
        return None

    def describe(self) -> dict[str, Any]:
        return {"name": self.name}

    def metrics(self) -> Iterator[MetricFamily]:
        yield MetricFamily("blockemu_fifo_requests", "counter", "requests", [({}, len(self.starts))])

    def routes(self) -> list[Route]:
        return [Route("GET", "/api/v1/fifo", lambda: {"starts": len(self.starts)}, "fifo")]

    def close(self) -> None:
        pass


# Three points, 1:2:4, and half of the service time controller-bound:
# stretch k = 0.5 * 400/f + 0.5 is 2.5, 1.5 and 1.0.
SECTION = PowerSection(
    enabled=True,
    opp_freq_hz=(100 * MHZ, 200 * MHZ, 400 * MHZ),
    opp_busy_mw=(1000.0, 2000.0, 4000.0),
    opp_idle_mw=(100.0, 200.0, 400.0),
    controller_bound_share=0.5,
    transition_latency_us=10.0,
    polling_ms=10,
    upthreshold=70,
    downdifferential=5,
    hold_ms=5.0,
)


def model(governor: str, service_ns: int = 1000, **changes: Any) -> tuple[PowerModel, FifoDevice]:
    from dataclasses import replace

    device = FifoDevice(service_ns)
    return PowerModel(device, replace(SECTION, governor=governor, **changes)), device


def read(power: PowerModel, at_ns: int, depth: int | None = None) -> int:
    if depth is not None:
        power.observe_arrival(at_ns, depth)
    return power.read(0, memoryview(bytearray(1)), at_ns)


# ------------------------------------------------------------------ governors
@pytest.mark.parametrize(
    ("busy_us", "total_us", "cur", "expected"),
    [
        (0, 0, 400 * MHZ, MAX_FREQ),  # no time measured: assume max
        (8000, 10000, 100 * MHZ, MAX_FREQ),  # 80 % > upthreshold
        (6800, 10000, 200 * MHZ, 200 * MHZ),  # 68 % in (65, 70]: keep
        (6000, 10000, 400 * MHZ, 352_941_176),  # 6000*400e6/10000*100 // (70 - 5//2)
        (1000, 10000, 400 * MHZ, 58_823_529),
        (0, 10000, 400 * MHZ, 0),
        (2**24, 2**25, 400 * MHZ, 294_117_647),  # scaled by 2^-7 first, as the kernel does
    ],
)
def test_ondemand_arithmetic_is_devfreqs(busy_us: int, total_us: int, cur: int, expected: int) -> None:
    assert ondemand_freq(busy_us, total_us, cur, 70, 5) == expected


def test_every_configured_governor_name_has_a_class() -> None:
    assert tuple(GOVERNORS) == POWER_GOVERNORS


def test_opp_rounding_is_devfreqs_floor() -> None:
    power, _ = model("performance")
    assert [power.opp_index(f) for f in (0, 99 * MHZ, 100 * MHZ, 399 * MHZ, MAX_FREQ)] == [0, 0, 0, 1, 2]


def test_pmqos_refuses_transitions_not_in_its_table() -> None:
    governor = PmQosQueueDepth(GovernorTunables(opp_freq_hz=SECTION.opp_freq_hz))
    with pytest.raises(GovernorTransitionError, match="hold_expired is not allowed in state following"):
        governor.on_deadline(0, 100 * MHZ)
    assert governor.boost_state is BoostState.FOLLOWING


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("upthreshold", "101", "upthreshold = 101: must be in 1..100"),
        ("downdifferential", "80", "downdifferential = 80: must be in 0..upthreshold (70)"),
        ("polling_ms", "0", "polling_ms = 0: must be > 0"),
        ("polling_ms", "fast", "polling_ms: 'fast' is not an integer"),
        ("boost_freq", "123", "boost_freq = 123: must be 0 or one of 100000000, 200000000, 400000000"),
        ("hold_ms", "-1", "hold_ms = -1: must be >= 0"),
        ("cur_freq", "1", "cur_freq is not a governor tunable"),
    ],
)
def test_bad_tunables_are_refused_and_change_nothing(name: str, text: str, message: str) -> None:
    tunables = GovernorTunables(opp_freq_hz=SECTION.opp_freq_hz)
    before = tunables.snapshot()
    with pytest.raises(TunableError, match=message.replace("(", r"\(").replace(")", r"\)")):
        tunables.set(name, text)
    assert tunables.snapshot() == before


# ------------------------------------------------------------- service time
def test_stretch_transition_and_queueing_at_the_lowest_point() -> None:
    power, device = model("powersave")
    # powersave asks for the lowest point at start: 10 µs transition from t=0.
    first = read(power, 0)
    second = read(power, 0)
    assert first == 10 * US + 2500  # waits for the transition, then 1000 ns × 2.5
    assert second == first + 2500  # queues behind the first, at the same stretch
    # The wrapped device saw its own (slower) clock: both start at 10 µs.
    assert device.starts == [10 * US, 10 * US]
    assert power.freq_log == [(0, 400 * MHZ), (0, 100 * MHZ)]


def test_device_clock_catches_up_when_idle() -> None:
    power, device = model("powersave")
    read(power, 0)
    read(power, 1 * MS)
    assert device.starts == [10 * US, 1 * MS]
    assert read(power, 1 * MS + 100) == 1 * MS + 2500 + 2500  # waits for the previous one


def test_energy_integrates_busy_stall_and_idle_power() -> None:
    power, _ = model("powersave")
    read(power, 0)
    read(power, 0)
    power.advance(20 * US)
    # [0, 10 µs) transition stall at 100 MHz busy power (1 W), [10, 15) µs
    # busy (1 W), [15, 20) µs idle (0.1 W).
    assert power.energy_joules == pytest.approx(10e-6 + 5e-6 + 5e-6 * 0.1, rel=1e-12)
    assert power.busy_in_state_ns == [15 * US, 0, 0]
    assert power.time_in_state_ns == [20 * US, 0, 0]


def test_energy_per_point_after_a_governor_switch() -> None:
    clock = VirtualClock()
    power = PowerModel(FifoDevice(1000), SECTION.__class__(**{**SECTION.__dict__, "governor": "performance"}),
                       clock.now_ns)
    read(power, 0)  # busy [0, 1 µs) at 400 MHz
    clock.advance_to(2 * US)
    api(power, "PUT", ["power", "governor"], b"powersave")  # transition [2, 12) µs
    clock.advance_to(20 * US)
    power.advance(20 * US)
    expected_400 = 1e-6 * 4.0 + 1e-6 * 0.4  # 1 µs busy + 1 µs idle
    expected_100 = 10e-6 * 1.0 + 8e-6 * 0.1  # stall + idle
    assert power.energy_in_state_j == pytest.approx([expected_100, 0.0, expected_400], rel=1e-12)


# --------------------------------------------------------- exact timelines
def test_simple_ondemand_timeline_on_a_scripted_load() -> None:
    power, _ = model("simple_ondemand", service_ns=8 * MS)
    read(power, 1 * MS)  # busy [1, 9) ms at 400 MHz: 80 % at the 10 ms poll, stay at max
    read(power, 12 * MS)  # busy [12, 20) ms: 80 % again
    # (20, 30]: idle, so 0 Hz is wanted and the lowest point chosen at 30 ms.
    done = read(power, 31 * MS)  # at 100 MHz: 8 ms × 2.5 = 20 ms, busy [31, 51) ms
    assert done == 51 * MS
    # The 40 ms poll sees 90 % busy and wants max, but the transition waits for
    # the request in flight: it starts at 51 ms.  The 60 ms poll sees 1 ms of
    # busy in its window: 10 % of 400 MHz / 0.675 → 58.8 MHz → lowest point.
    power.advance(70 * MS)
    assert power.freq_log == [(0, 400 * MHZ), (30 * MS, 100 * MHZ), (51 * MS, 400 * MHZ), (60 * MS, 100 * MHZ)]
    assert power.trans_table == [[0, 0, 1], [0, 0, 0], [2, 0, 0]]


def test_a_request_arriving_during_a_pending_transition_waits_for_it() -> None:
    power, _ = model("simple_ondemand", service_ns=8 * MS)
    read(power, 31 * MS)  # at 100 MHz after the 10 ms poll: busy [31, 51) ms
    # The 40 ms poll wants max; a request at 45 ms waits for the drain (51 ms)
    # and the 10 µs transition, then runs at max.
    assert read(power, 45 * MS) == 51 * MS + 10 * US + 8 * MS


def test_pmqos_boosts_on_shallow_arrivals_and_holds() -> None:
    power, _ = model("pmqos_qd")
    power.advance(11 * MS)  # the idle 10 ms poll took it to 100 MHz
    assert read(power, 12 * MS, depth=1) == 12 * MS + 10 * US + 1000  # boosted before it is served
    read(power, 13 * MS, depth=2)  # deeper than qd_threshold: the hold is not renewed
    read(power, 15 * MS, depth=1)  # renews the hold to 20 ms
    power.advance(25 * MS)
    assert power.freq_log == [(0, 400 * MHZ), (10 * MS, 100 * MHZ), (12 * MS, 400 * MHZ), (20 * MS, 100 * MHZ)]
    assert isinstance(power.governor, PmQosQueueDepth)
    assert power.governor.boosts == 1
    assert power.governor.boost_state is BoostState.FOLLOWING


def test_pmqos_threshold_zero_never_boosts() -> None:
    power, _ = model("pmqos_qd", qd_threshold=0)
    power.advance(11 * MS)
    read(power, 12 * MS, depth=1)
    power.advance(25 * MS)
    assert power.freq_log == [(0, 400 * MHZ), (10 * MS, 100 * MHZ)]


def test_pmqos_depth_falls_back_to_requests_in_flight() -> None:
    power, _ = model("pmqos_qd", service_ns=1 * MS)
    power.advance(11 * MS)
    read(power, 12 * MS)  # nothing in flight: depth 1, boost
    read(power, 12 * MS + 100 * US)  # the first is still in flight: depth 2
    assert power.last_queue_depth == 2


def test_governor_switches_at_run_time() -> None:
    clock = VirtualClock()
    power = PowerModel(FifoDevice(1000), SECTION, clock.now_ns)
    clock.advance_to(1 * MS)
    api(power, "PUT", ["power", "governor"], b"performance")
    clock.advance_to(15 * MS)  # no polling under performance: stays at max
    api(power, "PUT", ["power", "governor"], b"userspace")  # keeps the current frequency
    api(power, "PUT", ["power", "set_freq"], b"200000000")
    clock.advance_to(16 * MS)
    api(power, "PUT", ["power", "governor"], b"simple_ondemand")  # first poll 10 ms later
    clock.advance_to(27 * MS)
    assert api(power, "GET", ["power", "cur_freq"], b"") == "100000000\n"
    assert power.freq_log == [(0, 400 * MHZ), (15 * MS, 200 * MHZ), (26 * MS, 100 * MHZ)]
    assert api(power, "GET", ["power", "governor"], b"") == "simple_ondemand\n"


def test_idle_polls_are_skipped_but_counted_exactly() -> None:
    power, _ = model("simple_ondemand")
    power.advance(3600 * 1000 * MS)  # an hour idle: 360 000 polls
    assert power.freq_log == [(0, 400 * MHZ), (10 * MS, 100 * MHZ)]
    assert sum(power.time_in_state_ns) == 3600 * 1000 * MS
    assert read(power, 3600 * 1000 * MS + 5 * MS) == 3600 * 1000 * MS + 5 * MS + 2500


# ------------------------------------------------------------ statistics
def test_trans_stat_reads_as_devfreqs_file() -> None:
    power, _ = model("simple_ondemand", service_ns=8 * MS)
    read(power, 31 * MS)
    # 400 MHz for [0, 10) and [51, 60) ms, 100 MHz for [10, 51) and [60, 70) ms.
    power.advance(70 * MS)
    assert power.trans_stat() == (
        "     From  :   To\n"
        "           : 100000000 200000000 400000000   time(ms)\n"
        "* 100000000:         0         0         1        51\n"
        "  200000000:         0         0         0         0\n"
        "  400000000:         2         0         0        19\n"
        "Total transition : 3\n"
    )
    api(power, "PUT", ["power", "trans_stat"], b"0")
    assert power.total_trans == 0 and power.trans_table[2][0] == 0


def test_metrics_cover_power_and_the_wrapped_device() -> None:
    power, _ = model("pmqos_qd")
    read(power, 12 * MS, depth=1)
    names = {family.name for family in power.metrics()}
    assert {
        "blockemu_power_cur_freq_hz", "blockemu_power_transitions", "blockemu_power_time_in_state_seconds",
        "blockemu_power_energy_joules", "blockemu_power_watts", "blockemu_power_governor_queue_depth",
        "blockemu_fifo_requests",
    } <= names


# ------------------------------------------------------------ control API
@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("PUT", ["power", "governor"], b"turbo", 400),
        ("PUT", ["power", "upthreshold"], b"101", 400),
        ("PUT", ["power", "set_freq"], b"123", 400),
        ("PUT", ["power", "cur_freq"], b"100000000", 400),
        ("PUT", ["power", "trans_stat"], b"1", 400),
        ("PUT", ["power", "hold_ms"], b"\xff", 400),
        ("GET", ["power", "nonsense"], b"", 404),
        ("DELETE", ["power", "governor"], b"", 405),
        ("PUT", ["power"], b"", 405),
    ],
)
def test_bad_control_requests_are_refused_and_change_nothing(
    method: str, path: list[str], body: bytes, status: int
) -> None:
    power, _ = model("simple_ondemand")
    before = power.snapshot()
    with pytest.raises(ApiError) as info:
        api(power, method, path, body)
    assert info.value.status == status
    assert "\n" not in str(info.value)
    assert power.snapshot() == before


def test_other_paths_go_to_the_wrapped_device() -> None:
    power, device = model("simple_ondemand")
    assert api(power, "GET", ["fifo"], b"") == {"starts": 0}
    assert api(power, "GET", ["power", "available_frequencies"], b"") == "100000000 200000000 400000000\n"
    assert power.describe()["power"]["governor"] == "simple_ondemand"
    assert power.next is device  # device-specific attributes are the device's own, one layer down


# ------------------------------------------------------------- runtime, config
def test_runtime_wraps_the_device_and_tells_it_queue_depth() -> None:
    config = small_ufs_config(power={"enabled": True, "governor": "pmqos_qd"})
    runtime = DeviceRuntime(config)
    power = runtime.stack.find(PowerModel)
    assert isinstance(power, PowerModel)
    runtime.write(0, memoryview(b"x" * 4096))
    assert power.last_queue_depth == 1
    assert api(runtime, "GET", ["power", "governor"], b"") == "pmqos_qd\n"
    assert api(runtime, "GET", ["hid", "state"], b"") == "idle\n"
    assert runtime.describe()["power"]["cur_freq"] == 300 * MHZ
    runtime.close()


def test_power_disabled_leaves_the_device_alone() -> None:
    runtime = DeviceRuntime(small_ufs_config())
    assert runtime.stack.find(PowerModel) is None
    runtime.close()


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"opp_freq_hz": [2, 1]}, "opp_freq_hz = (2, 1): must be a non-empty array of ascending frequencies"),
        ({"opp_busy_mw": [1.0]}, "opp_busy_mw = (1.0,): must have 3 entries, one per opp_freq_hz"),
        ({"opp_idle_mw": [1000.0, 1.0, 1.0]}, "opp_idle_mw = (1000.0, 1.0, 1.0): must be <= opp_busy_mw"),
        ({"opp_freq_hz": "fast"}, "[power] opp_freq_hz: expected an array of int, got str"),
        ({"governor": "turbo"}, "governor = 'turbo': must be one of performance, powersave"),
        ({"boost_freq": 5}, "boost_freq = 5: must be 0 or one of opp_freq_hz"),
        ({"controller_bound_share": 1.5}, "controller_bound_share = 1.5: must be between 0 and 1"),
    ],
)
def test_bad_power_config_is_one_line(table: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        config_from_mapping({"power": table}, "test.toml")
    assert message in str(info.value) and "\n" not in str(info.value)


def test_power_overrides_round_trip() -> None:
    config = config_from_mapping({}, "x").with_overrides(
        ["power.enabled=true", "power.opp_freq_hz=[1000, 2000]", "power.opp_busy_mw=[2, 3]",
         "power.opp_idle_mw=[1, 1]"])
    assert config.power.opp_freq_hz == (1000, 2000)
    assert config.with_overrides(["power.governor=performance"]).power.opp_busy_mw == (2.0, 3.0)


def test_zns_composes_without_knowing() -> None:
    from blockemu.devices.zns.device import ZnsDevice
    from blockemu.store import MemoryStore

    raw = {"device": {"type": "zns", "name": "zns_test", "capacity_mib": 16},
           "zns": {"zone_size_mib": 2, "zone_capacity_mib": 1, "conventional_zones": 2, "max_open_zones": 2,
                   "max_active_zones": 3},
           "power": {"enabled": True, "governor": "powersave"}}
    config = config_from_mapping(raw, "<test>")
    runtime = DeviceRuntime(config, build(config, layers=("power", "faults"),
                                          model=ZnsDevice(config, MemoryStore(config.capacity_bytes))))
    power = runtime.stack.find(PowerModel)
    assert isinstance(power, PowerModel) and power.capabilities.zoned
    runtime.write(4 * MiB, memoryview(b"z" * 4096))  # at zone 2's write pointer
    buf = bytearray(4096)
    runtime.read(4 * MiB, memoryview(buf))
    assert bytes(buf) == b"z" * 4096
    zones = api(runtime, "GET", ["zones"], b"")
    assert zones[2]["wp"] == 4 * MiB + 4096 and zones[2]["condition"] == "implicitly_open"
    assert api(runtime, "GET", ["power", "cur_freq"], b"") == "75000000\n"
    runtime.close()


def test_background_work_runs_through_the_power_layer() -> None:
    runtime = DeviceRuntime(small_ufs_config(power={"enabled": True, "governor": "performance"}))
    for i in range(64):  # 8 files of 256 KiB written interleaved: fragmented
        for f in range(8):
            runtime.write(f * MiB + i * 4096, memoryview(b"q" * 4096))
    power = runtime.stack.find(PowerModel)
    assert isinstance(power, PowerModel)
    busy_before = power.busy_in_state_ns[-1]
    api(runtime, "PUT", ["hid", "analysis_trigger"], b"enable")
    runtime.run_background_until_idle()
    api(runtime, "PUT", ["hid", "defrag_trigger"], b"enable")
    runtime.run_background_until_idle()
    assert api(runtime, "GET", ["hid", "state"], b"") == "defrag_completed\n"
    power.advance(runtime.clock.now_ns())
    assert power.busy_in_state_ns[-1] > busy_before  # defragmentation is busy time too
    runtime.close()


def test_every_attribute_reads_as_one_text_line_or_devfreqs_table() -> None:
    from blockemu.layers.power import POWER_ATTRIBUTES

    power, _ = model("pmqos_qd")
    for name in POWER_ATTRIBUTES:
        text = api(power, "GET", ["power", name], b"")
        assert isinstance(text, str) and text.endswith("\n")
        assert text.count("\n") == (len(power.freqs) + 3 if name == "trans_stat" else 1), name


def test_min_and_max_freq_bound_the_governor_like_devfreqs_files() -> None:
    clock = VirtualClock()
    power = PowerModel(FifoDevice(1000), SECTION.__class__(**{**SECTION.__dict__, "governor": "performance"}),
                       clock.now_ns)
    clock.advance_to(1 * MS)
    api(power, "PUT", ["power", "max_freq"], b"200000000")  # performance now gets 200 MHz
    clock.advance_to(2 * MS)
    with pytest.raises(ApiError, match="min_freq must be <= max_freq"):
        api(power, "PUT", ["power", "min_freq"], b"400000000")
    with pytest.raises(ApiError, match="must be one of 100000000, 200000000, 400000000"):
        api(power, "PUT", ["power", "max_freq"], b"250000000")
    api(power, "PUT", ["power", "governor"], b"powersave")  # asks for the lowest; min_freq is still 100 MHz
    clock.advance_to(3 * MS)
    api(power, "PUT", ["power", "min_freq"], b"200000000")  # raises the floor back up
    clock.advance_to(4 * MS)
    api(power, "PUT", ["power", "max_freq"], b"400000000")  # powersave still wants the lowest allowed
    clock.advance_to(5 * MS)
    assert api(power, "GET", ["power", "min_freq"], b"") == "200000000\n"
    assert power.freq_log == [(0, 400 * MHZ), (1 * MS, 200 * MHZ), (2 * MS, 100 * MHZ), (3 * MS, 200 * MHZ)]
