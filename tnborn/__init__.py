"""tnborn: tensor-network Born machines on quimb and torch.

``P(x) = |psi(x)|^2 / Z`` where ``psi`` is a tensor network with one physical
index per variable. Start with :class:`MPSBornMachine` and :class:`SweepTrainer`;
the geometry-agnostic interface is :class:`tnborn.interface.BornMachine`.
"""

from ._version import __version__
from typing import TYPE_CHECKING

from .errors import (
    CheckpointError,
    ConfigError,
    DataError,
    DeviceError,
    NumericalError,
    PrecisionWarning,
    TnbornError,
)

# Everything else is imported on first access (PEP 562), so that light users
# such as the command line's argument parsing (``tnborn --help``) do not pay
# for importing torch and quimb. To export a new name, add it to ``_LAZY``
# (name -> submodule) and to ``__all__``.
_LAZY = {
    "resolve_device": "backend",
    "resolve_dtype": "backend",
    "set_num_threads": "backend",
    "compile_mps": "circuit",
    "checkpoint_info": "checkpoint",
    "load": "checkpoint",
    "save": "checkpoint",
    "bars_and_stripes": "data",
    "binarize": "data",
    "even_parity": "data",
    "get_dataset": "data",
    "load_binary": "data",
    "random_binary": "data",
    "MPSBornMachine": "geometries",
    "TreeBornMachine": "geometries",
    "PEPSBornMachine": "geometries",
    "NetworkBornMachine": "geometries",
    "from_quimb": "geometries",
    "BornMachine": "interface",
    "available_geometries": "registry",
    "get_geometry": "registry",
    "register_geometry": "registry",
    "Callback": "training",
    "EarlyStopping": "training",
    "PeriodicCheckpoint": "training",
    "ProgressBar": "training",
    "SweepSettings": "training",
    "SweepTrainer": "training",
    "GradientTrainer": "training",
    "GradientSettings": "training",
}
_SUBMODULES = frozenset({
    "backend", "checkpoint", "circuit", "contraction", "data", "distributed", "environments", "geometries",
    "interface", "io", "plotting", "registry", "training",
})


def __getattr__(name: str):
    """Import a public name (or a submodule) of tnborn on first access."""
    import importlib

    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    """Names of the package, including those not imported yet."""
    return sorted(set(globals()) | set(__all__) | _SUBMODULES)


if TYPE_CHECKING:  # pragma: no cover  (static analysers see ordinary imports)
    from .backend import resolve_device, resolve_dtype, set_num_threads
    from .checkpoint import checkpoint_info, load, save
    from .circuit import compile_mps
    from .data import bars_and_stripes, binarize, even_parity, get_dataset, load_binary, random_binary
    from .geometries import MPSBornMachine, NetworkBornMachine, PEPSBornMachine, TreeBornMachine, from_quimb
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
    from .training import GradientSettings, GradientTrainer

__all__ = [
    "__version__",
    "BornMachine",
    "MPSBornMachine",
    "TreeBornMachine",
    "PEPSBornMachine",
    "NetworkBornMachine",
    "from_quimb",
    "SweepTrainer",
    "SweepSettings",
    "GradientTrainer",
    "GradientSettings",
    "Callback",
    "ProgressBar",
    "EarlyStopping",
    "PeriodicCheckpoint",
    "save",
    "load",
    "checkpoint_info",
    "compile_mps",
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
