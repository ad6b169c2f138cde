"""Shared helpers of the reproduction scripts in ``examples/`` (not part of the library).

The scripts reproduce Han et al., "Unsupervised Generative Modeling Using
Matrix Product States", PRX 8, 031012 (2018). Everything here is plumbing:
command-line options common to all scripts, where the data lives, where the
outputs go, JSON written atomically, a description of the machine, a
progress bar spanning several ``fit`` calls, markdown tables, and two pieces
of the authors' code that the library does not offer:

* :func:`uniform_mps`: their initialisation (uniform entries in ``[0, 1)``);

Data folder resolution order: ``--data-dir``, the environment variable
``TNBORN_SHARED_DATA``, then ``../shared/data`` relative to the repository.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import json
import math
import os
import platform
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "REPO_ROOT",
    "DATA_ENV",
    "add_common_arguments",
    "mode_of",
    "Stopwatch",
    "resolve_data_dir",
    "load_set",
    "prepare_output",
    "write_json",
    "write_text",
    "to_jsonable",
    "machine_info",
    "setup_torch",
    "markdown_table",
    "per_loop",
    "pass_fail",
    "BondProgress",
    "uniform_mps",
    "MissingDataError",
]

#: The repository root (the folder holding ``tnborn/`` and ``examples/``).
REPO_ROOT: Path = Path(__file__).resolve().parents[1]

#: Environment variable naming the shared data folder.
DATA_ENV: str = "TNBORN_SHARED_DATA"


class MissingDataError(FileNotFoundError):
    """A data file the script needs is not in the data folder."""


# --------------------------------------------------------------------------- options
def add_common_arguments(parser: argparse.ArgumentParser, script: str) -> argparse.ArgumentParser:
    """Add the options every reproduction script understands.

    Parameters
    ----------
    parser : argparse.ArgumentParser
        The script's parser.
    script : str
        Script name; the default output folder is ``runs/<script>`` in the
        current directory.

    Returns
    -------
    argparse.ArgumentParser
        ``parser``, for chaining.
    """
    g = parser.add_argument_group("common options")
    g.add_argument("--data-dir", type=Path, default=None,
                   help=f"folder with the data files (default: ${DATA_ENV}, else ../shared/data "
                        "next to the repository)")
    g.add_argument("--out", type=Path, default=Path("runs") / script,
                   help="output folder (created; default: %(default)s)")
    g.add_argument("--quick", action="store_true",
                   help="small settings that finish in a few minutes (CI-sized check)")
    g.add_argument("--smoke", action="store_true",
                   help="tiny settings that finish in seconds (used by the test suite); implies --quick")
    g.add_argument("--device", default="cpu", help="torch device: cpu, cuda, cuda:1, auto (default: cpu)")
    g.add_argument("--dtype", default="float64",
                   help="float64 (default), float32, complex128, complex64")
    g.add_argument("--seed", type=int, default=0, help="seed of initialisation, batches and sampling")
    g.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (default 1: the many small products of a sweep gain little "
                        "from more, and lose a lot on a busy machine; try 2-4 on a dedicated one)")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def mode_of(args: argparse.Namespace) -> str:
    """``"smoke"``, ``"quick"`` or ``"full"`` from the parsed options."""
    return "smoke" if args.smoke else ("quick" if args.quick else "full")


def setup_torch(args: argparse.Namespace) -> dict[str, Any]:
    """Set torch's thread count and resolve ``--device``/``--dtype``.

    Parameters
    ----------
    args : argparse.Namespace
        Parsed options of :func:`add_common_arguments`.

    Returns
    -------
    dict
        ``device`` (torch.device), ``dtype`` (torch.dtype) and ``threads`` (int).
    """
    import tnborn

    threads = tnborn.set_num_threads(args.threads)
    return {
        "device": tnborn.resolve_device(args.device),
        "dtype": tnborn.resolve_dtype(args.dtype),
        "threads": threads,
    }


# --------------------------------------------------------------------------- data
def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """Find the data folder.

    Parameters
    ----------
    data_dir : str or os.PathLike, optional
        An explicit folder (``--data-dir``); it must exist.

    Returns
    -------
    pathlib.Path
        The folder: ``data_dir``, else ``$TNBORN_SHARED_DATA``, else
        ``<repository>/../shared/data``.

    Raises
    ------
    MissingDataError
        If the chosen folder does not exist.
    """
    if data_dir is not None:
        path, how = Path(data_dir), "--data-dir"
    elif os.environ.get(DATA_ENV):
        path, how = Path(os.environ[DATA_ENV]), f"${DATA_ENV}"
    else:
        path, how = REPO_ROOT.parent / "shared" / "data", "the default location"
    if not path.is_dir():
        raise MissingDataError(
            f"data folder {path} (from {how}) does not exist; pass --data-dir or set {DATA_ENV} "
            "to the folder holding mnist1k_train_thr50.npy and the other data files"
        )
    return path


def load_set(data_dir: Path, name: str, key: str | None = None, limit: int | None = None) -> np.ndarray:
    """Load one binary data set of 784-pixel images.

    Parameters
    ----------
    data_dir : pathlib.Path
        The data folder.
    name : str
        File name inside it, e.g. ``"mnist1k_train_thr50.npy"``.
    key : str, optional
        Array inside an ``.npz`` archive.
    limit : int, optional
        Keep only the first ``limit`` rows.

    Returns
    -------
    numpy.ndarray
        ``(n, 784)`` int64 array of 0/1.

    Raises
    ------
    MissingDataError
        If the file is absent.
    """
    import tnborn

    path = data_dir / name
    if not path.is_file():
        raise MissingDataError(f"data file {path} not found (see /shared/data/README.md for the files)")
    return tnborn.load_binary(path, key=key, n_vars=784, limit=limit)


# --------------------------------------------------------------------------- outputs
def prepare_output(path: str | os.PathLike) -> Path:
    """Create the output folder and return it as an absolute path.

    Parameters
    ----------
    path : str or os.PathLike
        The folder.

    Returns
    -------
    pathlib.Path
        The folder (absolute).
    """
    out = Path(path).expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    return out


def to_jsonable(obj: Any) -> Any:
    """Convert numpy/torch scalars and arrays, paths and tuples to JSON types.

    Non-finite floats become ``None`` (JSON has no NaN/inf).

    Parameters
    ----------
    obj : object
        Nested dicts, lists, numbers, arrays ...

    Returns
    -------
    object
        A structure ``json.dumps`` accepts with ``allow_nan=False``.
    """
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        v = float(obj)
        return v if math.isfinite(v) else None
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    mod = type(obj).__module__
    if mod.startswith("torch"):
        import torch

        if isinstance(obj, torch.Tensor):
            return to_jsonable(obj.detach().cpu().numpy())
        return str(obj)  # torch.device, torch.dtype
    return obj


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented JSON, atomically (:func:`tnborn.io.atomic_write_text`).

    Parameters
    ----------
    path : str or os.PathLike
        Destination file.
    obj : object
        Data; converted with :func:`to_jsonable`.

    Returns
    -------
    pathlib.Path
        The path written.
    """
    from tnborn.io import atomic_write_text

    text = json.dumps(to_jsonable(obj), indent=2, allow_nan=False) + "\n"
    return atomic_write_text(path, text)


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` atomically (:func:`tnborn.io.atomic_write_text`).

    Parameters
    ----------
    path : str or os.PathLike
        Destination file.
    text : str
        Content.

    Returns
    -------
    pathlib.Path
        The path written.
    """
    from tnborn.io import atomic_write_text

    return atomic_write_text(path, text)


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, timeout=10, check=False)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def machine_info(device: Any = None, dtype: Any = None, threads: int | None = None) -> dict[str, Any]:
    """Describe the software and machine a result came from.

    Parameters
    ----------
    device, dtype : object, optional
        The torch device and dtype used.
    threads : int, optional
        Torch CPU threads used.

    Returns
    -------
    dict
        Versions, platform, CPU count, device name, git commit, UTC time.
    """
    import quimb
    import torch

    import tnborn

    info: dict[str, Any] = {
        "tnborn": tnborn.__version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "quimb": quimb.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": threads if threads is not None else torch.get_num_threads(),
        "device": str(device) if device is not None else "cpu",
        "dtype": str(dtype).replace("torch.", "") if dtype is not None else "float64",
        "git_commit": _git_commit(),
        "utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.argv[0]).name] + sys.argv[1:]),
    }
    if device is not None and str(device).startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return info


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub-flavoured markdown table (floats with 2 decimals, ``None`` as ``-``).

    Parameters
    ----------
    headers : sequence of str
        Column titles.
    rows : sequence of sequence
        Cell values.

    Returns
    -------
    str
        The table, ending in a newline.
    """
    def cell(v: Any) -> str:
        if v is None:
            return "-"
        if isinstance(v, (float, np.floating)):
            v = float(v)
            if not math.isfinite(v):
                return "-"
            return f"{v:.2f}" if v == 0 or 0.01 <= abs(v) < 1e6 else f"{v:.3g}"
        return str(v)

    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def per_loop(history: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Condense a trainer history to one row per completed loop.

    Parameters
    ----------
    history : sequence of dict
        ``SweepTrainer.fit``'s records (one per half-sweep).

    Returns
    -------
    list of dict
        ``loop``, ``train_nll``, ``test_nll``, ``max_bond`` (from the loop's
        last half-sweep), ``seconds`` (summed over the loop's half-sweeps)
        and ``lr``/``cutoff`` in force.
    """
    rows: list[dict[str, Any]] = []
    seconds = 0.0
    for rec in history:
        seconds += float(rec.get("seconds") or 0.0)
        loop = float(rec.get("loop", 0.0))
        if abs(loop - round(loop)) < 1e-9:
            settings = rec.get("settings") or {}
            rows.append({
                "loop": int(round(loop)),
                "train_nll": rec.get("train_nll"),
                "test_nll": rec.get("test_nll"),
                "max_bond": rec.get("max_bond"),
                "seconds": seconds,
                "lr": settings.get("lr"),
                "cutoff": settings.get("cutoff"),
            })
            seconds = 0.0
    return rows


def pass_fail(value: float | None, bound: float) -> str:
    """``"PASS"`` if ``value <= bound`` (and is a number), else ``"FAIL"``.

    Parameters
    ----------
    value : float or None
        Measured value.
    bound : float
        Largest acceptable value.

    Returns
    -------
    str
        ``"PASS"`` or ``"FAIL"``.
    """
    return "PASS" if value is not None and math.isfinite(value) and value <= bound else "FAIL"


# --------------------------------------------------------------------------- progress
class BondProgress:
    """A tqdm bar over bond updates that spans several ``fit`` calls.

    Pass it in ``callbacks=[...]`` with ``progress=False`` so that the trainer
    adds no bar of its own; call :meth:`close` at the end.

    Parameters
    ----------
    total : int
        Planned bond updates (``loops * 2 * (N - 2)`` for an MPS).
    desc : str
        Label of the bar.
    enabled : bool
        ``False``: do nothing (``--no-progress``).
    """

    def __init__(self, total: int, desc: str, enabled: bool = True):
        self._bar = None
        if enabled:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=int(total), desc=desc, unit="bond", dynamic_ncols=True, leave=True)
        self._post: dict[str, str] = {}

    def on_fit_start(self, trainer: Any, total_steps: int) -> None:
        """Nothing to do (the bar was sized in the constructor)."""

    def on_step_end(self, trainer: Any, info: dict[str, Any]) -> None:
        """Advance by one bond update."""
        if self._bar is not None:
            self._bar.update(1)

    def on_half_sweep_end(self, trainer: Any, record: dict[str, Any]) -> None:
        """Show loop, training NLL and max bond."""
        if self._bar is None:
            return
        self._post = {"loop": f"{record.get('loop', 0):.1f}", "nll": f"{record.get('train_nll', math.nan):.3f}",
                      "maxD": str(record.get("max_bond"))}
        if record.get("test_nll") is not None:
            self._post["test"] = f"{record['test_nll']:.3f}"
        self._bar.set_postfix(self._post)

    def on_fit_end(self, trainer: Any) -> None:
        """Keep the bar open: a later ``fit`` continues it."""

    def set_description(self, desc: str) -> None:
        """Change the label.

        Parameters
        ----------
        desc : str
            New label.
        """
        if self._bar is not None:
            self._bar.set_description(desc)

    def close(self) -> None:
        """Close the bar."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None


# --------------------------------------------------------------------------- authors' initialisation
def uniform_mps(num_variables: int, bond_dim: int = 2, seed: int = 0, dtype: Any = None, device: Any = None) -> Any:
    """An MPS Born machine initialised as in the authors' ``MPScumulant.py``.

    Every entry is drawn uniformly from ``[0, 1)`` (``numpy.random.rand`` in
    their code, so every amplitude starts positive), all bonds at ``bond_dim``
    (capped at their exact maximum), then the chain is left-canonicalised by
    QR with the carried factor normalised at every site, so that nothing
    overflows and ``Z = 1``. :meth:`tnborn.MPSBornMachine.random` draws normal
    entries instead.

    Parameters
    ----------
    num_variables : int
        Number of sites.
    bond_dim : int
        Bond dimension.
    seed : int
        Seed of the CPU generator.
    dtype, device : optional
        As for :meth:`tnborn.MPSBornMachine.random` (real dtypes only).

    Returns
    -------
    tnborn.MPSBornMachine
        The model, centre on the last site.
    """
    import torch

    import tnborn

    n, d = int(num_variables), 2
    dt, dev = tnborn.resolve_dtype(dtype), tnborn.resolve_device(device)
    if dt.is_complex:
        raise tnborn.ConfigError("uniform_mps makes real models; use float64 or float32")
    gen = torch.Generator().manual_seed(int(seed))
    dims = [1] + [min(bond_dim, d ** min(k + 1, n - k - 1, 60)) for k in range(n - 1)] + [1]
    arrays, carry = [], None
    for k in range(n):
        a = torch.rand((dims[k], d, dims[k + 1]), generator=gen, dtype=torch.float64)
        if carry is not None:
            a = torch.tensordot(carry, a, dims=([1], [0]))
        if k == n - 1:
            arrays.append(a / torch.linalg.vector_norm(a))
            break
        q, r = torch.linalg.qr(a.reshape(-1, a.shape[2]))
        arrays.append(q.reshape(a.shape[0], d, q.shape[1]))
        carry = r / torch.linalg.vector_norm(r)
    return tnborn.MPSBornMachine([a.to(dtype=dt, device=dev) for a in arrays], center=n - 1)


class Stopwatch:
    """Wall-clock seconds since construction (``time.perf_counter``); call it to read."""

    def __init__(self) -> None:
        self.start = time.perf_counter()

    def __call__(self) -> float:
        """Seconds elapsed."""
        return time.perf_counter() - self.start
