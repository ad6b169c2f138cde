"""tnborn: tensor-network Born machines on quimb and torch.

``P(x) = |psi(x)|^2 / Z`` where ``psi`` is a tensor network with one physical
index per variable. Start with :class:`MPSBornMachine` and :class:`SweepTrainer`;
the geometry-agnostic interface is :class:`tnborn.interface.BornMachine`.
"""

from ._version import __version__
from .backend import resolve_device, resolve_dtype, set_num_threads
from .checkpoint import checkpoint_info, load, save
from .data import (
    bars_and_stripes,
    binarize,
    even_parity,
    get_dataset,
    load_binary,
    random_binary,
)
from .errors import (
    CheckpointError,
    ConfigError,
    DataError,
    DeviceError,
    NumericalError,
    PrecisionWarning,
    TnbornError,
)
from .geometries import MPSBornMachine
from .interface import BornMachine
from .registry import available_geometries, get_geometry, register_geometry
from .training import (
    Callback,
    EarlyStopping,
    PeriodicCheckpoint,
    ProgressBar,
    SweepSettings,
    SweepTrainer,
)

__all__ = [
    "__version__",
    "BornMachine",
    "MPSBornMachine",
    "SweepTrainer",
    "SweepSettings",
    "Callback",
    "ProgressBar",
    "EarlyStopping",
    "PeriodicCheckpoint",
    "save",
    "load",
    "checkpoint_info",
    "bars_and_stripes",
    "random_binary",
    "even_parity",
    "binarize",
    "load_binary",
    "get_dataset",
    "register_geometry",
    "get_geometry",
    "available_geometries",
    "resolve_device",
    "resolve_dtype",
    "set_num_threads",
    "TnbornError",
    "DataError",
    "ConfigError",
    "CheckpointError",
    "DeviceError",
    "NumericalError",
    "PrecisionWarning",
]
