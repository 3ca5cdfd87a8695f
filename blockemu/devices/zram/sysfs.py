"""zram's sysfs attributes, with the kernel's names, formats and parsing.

The files of /sys/block/zramN/ that this model has (the kernel's
Documentation/admin-guide/blockdev/zram.rst): reads give the kernel's text (``mm_stat``, ``io_stat``,
``comp_algorithm`` with the selected one in brackets, ...); writes parse
what the kernel parses (``key=value`` arguments as next_arg() splits them,
memparse sizes) and refuse what it refuses, changing nothing.  The control
API serves them at /api/v1/zram/<attribute> (:data:`ZRAM_GROUP`).
"""

from __future__ import annotations

from typing import Any

from blockemu.api import Attribute, AttributeGroup, Route
from blockemu.devices.zram.codecs import CODEC_NAMES, PAGE, Codec, CodecError
from blockemu.devices.zram.core import HUGE, MAX_PRIORITIES, SAME, ZramCore

NS_PER_S = 1_000_000_000


class ZramValueError(ValueError):
    """A malformed or refused attribute write (the kernel's -EINVAL)."""


class ZramBusyError(ZramValueError):
    """A write the device's state refuses (the kernel's -EBUSY): disksize on an initialized device."""


def parse_kernel_args(text: str, allowed: tuple[str, ...], attribute: str) -> dict[str, str]:
    """``key=value key=value`` as the kernel's next_arg() splits it; every value non-empty."""
    args: dict[str, str] = {}
    for token in text.split():
        key, sep, value = token.partition("=")
        if not sep or not value:
            raise ZramValueError(f"{attribute}: expected key=value, got {token!r}; keys: {', '.join(allowed)}")
        if key not in allowed:
            raise ZramValueError(f"{attribute}: unknown key {key!r}; allowed: {', '.join(allowed)}")
        if key in args:
            raise ZramValueError(f"{attribute}: {key} given twice")
        args[key] = value
    return args


def parse_unsigned(value: str, what: str) -> int:
    if not (value.isascii() and value.isdigit()):  # "²".isdigit() is true, int("²") fails
        raise ZramValueError(f"{what} must be a non-negative decimal integer, got {value!r}")
    return int(value)


def memparse(text: str, what: str) -> int:
    """The kernel's memparse: a number with an optional K, M, G, T suffix."""
    value = text.strip()
    multiplier = 1
    if value and value[-1] in "kKmMgGtT":
        multiplier = 1024 ** ("kmgt".index(value[-1].lower()) + 1)
        value = value[:-1]
    try:
        number = int(value, 0)
    except ValueError:
        raise ZramValueError(f"{what} must be bytes with an optional K, M, G or T suffix, got {text.strip()!r}") \
            from None
    if number < 0:
        raise ZramValueError(f"{what} must be >= 0, got {text.strip()!r}")
    return number * multiplier


class ZramAttributes(ZramCore):
    """The attribute files of a zram device, and their control-API endpoint."""

    # ------------------------------------------------------- sysfs view
    def mm_stat_values(self) -> list[int]:
        # Staging is bounded (staging_pages + one batch), so this loop is short.
        staged_only = sum(1 for index in self.staging if index not in self.entries)
        same = self._pages_by_key.get("same", 0)
        huge = self._pages_by_key.get("huge", 0)
        compr = self._stored_bytes + PAGE * len(self.staging)
        return [
            (len(self.entries) + staged_only) * PAGE,  # orig_data_size
            compr,  # compr_data_size
            self.mem_used_pages * PAGE,  # mem_used_total
            self.limit_pages * PAGE,  # mem_limit
            self.stats.mem_used_max_pages * PAGE,  # mem_used_max
            same,  # same_pages
            self.pool.pages_compacted,  # pages_compacted
            huge,  # huge_pages
            self.stats.huge_pages_since,  # huge_pages_since
        ]

    def read_attribute(self, attribute: str) -> str:
        """The attribute's text, as its sysfs file reads; ZramValueError for an unknown or write-only one."""
        show = _lookup(attribute).show
        if show is None:
            raise ZramValueError(f"{attribute} is write-only, as in sysfs")
        return show(self)

    def _show_comp_algorithm(self) -> str:
        return self._available(self.algorithms[0])

    def _show_recomp_algorithm(self) -> str:
        return "".join(f"#{p}: {self._available(c)}" for p, c in enumerate(self.algorithms)
                       if p > 0 and c is not None)

    def _show_mm_stat(self) -> str:
        # mm_stat_show: "%8llu %8llu %8llu %8lu %8ld %8llu %8lu %8llu %8llu\n"
        return " ".join(f"{value:8d}" for value in self.mm_stat_values()) + "\n"

    def _show_io_stat(self) -> str:
        s = self.stats
        # io_stat_show: "%8llu %8llu 0 %8llu\n" (the 0 was invalid_io, retired)
        return f"{s.failed_reads:8d} {s.failed_writes:8d} 0 {s.notify_free:8d}\n"

    @staticmethod
    def _available(selected: Codec | None) -> str:
        # zcomp_available_show: every backend, the selected one in brackets,
        # each followed by a space, then a newline.
        names = [f"[{n}]" if selected is not None and n == selected.name else n for n in CODEC_NAMES]
        return " ".join(names) + " \n"

    def write_attribute(self, attribute: str, text: str) -> None:
        """Apply a sysfs-style write; a malformed one raises ZramValueError and changes nothing."""
        store = _lookup(attribute).store
        if store is None:
            raise ZramValueError(f"{attribute} is read-only, as in sysfs")
        store(self, text.strip())

    def _store_comp_algorithm(self, value: str) -> None:
        # The kernel refuses this once disksize is set (EBUSY); here pages keep
        # the codec they were written with, so switching on a live device is safe.
        if value not in CODEC_NAMES:
            raise ZramValueError(f"comp_algorithm: unknown algorithm {value!r}; allowed: {' '.join(CODEC_NAMES)}")
        codec = Codec(value)
        self.cost_model.add(codec)
        self.algorithms[0] = codec

    def _store_recomp_algorithm(self, value: str) -> None:
        args = parse_kernel_args(value, ("algo", "priority"), "recomp_algorithm")
        if "algo" not in args:
            raise ZramValueError("recomp_algorithm: algo= is required, e.g. 'algo=zstd priority=1'")
        priority = parse_unsigned(args.get("priority", "1"), "recomp_algorithm priority")
        if not 1 <= priority < MAX_PRIORITIES:
            raise ZramValueError(f"recomp_algorithm: priority must be 1..{MAX_PRIORITIES - 1}, got {priority}")
        if args["algo"] not in CODEC_NAMES:
            raise ZramValueError(f"recomp_algorithm: unknown algorithm {args['algo']!r}; "
                                 f"allowed: {' '.join(CODEC_NAMES)}")
        codec = Codec(args["algo"])
        self.cost_model.add(codec)
        self.algorithms[priority] = codec

    def _store_algorithm_params(self, value: str) -> None:
        args = parse_kernel_args(value, ("priority", "algo", "level", "dict"), "algorithm_params")
        if "dict" in args:
            raise ZramValueError("algorithm_params: dict= is not supported by this model")
        if "priority" in args:
            priority = parse_unsigned(args["priority"], "algorithm_params priority")
        elif "algo" in args:
            matches = [p for p, c in enumerate(self.algorithms) if c is not None and c.name == args["algo"]]
            if not matches:
                raise ZramValueError(f"algorithm_params: algorithm {args['algo']!r} is not configured")
            priority = matches[0]
        else:
            raise ZramValueError("algorithm_params: priority= or algo= is required")
        if not 0 <= priority < MAX_PRIORITIES or self.algorithms[priority] is None:
            raise ZramValueError(f"algorithm_params: no algorithm at priority {priority}")
        current = self.algorithms[priority]
        assert current is not None
        if "algo" in args and args["algo"] != current.name:
            raise ZramValueError(f"algorithm_params: priority {priority} is {current.name}, not {args['algo']}")
        if "level" not in args:
            raise ZramValueError("algorithm_params: level= is required (dict= is not supported)")
        try:
            level = int(args["level"])
            codec = Codec(current.name, level)
        except (ValueError, CodecError) as err:
            raise ZramValueError(f"algorithm_params: {err}") from None
        self.cost_model.add(codec)
        self.algorithms[priority] = codec

    def _require_init(self, attribute: str) -> None:
        if not self.disksize:
            raise ZramValueError(f"{attribute}: the device is not initialized (reset); write disksize first")

    def _store_reset(self, value: str) -> None:
        # reset_store(): kstrtou16, and 0 is refused.  The kernel also refuses a
        # device someone holds open (EBUSY); the frontend always holds this one,
        # so the model resets it as if it were closed.
        if not (value.isascii() and value.isdigit()) or not 0 < int(value) < 1 << 16:
            raise ZramValueError(f"reset: write 1 (a number 1..65535), got {value!r}")
        self._reset()

    def _store_disksize(self, value: str) -> None:
        size = memparse(value, "disksize")
        if not size:
            raise ZramValueError("disksize must be > 0")
        if self.disksize:
            raise ZramBusyError("disksize: cannot change disksize for an initialized device; write 1 to reset first")
        size = -(-size // PAGE) * PAGE  # PAGE_ALIGN
        if size > self.size_bytes:
            raise ZramValueError(f"disksize {size} exceeds the served capacity {self.size_bytes} bytes "
                                 "(device.capacity_mib sets what the frontend exports)")
        self.disksize = size

    def _store_idle(self, value: str) -> None:
        self._require_init("idle")
        if value == "all":
            cutoff = None
        else:
            cutoff = self._now - parse_unsigned(value, "idle (seconds, or 'all')") * NS_PER_S
        for entry in self.entries.values():
            if cutoff is None or entry.last_access_ns <= cutoff:
                entry.idle = True

    def _store_recompress(self, value: str) -> None:
        self._require_init("recompress")
        args = parse_kernel_args(value, ("type", "max_pages", "threshold", "algo", "priority"), "recompress")
        want_idle = want_huge = False
        if "type" in args:
            kinds = {"idle": (True, False), "huge": (False, True), "huge_idle": (True, True)}
            if args["type"] not in kinds:
                raise ZramValueError(f"recompress: type must be idle, huge or huge_idle, got {args['type']!r}")
            want_idle, want_huge = kinds[args["type"]]
        max_pages = parse_unsigned(args["max_pages"], "recompress max_pages") if "max_pages" in args else None
        threshold = parse_unsigned(args.get("threshold", "0"), "recompress threshold")
        if threshold >= self.pool.huge_class_size:
            raise ZramValueError(f"recompress: threshold must be below {self.pool.huge_class_size}, got {threshold}")
        first, end = 1, MAX_PRIORITIES
        if "priority" in args:
            first = parse_unsigned(args["priority"], "recompress priority") or 1
            end = first + 1
        if "algo" in args:
            matches = [p for p, c in enumerate(self.algorithms) if p > 0 and c is not None and c.name == args["algo"]]
            if not matches:
                raise ZramValueError(f"recompress: {args['algo']!r} is not a configured recomp_algorithm")
            first, end = matches[0], matches[0] + 1
        if not any(self.algorithms[p] is not None for p in range(first, min(end, MAX_PRIORITIES))):
            raise ZramValueError(f"recompress: no recomp_algorithm at priority {first}"
                                 f"{'' if end == first + 1 else ' or above'}; set one with recomp_algorithm")
        done = 0
        cost = 0
        # recompress_store() walks the slots in index order; max_pages counts
        # the pages it tried to recompress (zram_recompress's num_recomp_pages).
        for index in sorted(self.entries):
            entry = self.entries[index]
            if max_pages is not None and done >= max_pages:
                break
            if entry.kind == SAME or entry.incompressible:
                continue
            if want_idle and not entry.idle:
                continue
            if want_huge and entry.kind != HUGE:
                continue
            if threshold and entry.size < threshold:
                continue
            attempts = self.stats.recompress_attempts
            cost += self._recompress_page(index, entry, first, end, threshold)
            done += self.stats.recompress_attempts - attempts
        if cost:
            self._occupy_cpu(self._now, cost)

    def _store_mem_limit(self, value: str) -> None:
        limit = memparse(value, "mem_limit")
        self.limit_pages = -(-limit // PAGE)

    def _store_mem_used_max(self, value: str) -> None:
        if value != "0":
            raise ZramValueError(f"mem_used_max accepts only 0 (reset to current usage), got {value!r}")
        self.stats.mem_used_max_pages = self.mem_used_pages

    def _store_compact(self, value: str) -> None:
        self._require_init("compact")
        self.pool.compact()

    # ----------------------------------------------------------- control
    def snapshot(self) -> dict[str, Any]:
        values = self.mm_stat_values()
        names = ("orig_data_size", "compr_data_size", "mem_used_total", "mem_limit", "mem_used_max", "same_pages",
                 "pages_compacted", "huge_pages", "huge_pages_since")
        return {
            "comp_algorithm": self.algorithms[0].key if self.algorithms[0] else None,
            "recomp_algorithm": {str(p): c.key for p, c in enumerate(self.algorithms) if p > 0 and c is not None},
            "policy": self.policy.name,
            "mm_stat": dict(zip(names, values, strict=True)),
            "io_stat": {"failed_reads": self.stats.failed_reads, "failed_writes": self.stats.failed_writes,
                        "invalid_io": 0, "notify_free": self.stats.notify_free},
            "async_workers": self.async_workers,
            "staged_pages": len(self.staging),
            "huge_class_size": self.pool.huge_class_size,
            "cost_us": self.cost_model.as_text(),
        }

    def routes(self) -> list[Route]:
        return ZRAM_GROUP.routes(self)


# The files of /sys/block/zramN/ this model has: read as the kernel formats them, written as it parses them.
ZRAM_GROUP: AttributeGroup[ZramAttributes] = AttributeGroup(
    "zram", "zram",
    (
        Attribute("comp_algorithm", ZramAttributes._show_comp_algorithm, ZramAttributes._store_comp_algorithm),
        Attribute("recomp_algorithm", ZramAttributes._show_recomp_algorithm,
                  ZramAttributes._store_recomp_algorithm),
        Attribute("algorithm_params", store=ZramAttributes._store_algorithm_params),
        Attribute("idle", store=ZramAttributes._store_idle),
        Attribute("recompress", store=ZramAttributes._store_recompress),
        Attribute("mm_stat", ZramAttributes._show_mm_stat),
        Attribute("io_stat", ZramAttributes._show_io_stat),
        Attribute("mem_limit", store=ZramAttributes._store_mem_limit),
        Attribute("mem_used_max", store=ZramAttributes._store_mem_used_max),
        Attribute("compact", store=ZramAttributes._store_compact),
        Attribute("disksize", lambda z: f"{z.disksize}\n", ZramAttributes._store_disksize),
        Attribute("initstate", lambda z: f"{int(bool(z.disksize))}\n"),  # served initialized; 0 after reset
        Attribute("reset", store=ZramAttributes._store_reset),
    ),
    ZramAttributes.snapshot,
    errors={ZramBusyError: 409, ZramValueError: 400},
    mode_status=405,
)
ATTRIBUTES = ZRAM_GROUP.names


def _lookup(attribute: str) -> Attribute[ZramAttributes]:
    found = ZRAM_GROUP.find(attribute)
    if found is None:
        raise ZramValueError(f"unknown zram attribute {attribute!r}; allowed: {', '.join(ATTRIBUTES)}")
    return found
