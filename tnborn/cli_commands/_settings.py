"""The trainer options of ``tnborn train``, generated from the settings dataclasses.

Every field of :class:`~tnborn.training.settings.SweepSettings` and
:class:`~tnborn.training.settings.GradientSettings` is a command-line flag and
a TOML key: its name (``flag`` of the field, else the field name), metavariable,
help text (the class docstring's ``Attributes`` entry) and default come from
the field, so no setting is out of reach and no default can drift. A field of
both classes (``lr``, ``batch_size``) is one option; when it is not given,
each trainer keeps its own default. A per-loop field takes comma-separated
values on the command line (``--lr 0.05,1e-3``) and an array in TOML.

``seed`` is a field of both classes but also seeds the initialisation and the
samples, so it stays a run option of :mod:`tnborn.cli` (:data:`RUN_FIELDS`).

This module imports neither torch nor quimb (``tnborn --help`` stays quick).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

from ..training.settings import GradientSettings, Settings, SweepSettings

__all__ = ["SettingOption", "TRAINER_SETTINGS", "RUN_FIELDS", "setting_options", "trainer_keys",
           "only_for", "flag_of_fields"]

#: Trainer name (``--trainer``) -> its settings class.
TRAINER_SETTINGS: dict[str, type[Settings]] = {"sweep": SweepSettings, "gradient": GradientSettings}

#: Settings fields set by a run option of the same name rather than by a generated one.
RUN_FIELDS = ("seed",)

#: Command-line options, not settings, that only one trainer reads (arguments of ``fit``).
_FIT_OPTIONS = {"sweep": ("loops",), "gradient": ("epochs",)}


@dataclass(frozen=True)
class SettingOption:
    """One generated option of ``tnborn train``.

    Attributes
    ----------
    key : str
        TOML key; the flag is ``--key`` with ``-`` for ``_``.
    field : str
        The settings field it sets.
    trainers : tuple of str
        The trainers (``sweep``, ``gradient``) whose settings have the field.
    metavar : str
        Placeholder in the help.
    help : str
        Help text with the default(s).
    convert : callable
        ``convert(value, where)``: the field's value from a string or a TOML value.
    """

    key: str
    field: str
    trainers: tuple[str, ...]
    metavar: str
    help: str
    convert: Callable[[Any, str], Any]


def _show(value: Any) -> str:
    return "none" if value is None else f"{value:g}" if isinstance(value, float) else str(value)


_UNIT = {"sweep": "loop", "gradient": "epoch"}


def _clean(text: str) -> str:
    """A docstring entry as flag help: no schedule marker, no final period, lower-case start."""
    for marker in (" (per loop)", " (per epoch)"):
        text = text.replace(marker, "")
    text = text.rstrip(".")
    return text[:1].lower() + text[1:] if text[1:2].islower() else text


def _help(name: str, owners: list[tuple[str, type[Settings]]]) -> str:
    texts = {kind: _clean(cls.help()[name]) for kind, cls in owners}
    firsts = {kind: t.split(". ")[0] for kind, t in texts.items()}
    if len(set(texts.values())) == 1:
        text = next(iter(texts.values()))
    elif len(set(firsts.values())) == 1:
        text = next(iter(firsts.values()))
    else:
        text = "; ".join(f"{kind} trainer: {t}" for kind, t in firsts.items())
    defaults = {kind: cls.default(name) for kind, cls in owners}
    if len(set(map(_show, defaults.values()))) == 1:
        text += f" (default {_show(next(iter(defaults.values())))})"
    else:
        text += " (default " + ", ".join(f"{_show(v)} with the {kind} trainer" for kind, v in defaults.items()) + ")"
    units = [_UNIT[kind] for kind, cls in owners if name in cls.schedulable]
    if units:
        text += f"; per {' or '.join(units)}: comma-separated values, the last one kept"
    return text.replace("%", "%%")  # argparse formats help strings with %


def setting_options() -> dict[str, SettingOption]:
    """The generated options, keyed by TOML key, in field order.

    Returns
    -------
    dict
        Key -> :class:`SettingOption`.
    """
    owners: dict[str, list[tuple[str, type[Settings]]]] = {}
    for kind, cls in TRAINER_SETTINGS.items():
        for f in fields(cls):
            if f.name not in RUN_FIELDS:
                owners.setdefault(f.name, []).append((kind, cls))
    out: dict[str, SettingOption] = {}
    for name, where in owners.items():
        specs = {(cls.flag_name(name), cls.spec(name)["kind"], cls.spec(name)["metavar"]) for _, cls in where}
        if len(specs) != 1:  # one option, so one spelling and one kind of value
            raise TypeError(f"settings field {name!r} is declared differently by {[k for k, _ in where]}")
        key, _kind, metavar = specs.pop()
        cls = where[0][1]
        out[key] = SettingOption(
            key=key, field=name, trainers=tuple(k for k, _ in where), metavar=metavar,
            help=_help(name, where),
            convert=lambda value, label, _cls=cls, _name=name: _cls.parse(_name, value, label))
    return out


def trainer_keys(kind: str) -> dict[str, str]:
    """Option key -> settings field, for the trainer ``kind`` (run fields included).

    Parameters
    ----------
    kind : {'sweep', 'gradient'}
        The trainer.

    Returns
    -------
    dict
        E.g. ``{"lr": "lr", "steps": "descent_steps", ..., "seed": "seed"}``.
    """
    keys = {opt.key: opt.field for opt in setting_options().values() if kind in opt.trainers}
    keys.update({name: name for name in RUN_FIELDS if name in TRAINER_SETTINGS[kind].keys()})
    return keys


def only_for() -> dict[str, tuple[str, ...]]:
    """Options that only one trainer reads (given with the other trainer they are an error).

    Returns
    -------
    dict
        Trainer name -> option keys.
    """
    opts = setting_options().values()
    return {kind: tuple(o.key for o in opts if o.trainers == (kind,)) + _FIT_OPTIONS[kind]
            for kind in TRAINER_SETTINGS}


def flag_of_fields() -> dict[str, str]:
    """Settings field -> its command-line flag, for translating library messages.

    Returns
    -------
    dict
        E.g. ``{"descent_steps": "--steps", "max_bond": "--max-bond", ...}``.
    """
    out = {opt.field: "--" + opt.key.replace("_", "-") for opt in setting_options().values()}
    out.update({name: "--" + name.replace("_", "-") for name in RUN_FIELDS})
    return out
