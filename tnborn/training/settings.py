"""Settings dataclasses: per-loop schedules, validation, documentation from one place.

A settings dataclass (:class:`~tnborn.training.sweep.SweepSettings`,
:class:`~tnborn.training.gradient.GradientSettings`) derives from
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
"""

from __future__ import annotations

import math
import re
from dataclasses import fields, replace
from typing import Any

from ..errors import ConfigError

__all__ = ["Settings", "is_int", "is_number", "check_positive", "check_batch_size"]


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
