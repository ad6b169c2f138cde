"""The ``tnborn`` command line: train, sample, evaluate, inspect and inpaint.

This module only parses arguments, merges a TOML configuration file with the
command-line flags and reports errors; the work is done by the functions in
:mod:`tnborn.cli_commands`, which import torch, quimb and matplotlib only
when a command runs, so that ``tnborn --help`` starts quickly.

Every error that tnborn raises on bad input (:class:`~tnborn.errors.TnbornError`)
and every file-system error is printed as ``tnborn: error: <message>`` on
standard error, with exit status 2 and no traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from ._version import __version__
from .cli_commands._settings import setting_options
from .errors import ConfigError, TnbornError

__all__ = ["main", "build_parser", "load_config", "resolve_train_options", "TRAIN_OPTIONS", "RUN_OPTIONS",
           "SETTING_OPTIONS"]

PROG = "tnborn"
DTYPES = ("float64", "float32", "complex128", "complex64")
TRAINERS = ("auto", "sweep", "gradient")
SIDES = ("left", "right", "top", "bottom")


# --------------------------------------------------------------------------
# value converters: accept a string (command line) or a typed TOML value
# --------------------------------------------------------------------------


def _integer(minimum: int | None = None, optional: bool = False) -> Callable[[Any, str], Any]:
    def convert(value: Any, key: str) -> Any:
        if optional and (value is None or (isinstance(value, str) and value.strip().lower() in ("none", ""))):
            return None
        if isinstance(value, str):
            try:
                value = int(value.strip())
            except ValueError:
                value = None
        if not isinstance(value, int) or isinstance(value, bool) or (minimum is not None and value < minimum):
            bound = f" >= {minimum}" if minimum is not None else ""
            extra = " or 'none'" if optional else ""
            raise ConfigError(f"{key} must be an integer{bound}{extra}")
        return value

    return convert


def _number(minimum: float | None = None, optional: bool = False) -> Callable[[Any, str], Any]:
    def convert(value: Any, key: str) -> Any:
        if optional and (value is None or (isinstance(value, str) and value.strip().lower() in ("none", ""))):
            return None
        if isinstance(value, str):
            try:
                value = float(value.strip())
            except ValueError:
                value = None
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value != value:
            raise ConfigError(f"{key} must be a number")
        if minimum is not None and value < minimum:
            raise ConfigError(f"{key} must be >= {minimum:g}")
        return float(value)

    return convert


def _text(choices: Sequence[str] | None = None) -> Callable[[Any, str], Any]:
    def convert(value: Any, key: str) -> Any:
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{key} must be a non-empty string")
        if choices is not None and value not in choices:
            raise ConfigError(f"{key} must be one of {', '.join(choices)}; got {value!r}")
        return value

    return convert


def _flag(value: Any, key: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{key} must be true or false")
    return value


def _argparse_type(convert: Callable[[Any, str], Any], key: str) -> Callable[[str], Any]:
    """Wrap a converter for argparse (errors become usage errors, exit status 2)."""

    def parse(text: str) -> Any:
        try:
            return convert(text, key)
        except ConfigError as exc:  # argparse itself prefixes "argument --key:"
            msg = str(exc)
            msg = msg[len(key) + 1:] if msg.startswith(key + " ") else msg
            raise argparse.ArgumentTypeError(msg if "got" in msg else f"{msg}, got {text!r}") from None

    parse.__name__ = key  # argparse names the type in some messages
    return parse


# --------------------------------------------------------------------------
# the options of `tnborn train` (each is a flag and a config-file key)
# --------------------------------------------------------------------------

#: key -> (converter, default, metavar, help) of the options that are not trainer
#: settings. The flag is ``--key`` with ``-`` for ``_``.
RUN_OPTIONS: dict[str, tuple[Callable[[Any, str], Any], Any, str | None, str]] = {
    # data
    "data": (_text(), None, "PATH", "training data: .npy, .npz or MNIST IDX file of 0/1 rows "
             "(default: the bars-and-stripes data set)"),
    "key": (_text(), None, "NAME", "array to read from an .npz file with several arrays"),
    "threshold": (_number(), None, "T", "binarise grey values: value > T becomes 1 "
                  "(50 for the paper's thr50 MNIST, 127.5 for thr127)"),
    "test_data": (_text(), None, "PATH", "held-out data; its NLL is recorded after every half-sweep "
                  "(epoch)"),
    "test_key": (_text(), None, "NAME", "array to read from the --test-data .npz file"),
    "dataset": (_text(), None, "NAME", "built-in data set: bars-and-stripes, random or parity "
                "(default bars-and-stripes)"),
    "rows": (_integer(1), None, "R", "image rows (data set size for bars-and-stripes; image shape "
             "for plots; default 4)"),
    "cols": (_integer(1), None, "C", "image columns (default: --rows)"),
    "dataset_size": (_integer(1, optional=True), None, "N", "number of strings drawn for "
                     "--dataset random (default 100) or parity (default: all 2^(n-1))"),
    # model
    "geometry": (_text(), "mps", "NAME", "tensor-network geometry (default mps)"),
    "bond_dim": (_integer(1), 2, "D", "initial bond dimension (default 2, as the authors)"),
    "dtype": (_text(DTYPES), "float64", "DTYPE", f"{', '.join(DTYPES)} (default float64)"),
    "device": (_text(), "cpu", "DEVICE", "cpu, cuda, cuda:N or auto (default cpu)"),
    # training, both trainers
    "trainer": (_text(TRAINERS), "auto", "NAME", "sweep (two-site sweep, tree-shaped geometries), "
                "gradient (torch optimiser on all tensors, any geometry) or auto: sweep when the "
                "geometry is a tree, else gradient (default auto)"),
    "seed": (_integer(0), 0, "S", "seed of the initialisation, batches and samples (default 0)"),
    "threads": (_integer(1, optional=True), None, "N", "torch CPU threads (default min(4, cores), "
                "or $TNBORN_NUM_THREADS)"),
    # fit arguments of one trainer
    "loops": (_integer(0), 4, "L", "sweeps to train (with --resume: additional sweeps; default 4)"),
    "epochs": (_integer(0), 100, "E", "epochs to train (with --resume: additional epochs; default 100)"),
    # run control
    "checkpoint_every": (_integer(1, optional=True), None, "L", "also save model.tnb every L loops "
                         "(epochs with the gradient trainer)"),
    "early_stop": (_number(0.0, optional=True), None, "DELTA", "stop when the training NLL changes "
                   "by less than DELTA nats over one loop (epoch)"),
    "resume": (_text(), None, "CHECKPOINT", "continue training a checkpoint written by tnborn train"),
    "out": (_text(), None, "DIR", "output folder (default runs/tnborn-<timestamp>); a folder holding "
            "an earlier run is refused unless --overwrite (or --resume)"),
    "overwrite": (_flag, False, None, "replace the outputs of an earlier run in --out"),
    "quiet": (_flag, False, None, "no progress bar and no output except errors"),
    "nproc": (_integer(1), 1, "N", "data-parallel training in N local processes (torch.distributed: "
              "gloo on CPU, NCCL on CUDA; ignored under torchrun, which sets the process count; default 1)"),
}

#: The options generated from the settings dataclasses (:mod:`tnborn.cli_commands._settings`).
#: Their default here is None: a setting not given keeps the trainer's own default.
SETTING_OPTIONS = setting_options()

#: Every option of ``tnborn train``: key -> (converter, default, metavar, help).
TRAIN_OPTIONS: dict[str, tuple[Callable[[Any, str], Any], Any, str | None, str]] = {
    **RUN_OPTIONS,
    **{key: (opt.convert, None, opt.metavar, opt.help) for key, opt in SETTING_OPTIONS.items()},
}


def load_config(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a TOML configuration file for ``tnborn train``.

    Parameters
    ----------
    path : str or os.PathLike
        The file. Its keys are the long options of ``tnborn train`` with
        underscores (``max_bond = 16``); paths in it are relative to the
        current folder.

    Returns
    -------
    dict
        The options, converted and checked.

    Raises
    ------
    ConfigError
        If the file is missing or not valid TOML, has an unknown key (the
        message lists the valid keys) or a value of the wrong type.
    """
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib

    try:
        with open(path, "rb") as fh:
            raw = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file {os.fspath(path)!r} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {os.fspath(path)!r} is not valid TOML: {exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {os.fspath(path)!r} is not UTF-8 text (TOML files are UTF-8): {exc}") from None
    unknown = sorted(set(raw) - set(TRAIN_OPTIONS))
    if unknown:
        raise ConfigError(
            f"unknown key(s) in {os.fspath(path)!r}: {', '.join(unknown)}; "
            f"valid keys: {', '.join(TRAIN_OPTIONS)}"
        )
    # "key 'lr' of FILE": the TOML spelling, which the CLI's flag translation leaves alone
    return {key: TRAIN_OPTIONS[key][0](value, f"key {key!r} of {os.fspath(path)!r}") for key, value in raw.items()}


def resolve_train_options(args: argparse.Namespace) -> tuple[dict[str, Any], set[str]]:
    """Merge defaults, the ``--config`` file and the command line (in that order).

    Parameters
    ----------
    args : argparse.Namespace
        Parsed ``tnborn train`` arguments (options not given are absent).

    Returns
    -------
    options : dict
        Every key of :data:`TRAIN_OPTIONS`.
    explicit : set of str
        Keys set by the config file or the command line.
    """
    options = {key: spec[1] for key, spec in TRAIN_OPTIONS.items()}
    explicit: set[str] = set()
    config_path = getattr(args, "config", None)
    if config_path is not None:
        from_file = load_config(config_path)
        options.update(from_file)
        explicit |= set(from_file)
    for key in TRAIN_OPTIONS:
        if hasattr(args, key):
            options[key] = getattr(args, key)
            explicit.add(key)
    return options, explicit


# --------------------------------------------------------------------------
# parser
# --------------------------------------------------------------------------

TRAIN_EXAMPLES = """\
examples:
  tnborn train                                   # 4x4 bars-and-stripes, the authors' settings
  tnborn train --dataset bars-and-stripes --rows 3 --cols 4 --loops 2 --out runs/bas34
  tnborn train --data mnist1k_train_thr50.npy --lr 1e-3 --batch-size 50 --max-bond 100 \\
               --loops 10 --test-data mnist1k_other_thr50.npy --checkpoint-every 1
  tnborn train --data mnist1k_train_thr50.npy --cutoff 0.3,5e-5 --lr 0.05,1e-3 \\
               --batch-size 100,50 --max-bond 30 --loops 10
                                                 # the authors' MNIST schedule: a start loop,
                                                 # then the values after the comma
  tnborn train --config run.toml --loops 8      # flags override the file's values
  tnborn train --resume runs/bas34/model.tnb --loops 2 --out runs/bas34-more
  tnborn train --geometry peps --rows 3 --cols 3 --epochs 200 --out runs/peps33
                                                 # a PEPS has loops: gradient trainer (Adam)
  tnborn train --trainer gradient --optimizer sgd --lr 0.05 --epochs 50 --batch-size 10

config file (TOML): every option above as a key with underscores, e.g.
  data = "mnist1k_train_thr50.npy"
  max_bond = 100
  batch_size = [100, 50]                         # per loop: a start loop of 100, then 50

output folder: model.tnb (checkpoint with trainer state), samples.png (64 samples),
nll.png (NLL per half-sweep), history.json, summary.json.
"""

SAMPLE_EXAMPLES = """\
examples:
  tnborn sample runs/bas/model.tnb -n 1000 --out samples.npy
  tnborn sample runs/bas/model.tnb -n 64 --png grid.png --seed 3
"""

EVALUATE_EXAMPLES = """\
examples:
  tnborn evaluate runs/bas/model.tnb --dataset bars-and-stripes
  tnborn evaluate runs/mnist/model.tnb --data mnist1k_other_thr50.npy --json
  tnborn evaluate runs/mnist/model.tnb --data capacity.npz --key data_test
"""

INFO_EXAMPLES = """\
examples:
  tnborn info runs/bas/model.tnb
  tnborn info runs/bas/model.tnb --json
"""

INPAINT_EXAMPLES = """\
examples:
  tnborn inpaint runs/mnist/model.tnb --data mnist1k_other_thr50.npy --remove bottom
  tnborn inpaint runs/bas/model.tnb --dataset bars-and-stripes --remove left --num-samples 6
  tnborn inpaint runs/mnist/model.tnb --data test.npy --mask known.npy --out inpaint-custom

--remove SIDE makes that half of every image unknown (it is resampled) and keeps the
other half, as in the paper's reconstructions; --mask FILE reads a boolean .npy mask
with True = known pixel, of shape (N,), (rows, cols) or (images, N).
Output folder: inpainting.png, completions.npy (images x samples x N, uint8), mask.npy,
originals.npy.
"""

MAIN_EPILOG = """\
examples:
  tnborn train                          # train on 4x4 bars-and-stripes, write runs/tnborn-<time>/
  tnborn info runs/tnborn-*/model.tnb
  tnborn sample runs/tnborn-*/model.tnb -n 100 --png samples.png

Run 'tnborn COMMAND --help' for the options of a command.
"""


def _formatter(prog: str) -> argparse.HelpFormatter:
    return argparse.RawDescriptionHelpFormatter(prog, max_help_position=32)


CIRCUIT_EXAMPLES = """\
examples:
  tnborn circuit runs/bas/model.tnb --layers 4 --out bas4.qasm       # analytical layers (Ran)
  tnborn circuit runs/bas/model.tnb --layers 4 --optimize --sweeps 30 --dataset bars-and-stripes
  tnborn circuit runs/bas/model.tnb --layers auto --target-fidelity 0.95 --max-layers 10 --json
  tnborn circuit runs/mnist/model.tnb --layers 3 --optimize --max-bond-sim 64 --qasm-version 3

Each row: fidelity of Ran's analytical layers, before and after optimisation, the
fidelity of the model truncated to bond 2^layers (what a state of the circuit's bond
dimension gets by SVD truncation) and an upper bound no such state can exceed; with
--data/--dataset, the NLL of the data under the circuit's measurement distribution.
For many qubits read log_fidelity and fidelity_per_qubit (fidelity^(1/N)).
"""


def _layers(value: Any, key: str) -> Any:
    if isinstance(value, str) and value.strip().lower() == "auto":
        return "auto"
    try:
        return _integer(1)(value, key)
    except ConfigError:
        raise ConfigError(f"{key} must be an integer >= 1 or 'auto'") from None


def _fidelity(value: Any, key: str) -> float:
    number = _number()(value, key)
    if not 0.0 < number <= 1.0:
        raise ConfigError(f"{key} must be a number in (0, 1], got {value!r}")
    return number


def _add_data_source(parser: argparse.ArgumentParser, required_hint: str) -> None:
    group = parser.add_argument_group("data", required_hint)
    group.add_argument("--data", metavar="PATH", help=TRAIN_OPTIONS["data"][3].split(" (")[0])
    group.add_argument("--key", metavar="NAME", help=TRAIN_OPTIONS["key"][3])
    group.add_argument("--threshold", metavar="T", type=_argparse_type(_number(), "--threshold"),
                       help=TRAIN_OPTIONS["threshold"][3])
    group.add_argument("--dataset", metavar="NAME", help="built-in data set: bars-and-stripes, random or parity")
    group.add_argument("--rows", metavar="R", type=_argparse_type(_integer(1), "--rows"),
                       help="image rows (and bars-and-stripes size; default: from the checkpoint or 4)")
    group.add_argument("--cols", metavar="C", type=_argparse_type(_integer(1), "--cols"),
                       help="image columns (default: --rows)")
    group.add_argument("--dataset-size", metavar="N", type=_argparse_type(_integer(1), "--dataset-size"),
                       help=TRAIN_OPTIONS["dataset_size"][3])


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser of the ``tnborn`` command.

    Returns
    -------
    argparse.ArgumentParser
        The parser; each sub-command stores its handler in ``func``.
    """
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Tensor-network Born machines (the MPS Born machine of Han et al.,\n"
        "Phys. Rev. X 8, 031012): train, sample, evaluate, inspect and inpaint.",
        epilog=MAIN_EPILOG,
        formatter_class=_formatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")

    # train --------------------------------------------------------------
    train = sub.add_parser(
        "train", help="train a Born machine and write checkpoint, plots and history",
        description="Train a Born machine with the two-site sweep of Han et al. (tree-shaped\n"
        "geometries) or, with --trainer gradient and for geometries with loops, with a\n"
        "torch optimiser on all tensors at once (--optimizer, --epochs).\n"
        "With no arguments: 4x4 bars-and-stripes with the authors' settings (lr 0.1, 10 steps\n"
        "per bond, full batch, cutoff 5e-5, no maximum bond dimension), 4 loops, seed 0.",
        epilog=TRAIN_EXAMPLES, formatter_class=_formatter, argument_default=argparse.SUPPRESS,
    )
    train.add_argument("--config", metavar="FILE.toml", help="read options from a TOML file "
                       "(command-line flags override it)")
    groups = {
        "data": train.add_argument_group("data"),
        "model": train.add_argument_group("model"),
        "training": train.add_argument_group("training (both trainers)"),
        "sweep": train.add_argument_group("sweep trainer"),
        "gradient": train.add_argument_group("gradient trainer"),
        "run": train.add_argument_group("run"),
    }
    shared = tuple(k for k, o in SETTING_OPTIONS.items() if len(o.trainers) > 1)
    sections = {
        "data": ("data", "key", "threshold", "test_data", "test_key", "dataset", "rows", "cols", "dataset_size"),
        "model": ("geometry", "bond_dim", "dtype", "device"),
        "training": ("trainer", *shared, "seed", "threads"),
        "sweep": (*(k for k, o in SETTING_OPTIONS.items() if o.trainers == ("sweep",)), "loops"),
        "gradient": (*(k for k, o in SETTING_OPTIONS.items() if o.trainers == ("gradient",)), "epochs"),
        "run": ("checkpoint_every", "early_stop", "resume", "out", "overwrite", "quiet", "nproc"),
    }
    for section, keys in sections.items():
        for key in keys:
            convert, _default, metavar, help_text = TRAIN_OPTIONS[key]
            flag = "--" + key.replace("_", "-")
            if convert is _flag:
                short = ("-q",) if key == "quiet" else ()
                groups[section].add_argument(*short, flag, action="store_true", help=help_text)
            else:
                groups[section].add_argument(flag, dest=key, metavar=metavar,
                                             type=_argparse_type(convert, flag), help=help_text)
    train.set_defaults(func=_run_train)

    # sample -------------------------------------------------------------
    sample = sub.add_parser("sample", help="draw exact samples from a checkpoint",
                            description="Draw exact, independent samples from a trained model.",
                            epilog=SAMPLE_EXAMPLES, formatter_class=_formatter)
    sample.add_argument("checkpoint", metavar="CHECKPOINT", help="a model.tnb file")
    sample.add_argument("-n", "--num-samples", type=_argparse_type(_integer(1), "--num-samples"),
                        default=100, metavar="N", help="number of samples (default 100)")
    sample.add_argument("--out", metavar="FILE.npy", default="samples.npy",
                        help="where to save the samples, uint8 (N, variables) (default samples.npy)")
    sample.add_argument("--png", metavar="FILE.png", help="also draw the first 100 samples as a grid")
    sample.add_argument("--seed", type=_argparse_type(_integer(0), "--seed"), default=None, metavar="S",
                        help="random seed (default: fresh randomness)")
    sample.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default cpu)")
    sample.add_argument("-q", "--quiet", action="store_true", help="no output except errors")
    sample.set_defaults(func=_run_sample)

    # evaluate -----------------------------------------------------------
    evaluate = sub.add_parser("evaluate", help="negative log-likelihood of data under a checkpoint",
                              description="Print the mean negative log-likelihood (nats) of a data set.",
                              epilog=EVALUATE_EXAMPLES, formatter_class=_formatter)
    evaluate.add_argument("checkpoint", metavar="CHECKPOINT", help="a model.tnb file")
    _add_data_source(evaluate, "give --data PATH or --dataset NAME")
    evaluate.add_argument("--json", action="store_true", help="print a JSON object instead of text")
    evaluate.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default cpu)")
    evaluate.set_defaults(func=_run_evaluate)

    # info ---------------------------------------------------------------
    info = sub.add_parser("info", help="summary of a checkpoint (geometry, bond dimensions, history)",
                          description="Summarise a checkpoint without loading its arrays.",
                          epilog=INFO_EXAMPLES, formatter_class=_formatter)
    info.add_argument("checkpoint", metavar="CHECKPOINT", help="a model.tnb file")
    info.add_argument("--json", action="store_true", help="print a JSON object instead of text")
    info.set_defaults(func=_run_info)

    # inpaint ------------------------------------------------------------
    inpaint = sub.add_parser("inpaint", help="complete partly removed images by conditional sampling",
                             description="Remove part of each image and sample the removed pixels\n"
                             "exactly from P(removed | kept).",
                             epilog=INPAINT_EXAMPLES, formatter_class=_formatter)
    inpaint.add_argument("checkpoint", metavar="CHECKPOINT", help="a model.tnb file")
    _add_data_source(inpaint, "images to complete: give --data PATH or --dataset NAME")
    masks = inpaint.add_mutually_exclusive_group(required=True)
    masks.add_argument("--remove", choices=SIDES, help="remove this half of every image (unknown)")
    masks.add_argument("--mask", metavar="FILE.npy", help="boolean mask, True = known pixel")
    inpaint.add_argument("--num-images", type=_argparse_type(_integer(1), "--num-images"), default=8,
                         metavar="M", help="complete the first M images of the data (default 8)")
    inpaint.add_argument("--num-samples", type=_argparse_type(_integer(1), "--num-samples"), default=4,
                         metavar="K", help="completions per image (default 4)")
    inpaint.add_argument("--out", metavar="DIR", default="inpaint", help="output folder (default inpaint)")
    inpaint.add_argument("--seed", type=_argparse_type(_integer(0), "--seed"), default=0, metavar="S",
                         help="random seed (default 0)")
    inpaint.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default cpu)")
    inpaint.add_argument("-q", "--quiet", action="store_true", help="no output except errors")
    inpaint.set_defaults(func=_run_inpaint)

    # circuit ------------------------------------------------------------
    circuit = sub.add_parser("circuit", help="compile an MPS checkpoint into an OpenQASM circuit",
                             description="Compile an MPS Born machine into layers of two-qubit gates\n"
                             "(exact for bond dimension 2) written as OpenQASM with u3 and cx gates;\n"
                             "prints the fidelity |<psi|circuit|0>|^2 per number of layers, with the\n"
                             "fidelity of the state truncated to the circuit's bond dimension 2^layers\n"
                             "and a hard upper bound as references.",
                             epilog=CIRCUIT_EXAMPLES, formatter_class=_formatter)
    circuit.add_argument("checkpoint", metavar="CHECKPOINT", help="a model.tnb file of an MPS model")
    circuit.add_argument("--layers", type=_argparse_type(_layers, "--layers"), default=1, metavar="K|auto",
                         help="number of staircase layers, or auto: add optimised layers until "
                         "--target-fidelity (default 1)")
    circuit.add_argument("--optimize", action="store_true",
                         help="grow K optimised layers: each layer count starts from the optimised "
                         "circuit one layer shallower plus an analytical layer, then every gate is "
                         "optimised (polar sweeps); the fidelity never decreases with depth")
    circuit.add_argument("--sweeps", type=_argparse_type(_integer(1), "--sweeps"), default=None, metavar="S",
                         help="most optimisation sweeps per layer count (default 20)")
    circuit.add_argument("--tol", type=_argparse_type(_number(0.0), "--tol"), default=None, metavar="T",
                         help="stop sweeping when a sweep raises the log-fidelity by less than T (default 1e-6)")
    circuit.add_argument("--target-fidelity", type=_argparse_type(_fidelity, "--target-fidelity"), default=None,
                         metavar="F", help="with --layers auto: stop at the first layer count reaching F, "
                         "in (0, 1]")
    circuit.add_argument("--max-layers", type=_argparse_type(_integer(1), "--max-layers"), default=None,
                         metavar="M", help="with --layers auto: most layers (default 8)")
    circuit.add_argument("--out", metavar="FILE.qasm", default="circuit.qasm",
                         help="where to write the program (default circuit.qasm)")
    circuit.add_argument("--qasm-version", type=int, choices=(2, 3), default=2, help="OpenQASM version (default 2)")
    circuit.add_argument("--max-bond-sim", type=_argparse_type(_integer(2, optional=True), "--max-bond-sim"),
                         default=None, metavar="D", help="bond limit of the simulated residual states (default: exact)")
    _add_data_source(circuit, "optional: data whose NLL under each circuit's measurement distribution "
                     "is reported")
    circuit.add_argument("--json", action="store_true", help="print a JSON object instead of text")
    circuit.set_defaults(func=_run_circuit)
    return parser


# --------------------------------------------------------------------------
# dispatch
# --------------------------------------------------------------------------


def _run_train(args: argparse.Namespace) -> int:
    from .cli_commands.train import train_command

    options, explicit = resolve_train_options(args)
    if options["nproc"] > 1 and not os.environ.get("WORLD_SIZE"):  # not already under torchrun
        from .distributed import spawn

        return spawn(train_command, options["nproc"], args=(options, explicit))
    return train_command(options, explicit)


def _run_sample(args: argparse.Namespace) -> int:
    from .cli_commands.tools import sample_command

    return sample_command(args)


def _run_evaluate(args: argparse.Namespace) -> int:
    from .cli_commands.tools import evaluate_command

    return evaluate_command(args)


def _run_info(args: argparse.Namespace) -> int:
    from .cli_commands.tools import info_command

    return info_command(args)


def _run_inpaint(args: argparse.Namespace) -> int:
    from .cli_commands.tools import inpaint_command

    return inpaint_command(args)


def _run_circuit(args: argparse.Namespace) -> int:
    from .cli_commands.circuit import circuit_command

    return circuit_command(args)


def _message(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.filename is not None and exc.strerror:
        return f"{exc.strerror}: {os.fspath(exc.filename)!r}"
    if isinstance(exc, TnbornError):
        from .cli_commands._common import cli_message

        return cli_message(str(exc) or type(exc).__name__)
    return str(exc) or type(exc).__name__


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``tnborn`` command line.

    Parameters
    ----------
    argv : sequence of str, optional
        Arguments without the program name (default: ``sys.argv[1:]``).

    Returns
    -------
    int
        Exit status: 0 on success, 2 on bad input (usage errors, tnborn
        errors, missing files), 130 when interrupted.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(args.func(args) or 0)
    except BrokenPipeError:  # output piped into e.g. `head`, which stopped reading
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    except (TnbornError, OSError) as exc:
        print(f"{PROG}: error: {_message(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
