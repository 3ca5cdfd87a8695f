"""The one place that composes a device: the model on its store, then its layers.

A request enters at the top and goes down (blockemu/layers/base.py says how
a layer passes on what it does not change)::

    faults        FaultLayer: injected errors and delays          (always, outermost)
    power         PowerModel: frequency, governor, energy         ([power] enabled)
    write_cache   PowerCutLayer: flush/FUA durability, power cuts (data in the store)
    checkpoint    CheckpointLayer: commits to a file store        (data in the model, file store)
    model         the device model on its store                   ([device] type)

``build(config, clock, layers=...)`` composes them in that order, each only
where it applies: what the model's capabilities say, what the configuration
enables.  ``layers`` names the layers wanted; replay and the experiments
pass ``()`` for the bare model.  On a file store the path is straight: open
the store bound to the settings that shape the saved state, build the model
on it, put the layer that commits it around the model, then load the last
commit into the model or commit a new store's initial state.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from blockemu.api import API_PREFIX
from blockemu.config import Config
from blockemu.devices import MODELS, Device
from blockemu.layers.base import Layer
from blockemu.layers.checkpoint import CheckpointLayer, load_saved_state, restore_device_state
from blockemu.layers.faults import FaultLayer
from blockemu.layers.power import POWER_OFF_HINT, PowerModel
from blockemu.layers.write_cache import JournaledStore, PowerCutLayer
from blockemu.store import FileStore, Store, open_store
from blockemu.store.file import check_store
from blockemu.store.null import NullStore

# Every layer, innermost first: the order they are composed in, whatever order ``layers`` names them in.
LAYERS = ("write_cache", "checkpoint", "power", "faults")
_STORE_LAYERS = ("write_cache", "checkpoint")
MIB = 1024 * 1024

T = TypeVar("T")


@dataclass(frozen=True)
class Stack:
    """A built device: requests enter at ``top``; ``model`` is at the bottom."""

    top: Device
    model: Device
    # Outermost first; empty for a bare model (then top is model).
    layers: tuple[Layer, ...]
    # Route prefixes a layer configured off would serve, and how to turn it on (the 404's message).
    absent: Mapping[str, str] = field(default_factory=dict)

    @property
    def parts(self) -> tuple[Device, ...]:
        """The layers, outermost first, then the model: where to look for an optional hook.

        A hook is a Protocol (blockemu/devices/base.py), which mypy does not
        take as a ``type[T]``: ask each part with isinstance, not :meth:`find`.
        """
        return (*self.layers, self.model)

    def find(self, kind: type[T]) -> T | None:
        """The outermost part (a layer, or the model) that is a ``kind``; None if there is none."""
        for part in self.parts:
            if isinstance(part, kind):
                return part
        return None

    def get(self, kind: type[T]) -> T:
        """The outermost part that is a ``kind``; LookupError if there is none."""
        part = self.find(kind)
        if part is None:
            raise LookupError(f"the {self.model.kind} stack has no {kind.__name__}")
        return part

    def close(self) -> None:
        self.top.close()


def persisted_geometry(config: Config) -> dict[str, Any]:
    """The settings a file store's directory is bound to (blockemu/devices/__init__.py lists them per model)."""
    keys = ("device.type", "device.capacity_mib", *MODELS[config.device.type].geometry_keys)
    geometry = {}
    for key in keys:
        section, _, name = key.partition(".")
        geometry[key] = getattr(getattr(config, section), name)
    return geometry


def build(config: Config, clock: Callable[[], int] | None = None, layers: Iterable[str] = LAYERS, *,
          model: Device | None = None, store: Store | None = None, start_ns: int = 0) -> Stack:
    """Compose ``config``'s device with the ``layers`` that apply to it.

    ``clock`` gives modeled now to layers that answer control requests
    between data requests (power); a function, because the runtime may
    switch clocks at run time.  ``model``: a model built elsewhere (tests,
    a prefilled copy in an experiment), which the store layers cannot wrap.
    ``store``: the store to build the model on instead of ``[store]``'s
    (a NullStore where only time and state are modeled).  ``start_ns``:
    the modeled time the stack starts at.
    """
    wanted = tuple(layers)
    unknown = [name for name in wanted if name not in LAYERS]
    if unknown:
        raise ValueError(f"unknown layer {unknown[0]!r}; layers: {', '.join(LAYERS)}")
    durable: FileStore | None = None
    journal: JournaledStore | None = None
    if model is None:
        if store is None:
            store = open_store(config.store.backend, config.capacity_bytes, config.store.path,
                               geometry=persisted_geometry(config), fsync=config.store.fsync)
        durable = store if isinstance(store, FileStore) else None
        # Journaled from the start where a write cache may sit on it; the
        # model says afterwards whether its data lives there at all.
        journal = JournaledStore(store) if "write_cache" in wanted else None
        try:
            model = MODELS[config.device.type].factory(config, journal if journal is not None else store)
        except BaseException:
            store.close()
            raise
    elif any(name in _STORE_LAYERS for name in wanted):
        raise ValueError("the write_cache and checkpoint layers wrap the store the model is built on here; "
                         "a model built elsewhere can only get power and faults")
    built: list[Layer] = []
    try:
        data_in_model = model.capabilities.data_in_model
        commits: PowerCutLayer | CheckpointLayer | None = None
        if journal is not None and not data_in_model:
            commits = PowerCutLayer(model, journal, config.write_cache.size_mib * MIB, durable)
        elif "checkpoint" in wanted and durable is not None and data_in_model:
            commits = CheckpointLayer(model, durable)
        if durable is not None:
            if commits is None:
                raise ValueError("a file store needs the write_cache or checkpoint layer, which commits it")
            # A restart finds the last commit; a new store commits its initial state.
            if not load_saved_state(durable, model):
                commits.commit_state()
        if commits is not None:
            built.append(commits)
        if "power" in wanted and config.power.enabled:
            built.append(PowerModel(built[-1] if built else model, config.power, clock, start_ns))
        if "faults" in wanted:
            # Outermost: it changes its routing at run time (blockemu/layers/base.py).
            built.append(FaultLayer(built[-1] if built else model))
    except BaseException:
        model.close()  # not through the layers: a failed start commits nothing
        raise
    absent = {f"{API_PREFIX}/power": POWER_OFF_HINT} if "power" in wanted and not config.power.enabled else {}
    return Stack(built[-1] if built else model, model, tuple(reversed(built)), absent)


def check_config_store(config: Config) -> None:
    """Refuse (StoreError) a ``[store] path`` this configuration cannot open; nothing for ``memory``.

    The saved state is loaded into a model without bytes, so that a state
    that does not fit is refused here too, before any server starts.
    """
    if config.store.backend != "file":
        return
    checkpoint = check_store(Path(config.store.path), config.capacity_bytes, persisted_geometry(config))
    if checkpoint is None:
        return
    stack = build(config, layers=(), store=NullStore(config.capacity_bytes))
    try:
        restore_device_state(stack.model, checkpoint.arrays, str(Path(config.store.path) / "state"))
    finally:
        stack.close()
