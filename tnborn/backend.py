"""Device, dtype, thread and random-number helpers shared by every module.

tnborn keeps its numbers in torch tensors (placed in quimb networks through
autoray). This module is the one place that turns user-facing spellings
(``"cpu"``, ``"cuda"``, ``"float32"``, ``"complex128"``) into torch objects
and checks that they can be honoured on this machine.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch

from .errors import ConfigError, DeviceError

__all__ = [
    "DTYPES",
    "resolve_dtype",
    "resolve_device",
    "dtype_name",
    "real_dtype",
    "is_complex",
    "to_numpy",
    "set_num_threads",
    "default_num_threads",
    "make_generator",
    "check_integer",
    "check_seed",
]

#: Spellings accepted for ``dtype=`` arguments.
DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "float64": torch.float64,
    "complex64": torch.complex64,
    "complex128": torch.complex128,
}
_ALIASES = {
    "f32": "float32",
    "single": "float32",
    "float": "float32",
    "f64": "float64",
    "double": "float64",
    "c64": "complex64",
    "c128": "complex128",
}


def resolve_dtype(dtype: str | torch.dtype | np.dtype | None) -> torch.dtype:
    """Return the torch dtype for a user spelling (default ``float64``).

    Parameters
    ----------
    dtype : str, torch.dtype, numpy dtype or None
        ``"float32"``, ``"float64"``, ``"complex64"``, ``"complex128"`` (or the
        matching torch / numpy dtype). ``None`` means ``float64``.

    Returns
    -------
    torch.dtype
        The resolved floating or complex dtype.

    Raises
    ------
    DeviceError
        If the dtype is not one of the supported ones.
    """
    if dtype is None:
        return torch.float64
    if isinstance(dtype, torch.dtype):
        if dtype in DTYPES.values():
            return dtype
        raise DeviceError(f"dtype must be one of {sorted(DTYPES)}, got {dtype}")
    if isinstance(dtype, np.dtype) or (isinstance(dtype, type) and issubclass(dtype, np.generic)):
        name = np.dtype(dtype).name
    else:
        name = str(dtype).lower().replace("torch.", "")
    name = _ALIASES.get(name, name)
    if name not in DTYPES:
        raise DeviceError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    return DTYPES[name]


def dtype_name(dtype: torch.dtype) -> str:
    """Return the short name (``"float64"`` ...) of a supported torch dtype.

    Parameters
    ----------
    dtype : torch.dtype
        A supported dtype.

    Returns
    -------
    str
        Its name without the ``torch.`` prefix.
    """
    return str(dtype).replace("torch.", "")


def is_complex(dtype: torch.dtype) -> bool:
    """Whether ``dtype`` is a complex dtype.

    Parameters
    ----------
    dtype : torch.dtype
        Any torch dtype.

    Returns
    -------
    bool
        True for complex64 and complex128.
    """
    return dtype.is_complex


def real_dtype(dtype: torch.dtype) -> torch.dtype:
    """Return the real dtype of matching precision (complex128 -> float64).

    Parameters
    ----------
    dtype : torch.dtype
        A supported dtype.

    Returns
    -------
    torch.dtype
        ``float32`` or ``float64``.
    """
    return {torch.complex64: torch.float32, torch.complex128: torch.float64}.get(dtype, dtype)


def resolve_device(device: str | torch.device | None) -> torch.device:
    """Return a torch device, checking that it exists on this machine.

    Parameters
    ----------
    device : str, torch.device or None
        ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"auto"`` (CUDA when present,
        else CPU) or ``None`` (CPU).

    Returns
    -------
    torch.device
        The device.

    Raises
    ------
    DeviceError
        If the spelling is unknown, or CUDA is asked for but not available.
    """
    if device is None:
        return torch.device("cpu")
    if isinstance(device, str) and device.lower() == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise DeviceError(f"device must be 'cpu', 'cuda', 'cuda:N' or 'auto', got {device!r}") from exc
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(
                f"device {str(dev)!r} was asked for but CUDA is not available on this machine "
                "(torch.cuda.is_available() is False); use device='cpu' or 'auto'"
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise DeviceError(
                f"device {device!r} does not exist: {torch.cuda.device_count()} CUDA device(s) visible"
            )
    elif dev.type != "cpu":
        raise DeviceError(f"device must be 'cpu', 'cuda', 'cuda:N' or 'auto', got {device!r}")
    return dev


def to_numpy(x: Any) -> np.ndarray:
    """Convert a torch tensor (any device) or array-like to a numpy array.

    Parameters
    ----------
    x : torch.Tensor or array_like
        The data.

    Returns
    -------
    numpy.ndarray
        A host copy (or view for CPU tensors).
    """
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().resolve_conj().numpy()
    return np.asarray(x)


def default_num_threads() -> int:
    """Return the thread count tnborn uses for torch on the CPU by default.

    The hot loops of a Born machine are many small matrix products; on a
    machine with few cores, or one shared with other work, several threads per
    tiny operation cost more in synchronisation than they gain, and when the
    other cores are busy OpenMP's waiting threads make every operation
    dramatically slower. The default is ``min(4, cores // 2)`` (at least 1):
    on the 2-core development machine, shared with other jobs, a max-bond-30
    MNIST half-sweep took 0.9 s with 1 thread and 13-60 s with 2, and log P
    and sampling at bond 100 were 5-25 times slower with 2 threads
    (``benchmarks/results``). Set the ``TNBORN_NUM_THREADS`` environment
    variable or call :func:`set_num_threads` to override, e.g. on an idle
    machine with large bond dimensions.

    Returns
    -------
    int
        The number of threads.
    """
    env = os.environ.get("TNBORN_NUM_THREADS")
    if env:
        try:
            return max(1, int(env))
        except ValueError:
            pass
    return max(1, min(4, (os.cpu_count() or 1) // 2))


def set_num_threads(n: int | None = None) -> int:
    """Set torch's intra-op thread count (``None``: :func:`default_num_threads`).

    Parameters
    ----------
    n : int, optional
        Number of threads.

    Returns
    -------
    int
        The thread count now in force.
    """
    n = default_num_threads() if n is None else int(n)
    if n < 1:
        raise DeviceError(f"number of threads must be >= 1, got {n}")
    torch.set_num_threads(n)
    return n


def make_generator(seed: int | None, device: torch.device | str = "cpu") -> torch.Generator:
    """Return a seeded torch generator (random seed if ``seed`` is None).

    Parameters
    ----------
    seed : int or None
        The seed.
    device : torch.device or str
        Device of the generator.

    Returns
    -------
    torch.Generator
        The generator.
    """
    seed = check_seed(seed)
    gen = torch.Generator(device=device)
    if seed is None:
        gen.seed()
    else:
        gen.manual_seed(seed)
    return gen


def check_integer(value: Any, name: str, minimum: int | None = None) -> int:
    """Return ``value`` as a Python int, refusing bools, floats, strings and ``None``.

    Parameters
    ----------
    value : Any
        The candidate (a Python or NumPy integer).
    name : str
        Name used in the error message.
    minimum : int, optional
        Smallest allowed value.

    Returns
    -------
    int
        The value.

    Raises
    ------
    ConfigError
        If ``value`` is not an integer or is below ``minimum``.
    """
    bound = f" >= {minimum}" if minimum is not None else ""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise ConfigError(f"{name} must be an integer{bound}, got {value!r} ({type(value).__name__})")
    if minimum is not None and int(value) < minimum:
        raise ConfigError(f"{name} must be an integer{bound}, got {int(value)}")
    return int(value)


def check_seed(seed: Any, name: str = "seed") -> int | None:
    """Return a seed as a non-negative Python int (or ``None``), refusing anything else.

    Parameters
    ----------
    seed : int or None
        The seed.
    name : str
        Name used in the error message.

    Returns
    -------
    int or None
        The seed.

    Raises
    ------
    ConfigError
        If ``seed`` is not ``None`` or an integer in ``[0, 2**64)``.
    """
    if seed is None:
        return None
    seed = check_integer(seed, name, 0)
    if seed >= 2**64:
        raise ConfigError(f"{name} must be < 2**64, got {seed}")
    return seed
