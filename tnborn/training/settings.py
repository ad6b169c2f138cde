"""Settings dataclasses: per-loop schedules, validation, documentation from one place.

The settings dataclasses (:class:`SweepSettings`,
:class:`GradientSettings`) derive from
:class:`Settings`. Each field documented in the class's numpydoc
``Attributes`` section is the one home of that setting: its default, its type
and its help text feed the Python API, the TOML keys and the command-line
flags (:mod:`tnborn.cli_commands._settings`).

**Schedules.** A field listed in ``schedulable`` accepts a list: one value per
loop (epoch, for the gradient trainer), the last one kept for all later loops.
``SweepSettings(cutoff=[0.3, 5e-5], lr=[0.05, 1e-3], batch_size=[100, 50])``
is the authors' MNIST schedule: a start loop at cutoff 0.3, lr 0.05 and batches
of 100, then cutoff 5e-5, lr 1e-3 and batches of 50. Loops are counted over the
whole run, resumed runs included.

**Fields.** Each field is declared with :func:`setting`, which records, next
to its default, the kind of value (integer, number or text; whether ``None``
is allowed, and the accepted names) and the command-line metavariable.
:meth:`Settings.parse` turns a command-line string or a TOML value into the
field's Python value with these; :meth:`Settings.check` then checks the
ranges. This module imports neither torch nor quimb, so that the command
line can build its options from it without loading them.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, fields, replace
from typing import Any

from ..errors import ConfigError

__all__ = ["Settings", "SweepSettings", "GradientSettings", "setting", "is_int", "is_number",
           "check_positive", "check_batch_size", "GRADIENT_RESCALE_RULES", "OPTIMIZERS",
           "MAX_NLL_RISE_DEFAULT", "GUARD_SHRINKS_DEFAULT", "GUARD_SCOPES", "GUARD_SCOPE_DEFAULT"]

#: Accepted values of :attr:`SweepSettings.gradient_rescale` (the rules of
#: :data:`tnborn.training.local_update.RULES`).
GRADIENT_RESCALE_RULES = ("none", "norm0.25")

#: Accepted values of :attr:`GradientSettings.optimizer`.
OPTIMIZERS = ("adam", "sgd")

#: Default of :attr:`SweepSettings.max_nll_rise` (nats per sample): no guard.
MAX_NLL_RISE_DEFAULT = None

#: Default of :attr:`SweepSettings.guard_shrinks`: a step the guard refuses is
#: rejected at once (measured on MNIST at batch 50, examples/stability_batch50.py:
#: halving its learning rate first trains worse, for the tree by 1.4 nats).
GUARD_SHRINKS_DEFAULT = 0

#: Accepted values of :attr:`SweepSettings.guard_scope`: the rows the step guard
#: judges a step on (:func:`tnborn.training.local_update.block_gradient_steps`).
GUARD_SCOPES = ("batch", "bond")

#: Default of :attr:`SweepSettings.guard_scope`: all rows drawn for the bond
#: (measured on MNIST at batches of 50 with ``max_nll_rise=0``,
#: examples/results/stability_batch50/guard_study.md: the tree's training NLL
#: after 10 loops is 0.6 to 2.7 nats lower than with ``"batch"``, and lower than
#: at batches of 200 without a guard, on each of three seeds).
GUARD_SCOPE_DEFAULT = "bond"

_KINDS = ("int", "float", "str")


def setting(default: Any, kind: str, metavar: str, *, optional: bool = False,
            choices: tuple[str, ...] | None = None, flag: str | None = None) -> Any:
    """Declare a settings field: its default and how its value is written.

    Parameters
    ----------
    default : object
        The default value.
    kind : {'int', 'float', 'str'}
        The type of one value.
    metavar : str
        Placeholder of the value in the command-line help.
    optional : bool
        Whether ``None`` (``none`` on the command line) is a valid value.
    choices : tuple of str, optional
        The accepted names of a ``'str'`` setting.
    flag : str, optional
        The command-line and TOML name when it differs from the field name
        (``descent_steps`` is ``--steps`` and ``steps = 10``).

    Returns
    -------
    dataclasses.Field
        The field, with this information in its ``metadata``.
    """
    if kind not in _KINDS:
        raise ValueError(f"kind must be one of {_KINDS}, got {kind!r}")
    return field(default=default, metadata={"kind": kind, "metavar": metavar, "optional": optional,
                                            "choices": choices, "flag": flag})


def is_int(v: Any) -> bool:
    """Whether ``v`` is an integer (not a bool).

    Parameters
    ----------
    v : object
        The value.

    Returns
    -------
    bool
        True for ``int`` values other than ``True`` and ``False``.
    """
    return isinstance(v, int) and not isinstance(v, bool)


def is_number(v: Any) -> bool:
    """Whether ``v`` is a real number (not a bool).

    Parameters
    ----------
    v : object
        The value.

    Returns
    -------
    bool
        True for ``int`` and ``float`` values other than booleans.
    """
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def check_positive(name: str, value: Any, optional: bool = False) -> None:
    """Raise :class:`ConfigError` unless ``value`` is a positive finite number (or None if ``optional``).

    Parameters
    ----------
    name : str
        The setting's name, for the message.
    value : object
        The value to check.
    optional : bool
        Whether ``None`` is accepted.
    """
    if optional and value is None:
        return
    if not (is_number(value) and math.isfinite(value) and value > 0):
        raise ConfigError(f"{name} must be a positive finite number{' or None' if optional else ''}, got {value!r}")


def check_batch_size(value: Any, num_samples: int | None) -> None:
    """Raise :class:`ConfigError` unless ``value`` is None or an integer in ``[1, num_samples]``.

    Parameters
    ----------
    value : object
        The batch size to check (``None``: full batches).
    num_samples : int or None
        Number of training rows, if known.
    """
    if value is None:
        return
    if not (is_int(value) and value >= 1):
        raise ConfigError(f"batch_size must be an integer >= 1 or None, got {value!r}")
    if num_samples is not None and value > num_samples:
        raise ConfigError(f"batch_size ({value}) is larger than the training set ({num_samples})")


class Settings:
    """Mixin of the settings dataclasses (see the module docstring)."""

    #: Fields that accept one value per loop (a list).
    schedulable: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, tuple):
                setattr(self, f.name, list(v))

    def phases(self) -> int:
        """Number of distinct per-loop values (1 without schedules).

        Returns
        -------
        int
            The longest schedule's length.
        """
        return max([len(v) for v in self._values().values() if isinstance(v, list)] or [1])

    def _values(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def at(self, loop: int) -> Any:
        """The settings of loop ``loop`` (0-based): every schedule replaced by its value there.

        Parameters
        ----------
        loop : int
            Loop (or epoch) index; past a schedule's end its last value applies.

        Returns
        -------
        Settings
            A copy without lists.
        """
        return replace(self, **{k: v[min(loop, len(v) - 1)] for k, v in self._values().items()
                                if isinstance(v, list)})

    def is_scheduled(self) -> bool:
        """Whether some field holds a per-loop list.

        Returns
        -------
        bool
            True with a schedule.
        """
        return any(isinstance(v, list) for v in self._values().values())

    def validate(self, num_samples: int | None = None) -> Any:
        """Check every value of every loop, raising :class:`~tnborn.errors.ConfigError` on the first bad one.

        Parameters
        ----------
        num_samples : int, optional
            Training-set size, to check ``batch_size`` against.

        Returns
        -------
        Settings
            ``self``.
        """
        for k, v in self._values().items():
            if isinstance(v, list):
                if k not in self.schedulable:
                    raise ConfigError(f"{k} takes one value, not a per-loop list "
                                      f"(settings with schedules: {list(self.schedulable)}), got {v!r}")
                if not v:
                    raise ConfigError(f"{k}: a per-loop schedule needs at least one value")
        for loop in range(self.phases()):
            one = self.at(loop)
            try:
                one.check(num_samples)
            except ConfigError as exc:
                if self.is_scheduled():
                    raise ConfigError(f"{exc} (in the settings of loop {loop + 1})") from None
                raise
        return self

    def check(self, num_samples: int | None = None) -> None:
        """Check one loop's values (no lists); subclasses implement it.

        Parameters
        ----------
        num_samples : int, optional
            Training-set size.
        """
        raise NotImplementedError

    @classmethod
    def flag_name(cls, name: str) -> str:
        """The command-line and TOML name of field ``name`` (underscores, no dashes).

        Parameters
        ----------
        name : str
            A field name.

        Returns
        -------
        str
            ``flag`` of the field's :func:`setting`, else the field name.
        """
        return cls.spec(name)["flag"] or name

    @classmethod
    def spec(cls, name: str) -> dict[str, Any]:
        """How field ``name`` is written: the metadata recorded by :func:`setting`.

        Parameters
        ----------
        name : str
            A field name.

        Returns
        -------
        dict
            Keys ``kind``, ``metavar``, ``optional``, ``choices`` and ``flag``.
        """
        for f in fields(cls):
            if f.name == name:
                return dict(f.metadata)
        raise KeyError(name)

    @classmethod
    def default(cls, name: str) -> Any:
        """The default value of field ``name``.

        Parameters
        ----------
        name : str
            A field name.

        Returns
        -------
        object
            The default.
        """
        return {f.name: f.default for f in fields(cls)}[name]

    @classmethod
    def parse(cls, name: str, value: Any, where: str | None = None) -> Any:
        """Convert a command-line string or a TOML value into the value of field ``name``.

        A per-loop field accepts a list (TOML array) or, on the command line,
        comma-separated values (``0.05,1e-3``). Only the kind of each value is
        checked here; :meth:`validate` checks ranges.

        Parameters
        ----------
        name : str
            A field name.
        value : str, int, float, list or None
            The value as written.
        where : str, optional
            How the value is named in messages (default: the field name).

        Returns
        -------
        object
            The value, a list of values for a schedule.

        Raises
        ------
        ConfigError
            If the value is not of the field's kind.
        """
        where = where or name
        spec = cls.spec(name)
        if isinstance(value, str) and "," in value:
            value = [v.strip() for v in value.split(",")]
        if isinstance(value, (list, tuple)):
            if name not in cls.schedulable:
                raise ConfigError(f"{where} takes one value, not a per-loop list, got {value!r}")
            if not value:
                raise ConfigError(f"{where}: a per-loop schedule needs at least one value")
            return [cls._parse_one(spec, v, where) for v in value]
        return cls._parse_one(spec, value, where)

    @staticmethod
    def _parse_one(spec: dict[str, Any], value: Any, where: str) -> Any:
        kind, optional, choices = spec["kind"], spec["optional"], spec["choices"]
        if optional and (value is None or (isinstance(value, str) and value.strip().lower() == "none")):
            return None
        expected = {"int": "an integer", "float": "a number", "str": "a name"}[kind]
        if optional:
            expected += " or 'none'"
        if choices:
            expected = "one of " + ", ".join(choices)
        converted: Any = None
        if kind == "str":
            converted = value if isinstance(value, str) and value else None
            if choices and converted not in choices:
                converted = None
        elif isinstance(value, str):
            try:
                converted = int(value.strip()) if kind == "int" else float(value.strip())
            except ValueError:
                converted = None
        elif kind == "int" and is_int(value):
            converted = value
        elif kind == "float" and is_number(value):
            converted = float(value)
        if converted is None or (kind == "float" and converted != converted):
            raise ConfigError(f"{where} must be {expected}, got {value!r}")
        return converted

    @classmethod
    def keys(cls) -> list[str]:
        """Names of all settings.

        Returns
        -------
        list of str
            The field names.
        """
        return [f.name for f in fields(cls)]

    @classmethod
    def help(cls) -> dict[str, str]:
        """The description of every field, from the class docstring's ``Attributes`` section.

        Returns
        -------
        dict
            Field name to one-paragraph help text.
        """
        doc = cls.__doc__ or ""
        out: dict[str, str] = {}
        name = None
        for line in doc.splitlines():
            m = re.match(r"^    (\w+) : .*$", line)
            if m:
                name = m.group(1)
                out[name] = ""
            elif name is not None and line.startswith("        "):
                out[name] = (out[name] + " " + line.strip()).strip()
            elif line.strip() and not line.startswith("        "):
                name = None
        return {k: out.get(k, "") for k in cls.keys()}


@dataclass
class SweepSettings(Settings):
    """Hyper-parameters of the two-site sweep (defaults: the authors' bars-and-stripes run).

    The fields marked *per loop* accept a list, one value per loop (the last
    one kept): see :mod:`tnborn.training.settings`.

    Attributes
    ----------
    lr : float
        Learning rate of the gradient steps on the merged tensor (per loop).
    descent_steps : int
        Gradient steps per bond (per loop).
    batch_size : int or None
        Mini-batch size; None uses the whole training set every step (per loop).
    cutoff : float
        Relative singular-value cutoff in [0, 1): keep s_i >= cutoff * s_0 (per loop).
    max_bond : int or None
        Largest bond dimension; None: unbounded (per loop).
    min_bond : int
        Smallest bond dimension kept by a split (per loop).
    svd_method : str
        quimb split method, 'svd' or 'svd:eig'.
    seed : int
        Seed of the mini-batch shuffling.
    gradient_rescale : str
        'none' (plain gradient steps) or 'norm0.25': the rule of
        the authors' capacity runs, which rescales a step direction
        g = G/B - M whose norm is below numel(M)**0.25 up to that norm before
        the step (per loop).
    max_nll_rise : float or None
        Step guard: a gradient step is accepted only if the NLL of its batch
        rises by at most this many nats per sample, else it is rejected (the
        block is kept); the counts are in the history (steps_shrunk,
        steps_rejected). None: no guard (per loop).
    guard_shrinks : int
        How many times the step guard halves the learning rate of a refused
        step and tries again before it rejects the step (per loop).
    guard_scope : str
        The rows the step guard judges a step on: 'bond', every row drawn for
        the bond (the union of its descent_steps batches), or 'batch', the
        step's own batch (per loop).
    max_sample_change : float or None
        Per-sample cap of the gradient steps: the term of each sample in a
        step is scaled down so that on its own it changes that sample's
        amplitude by at most this fraction of it (1: at most doubles it); the
        terms of the other samples are exact. None: the exact gradient (per
        loop).
    """

    lr: Any = setting(0.1, "float", "LR")
    descent_steps: Any = setting(10, "int", "K", flag="steps")
    batch_size: Any = setting(None, "int", "B", optional=True)
    cutoff: Any = setting(5e-5, "float", "EPS")
    max_bond: Any = setting(None, "int", "D", optional=True)
    min_bond: Any = setting(1, "int", "D")
    svd_method: str = setting("svd", "str", "METHOD", choices=("svd", "svd:eig"))
    seed: int = setting(0, "int", "S")
    gradient_rescale: Any = setting("none", "str", "RULE", choices=GRADIENT_RESCALE_RULES)
    max_nll_rise: Any = setting(MAX_NLL_RISE_DEFAULT, "float", "NATS", optional=True)
    guard_shrinks: Any = setting(GUARD_SHRINKS_DEFAULT, "int", "K")
    guard_scope: Any = setting(GUARD_SCOPE_DEFAULT, "str", "ROWS", choices=GUARD_SCOPES)
    max_sample_change: Any = setting(None, "float", "C", optional=True)

    schedulable = ("lr", "descent_steps", "batch_size", "cutoff", "max_bond", "min_bond",
                   "gradient_rescale", "max_nll_rise", "guard_shrinks", "guard_scope", "max_sample_change")

    def check(self, num_samples: int | None = None) -> None:
        """Check one loop's values, raising :class:`~tnborn.errors.ConfigError` on the first bad one.

        Parameters
        ----------
        num_samples : int, optional
            Training-set size, to check ``batch_size`` against.
        """
        check_positive("lr", self.lr)
        if not (is_int(self.descent_steps) and self.descent_steps >= 1):
            raise ConfigError(f"descent_steps must be an integer >= 1, got {self.descent_steps!r}")
        if not (is_number(self.cutoff) and 0.0 <= self.cutoff < 1.0):
            raise ConfigError(f"cutoff must be in [0, 1), got {self.cutoff!r}")
        if not (is_int(self.min_bond) and self.min_bond >= 1):
            raise ConfigError(f"min_bond must be an integer >= 1, got {self.min_bond!r}")
        if self.max_bond is not None:
            if not (is_int(self.max_bond) and self.max_bond >= 1):
                raise ConfigError(f"max_bond must be an integer >= 1 or None, got {self.max_bond!r}")
            if self.max_bond < self.min_bond:
                raise ConfigError(f"max_bond ({self.max_bond}) must be >= min_bond ({self.min_bond})")
        check_batch_size(self.batch_size, num_samples)
        if self.svd_method not in ("svd", "svd:eig"):
            raise ConfigError(f"svd_method must be 'svd' or 'svd:eig', got {self.svd_method!r}")
        if not (is_int(self.seed) and self.seed >= 0):
            raise ConfigError(f"seed must be an integer, got {self.seed!r}")
        if self.gradient_rescale not in GRADIENT_RESCALE_RULES:
            raise ConfigError(
                f"gradient_rescale must be one of {list(GRADIENT_RESCALE_RULES)}, got {self.gradient_rescale!r}"
            )
        if self.max_nll_rise is not None and not (
                is_number(self.max_nll_rise) and math.isfinite(self.max_nll_rise) and self.max_nll_rise >= 0):
            raise ConfigError(f"max_nll_rise must be a finite number >= 0 or None, got {self.max_nll_rise!r}")
        if not (is_int(self.guard_shrinks) and self.guard_shrinks >= 0):
            raise ConfigError(f"guard_shrinks must be an integer >= 0, got {self.guard_shrinks!r}")
        if self.guard_scope not in GUARD_SCOPES:
            raise ConfigError(f"guard_scope must be one of {list(GUARD_SCOPES)}, got {self.guard_scope!r}")
        check_positive("max_sample_change", self.max_sample_change, optional=True)


@dataclass
class GradientSettings(Settings):
    """Hyper-parameters of :class:`~tnborn.training.gradient.GradientTrainer`.

    The fields marked *per epoch* accept a list, one value per epoch (the last
    one kept): see :mod:`tnborn.training.settings`.

    Attributes
    ----------
    optimizer : str
        'adam' or 'sgd'.
    lr : float
        Learning rate (per epoch).
    batch_size : int or None
        Mini-batch size; None uses the whole training set every step. An epoch
        is one pass over a fresh shuffle of the data (the last batch of an
        epoch may be smaller) (per epoch).
    momentum : float
        SGD momentum in [0, 1), ignored by Adam (per epoch).
    grad_clip : float or None
        If set, the gradient of all tensors together is rescaled to at most
        this 2-norm before each step (per epoch).
    seed : int
        Seed of the mini-batch shuffling.
    """

    optimizer: str = setting("adam", "str", "NAME", choices=OPTIMIZERS)
    lr: Any = setting(0.01, "float", "LR")
    batch_size: Any = setting(None, "int", "B", optional=True)
    momentum: Any = setting(0.0, "float", "BETA")
    grad_clip: Any = setting(None, "float", "NORM", optional=True)
    seed: int = setting(0, "int", "S")

    schedulable = ("lr", "batch_size", "momentum", "grad_clip")

    def check(self, num_samples: int | None = None) -> None:
        """Check one epoch's values, raising :class:`~tnborn.errors.ConfigError` on the first bad one.

        Parameters
        ----------
        num_samples : int, optional
            Training-set size, to check ``batch_size`` against.
        """
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"optimizer must be one of {list(OPTIMIZERS)}, got {self.optimizer!r}")
        check_positive("lr", self.lr)
        if not (is_number(self.momentum) and 0.0 <= self.momentum < 1.0):
            raise ConfigError(f"momentum must be in [0, 1), got {self.momentum!r}")
        check_positive("grad_clip", self.grad_clip, optional=True)
        check_batch_size(self.batch_size, num_samples)
        if not is_int(self.seed):
            raise ConfigError(f"seed must be an integer, got {self.seed!r}")
