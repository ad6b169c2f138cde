"""``tnborn train``: train a Born machine and write checkpoint, plots and history.

Imported by :mod:`tnborn.cli` only when the command runs (it imports torch).
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..checkpoint import save
from ..errors import CheckpointError, ConfigError
from ..training import PeriodicCheckpoint
from ._common import (
    Reporter,
    RunFolder,
    checkpoint_extra,
    held_out_spec,
    load_data_source,
    load_held_out,
    reference_line,
    stored_image_shape,
)
from ._settings import RUN_FIELDS, only_for, trainer_keys

__all__ = ["train_command", "SETTING_KEYS", "GRADIENT_SETTING_KEYS", "default_out_dir"]

#: Command-line option -> field of :class:`tnborn.SweepSettings` (generated from the dataclass).
SETTING_KEYS = trainer_keys("sweep")
#: Command-line option -> field of :class:`tnborn.GradientSettings` (generated from the dataclass).
GRADIENT_SETTING_KEYS = trainer_keys("gradient")
#: Options that only one trainer reads (an explicit one with the other trainer is an error).
_ONLY_FOR = only_for()
_TRAINER_CLASSES = {"sweep": "SweepTrainer", "gradient": "GradientTrainer"}
_DATA_KEYS = ("data", "key", "threshold", "dataset", "rows", "cols", "dataset_size", "data_seed")
NUM_SAMPLES_PLOTTED = 64


def default_out_dir(root: str | Path = "runs") -> Path:
    """A new folder name ``runs/tnborn-YYYYmmdd-HHMMSS`` (suffixed if it exists).

    Parameters
    ----------
    root : str or Path
        Parent folder.

    Returns
    -------
    pathlib.Path
        A path that does not exist yet.
    """
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    path = Path(root) / f"tnborn-{stamp}"
    k = 1
    while path.exists():
        k += 1
        path = Path(root) / f"tnborn-{stamp}-{k}"
    return path


class _PeriodicCheckpointWithMeta(PeriodicCheckpoint):
    """:class:`~tnborn.PeriodicCheckpoint` whose files also hold the command's metadata."""

    def __init__(self, path: Path, every: int, extra: dict[str, Any]):
        super().__init__(path, every=every)
        self.extra = extra

    def on_half_sweep_end(self, trainer: Any, record: dict[str, Any]) -> None:
        super().on_half_sweep_end(_SaverWithMeta(trainer, self.extra), record)

    def on_fit_end(self, trainer: Any) -> None:
        super().on_fit_end(_SaverWithMeta(trainer, self.extra))


class _SaverWithMeta:
    """Stands in for the trainer in :class:`PeriodicCheckpoint`: saves with extra metadata."""

    def __init__(self, trainer: Any, extra: dict[str, Any]):
        self.trainer, self.extra = trainer, extra

    def save_checkpoint(self, path: Path) -> Path:
        comm = self.trainer.communicator
        if comm.is_main:  # data-parallel: rank 0 writes, the others wait
            path = save(path, self.trainer.model, trainer=self.trainer, extra=self.extra)
        comm.barrier()
        return path


def _data_options(options: Mapping[str, Any], explicit: set[str], stored: Mapping[str, Any]) -> dict[str, Any]:
    """Data options: explicit ones, else (when resuming) those stored in the checkpoint."""
    if stored and not any(k in explicit for k in _DATA_KEYS):
        return {k: stored.get(k) for k in _DATA_KEYS}
    return {k: options.get(k) for k in _DATA_KEYS}


def _flags(keys: Any) -> str:
    return ", ".join("--" + k.replace("_", "-") for k in keys)


def _trainer_kind(options: Mapping[str, Any], explicit: set[str], geometry: Any,
                  stored_class: str | None) -> str:
    """``"sweep"`` or ``"gradient"``: ``--trainer``, else the checkpoint's trainer, else by shape.

    ``geometry`` is the model when resuming (its own network says whether it
    is a tree), else the geometry class (whether every network it builds is one).
    """
    kind = options["trainer"]
    if kind == "auto":
        if stored_class is not None:
            kind = {v: k for k, v in _TRAINER_CLASSES.items()}[stored_class]
        else:
            kind = "sweep" if geometry.is_tree else "gradient"
    if kind == "sweep" and not geometry.is_tree:
        import tnborn

        trees = [name for name in tnborn.available_geometries() if tnborn.get_geometry(name).is_tree]
        raise ConfigError(f"--trainer sweep needs a tree-shaped network (geometries that build trees: "
                          f"{', '.join(trees)}); this {geometry.geometry!r} network has loops: "
                          "use --trainer gradient (or auto)")
    if stored_class is not None and stored_class != _TRAINER_CLASSES[kind]:
        raise ConfigError(f"--trainer {kind} contradicts the checkpoint {options['resume']}, written by "
                          f"a {stored_class} (--resume continues that trainer; use --trainer auto)")
    other = "gradient" if kind == "sweep" else "sweep"
    unused = [k for k in _ONLY_FOR[other] if k in explicit]
    if unused:
        raise ConfigError(f"{_flags(unused)}: only the {other} trainer reads "
                          f"{'this option' if len(unused) == 1 else 'these options'}, "
                          f"but this run uses the {kind} trainer")
    return kind


def _build(options: Mapping[str, Any], explicit: set[str], num_variables: int, say: Reporter,
           communicator: Any = None):
    """Create (or load, with ``resume``) the model and its trainer; returns (model, trainer, overrides)."""
    import tnborn
    from tnborn.checkpoint import load_trainer_state

    progress = False if options["quiet"] else None
    stored = None
    if options["resume"] is None:
        cls = tnborn.get_geometry(options["geometry"])
        kind = _trainer_kind(options, explicit, cls, None)
        model = cls.random(num_variables, bond_dim=options["bond_dim"], seed=options["seed"],
                           dtype=options["dtype"], device=options["device"])
    else:
        path = options["resume"]
        model = tnborn.load(path, device=options["device"],
                            dtype=options["dtype"] if "dtype" in explicit else None)
        if "geometry" in explicit and options["geometry"] != model.geometry:
            raise ConfigError(f"--geometry {options['geometry']} contradicts the checkpoint's "
                              f"geometry {model.geometry!r} (--resume continues that model)")
        if model.num_variables != num_variables:
            raise ConfigError(f"the checkpoint {path} has {model.num_variables} variables but the "
                              f"training data have {num_variables}")
        stored = load_trainer_state(path)
        if stored is not None and stored.get("class") not in _TRAINER_CLASSES.values():
            raise CheckpointError(f"{path} was written by a {stored.get('class')}; "
                                  "tnborn train resumes SweepTrainer and GradientTrainer runs only")
        kind = _trainer_kind(options, explicit, model, None if stored is None else stored["class"])
        if stored is None:
            say(f"note: {path} holds no trainer state; training continues with a fresh trainer")
    keys = SETTING_KEYS if kind == "sweep" else GRADIENT_SETTING_KEYS
    trainer_cls = tnborn.SweepTrainer if kind == "sweep" else tnborn.GradientTrainer
    if stored is None:
        # a setting not given keeps the trainer's own default
        settings = {field: options[key] for key, field in keys.items() if key in explicit or key in RUN_FIELDS}
        return model, trainer_cls(model, progress=progress, communicator=communicator, **settings), {}
    trainer = trainer_cls(model, progress=progress, communicator=communicator)
    trainer.load_state_dict(stored["state"])
    # settings given now (flag or config file) override the stored ones
    overrides = {keys[k]: options[k] for k in keys if k in explicit}
    return model, trainer, overrides


def train_command(options: Mapping[str, Any], explicit: set[str]) -> int:
    """Run ``tnborn train`` with merged options.

    Under ``torchrun`` (or ``--nproc N``, see :func:`tnborn.distributed.spawn`)
    the variables ``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` make every process join
    one process group (gloo on CPU, NCCL on CUDA with device ``LOCAL_RANK``)
    and train data-parallel; only rank 0 prints and writes files.

    Parameters
    ----------
    options : mapping
        Every key of :data:`tnborn.cli.TRAIN_OPTIONS`.
    explicit : set of str
        Keys given by the user (command line or config file).

    Returns
    -------
    int
        Exit status (0).
    """
    from tnborn.distributed import init_from_env

    comm, device = init_from_env(options["device"])
    try:
        if comm.world_size > 1:
            options = {**options, "device": str(device)}
        return _train(options, explicit, comm)
    finally:
        comm.close()


def _train(options: Mapping[str, Any], explicit: set[str], comm: Any) -> int:
    """The body of :func:`train_command` for one process of ``comm``."""
    import numpy as np

    import tnborn
    from tnborn import plotting
    from tnborn.io import atomic_write_text

    say = Reporter(options["quiet"] or not comm.is_main)
    tnborn.set_num_threads(options["threads"])

    extra: dict[str, Any] = {}
    if options["resume"] is not None:
        extra = checkpoint_extra(options["resume"])
    stored_spec = extra.get("data") if isinstance(extra.get("data"), dict) else {}
    data_opts = _data_options(options, explicit, stored_spec)
    train = load_data_source(data_opts, seed=options["seed"])
    x = train.x
    num_variables = x.shape[1]
    if train.image_shape is None and options["resume"] is not None:
        train.image_shape = stored_image_shape(extra, num_variables)
    test = None
    if options["test_data"] is not None:
        test = tnborn.load_binary(options["test_data"], key=options["test_key"],
                                  threshold=options["threshold"], n_vars=num_variables)
    elif options["test_key"] is not None:
        raise ConfigError("--test-key needs --test-data")
    elif isinstance(extra.get("test_data"), dict):  # resuming: the held-out data of the run
        test = load_held_out(extra["test_data"], num_variables)
    test_spec = None
    if test is not None:
        test_spec = (held_out_spec(options["test_data"], options["test_key"], options["threshold"], test)
                     if options["test_data"] is not None else extra["test_data"])

    out = Path(options["out"]) if options["out"] is not None else default_out_dir()
    callbacks: list = []
    early = options["early_stop"]
    model, trainer, overrides = _build(options, explicit, num_variables, say, communicator=comm)
    sweep = isinstance(trainer, tnborn.SweepTrainer)
    # records per loop (half-sweeps) or per epoch (one), and how many loops or epochs to train
    per_loop = len(model.sweep_schedule()) if sweep else 1
    amount, unit = (options["loops"], "loop") if sweep else (options["epochs"], "epoch")
    if early is not None:
        callbacks.append(tnborn.EarlyStopping(min_delta=early, patience=1, every=per_loop))
    label, reference = reference_line(x)
    meta = {
        "command": "tnborn train",
        "data": train.spec,
        "image_shape": list(train.image_shape) if train.image_shape is not None else None,
        "reference_nll": reference,
        "test_data": test_spec,
    }
    if options["checkpoint_every"] is not None:
        callbacks.append(_PeriodicCheckpointWithMeta(out / "model.tnb", options["checkpoint_every"] * per_loop, meta))
    trainer.callbacks[:0] = callbacks  # before the progress bar

    done = len(trainer.history)
    say(f"tnborn {tnborn.__version__}: training a Born machine ({model.geometry}) on {train.description}: "
        f"{x.shape[0]} samples x {num_variables} variables, {type(trainer).__name__}, {amount} {unit}(s)"
        + (f", resuming after {done} {'half-sweeps' if sweep else 'epochs'}"
           if options["resume"] is not None else "")
        + (f", data-parallel on {comm.world_size} processes" if comm.world_size > 1 else ""))
    say(f"output folder: {out}")
    # every setting is checked against the data before the folder is created
    from dataclasses import replace as _replace
    _replace(trainer.settings, **overrides).validate(x.shape[0])
    if not comm.is_main:
        return _fit_and_write(locals())
    with RunFolder(out, overwrite=options.get("overwrite", False), resume=options["resume"] is not None):
        return _fit_and_write(locals())


def _fit_and_write(v: dict[str, Any]) -> int:
    """Train and write the outputs (the second half of :func:`_train`)."""
    import numpy as np

    import tnborn
    from tnborn import plotting
    from tnborn.io import atomic_write_text

    (trainer, sweep, x, amount, test, overrides, comm, done, model, out, meta, options, label,
     reference, train, per_loop, unit, say, early) = (v[k] for k in (
        "trainer", "sweep", "x", "amount", "test", "overrides", "comm", "done", "model", "out", "meta",
        "options", "label", "reference", "train", "per_loop", "unit", "say", "early"))
    t0 = time.perf_counter()
    if sweep:
        history = trainer.fit(x, loops=amount, test_data=test, **overrides)
    else:
        history = trainer.fit(x, epochs=amount, test_data=test, **overrides)
    seconds = time.perf_counter() - t0
    if not comm.is_main:  # rank 0 evaluates, samples and writes the outputs
        return 0

    new = history[done:]
    train_nll = new[-1]["train_nll"] if new else model.nll(x)
    test_nll = (new[-1]["test_nll"] if new else model.nll(test)) if test is not None else None
    ckpt = tnborn.save(out / "model.tnb", model, trainer=trainer, extra=meta)
    samples, _ = model.sample(NUM_SAMPLES_PLOTTED, seed=options["seed"])
    samples = samples.cpu().numpy().astype(np.uint8)
    max_bond = max(model.bond_dims() or [1])
    plotting.plot_samples(samples, image_shape=train.image_shape, path=out / "samples.png",
                          title=f"{NUM_SAMPLES_PLOTTED} samples, {model.geometry}, max bond {max_bond}")
    if history:
        plotting.plot_history(history, path=out / "nll.png", reference={label: reference},
                              title=f"Born machine ({model.geometry}) on {train.description}")
    # one record per line: readable, and still one JSON document
    atomic_write_text(out / "history.json", "[\n" + ",\n".join(json.dumps(r) for r in history) + "\n]\n")
    summary = {
        "train_nll": train_nll,
        "test_nll": test_nll,
        "reference_nll": reference,
        "reference_label": label,
        "max_bond": max_bond,
        "bond_dims": model.bond_dims(),
        "num_parameters": model.num_parameters(),
        "loops": history[-1]["loop"] if history else 0.0,
        "trainer": type(trainer).__name__,
        "half_sweeps" if sweep else "epochs": len(history),
        "seconds": seconds,
        "processes": comm.world_size,
        "stopped_early": bool(trainer.stop_training),
        "checkpoint": str(ckpt),
    }
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=1) + "\n")

    say(f"train NLL  {train_nll:.5f} nats   (lowest possible: {label})")
    if test_nll is not None:
        say(f"test NLL   {test_nll:.5f} nats")
    if trainer.stop_training:
        say(f"stopped early: NLL changed by < {early:g} over one {unit}")
    say(f"max bond   {max_bond}")
    rate = f", {seconds / len(new) * per_loop:.2f} s/{unit}" if new else ""
    say(f"time       {seconds:.2f} s{rate}")
    say(f"output     {out}/  (model.tnb, samples.png, nll.png, history.json, summary.json)")
    if not math.isfinite(train_nll):
        say("warning: the training NLL is not finite (some training sample has probability 0)")
    return 0
