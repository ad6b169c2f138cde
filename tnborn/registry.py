"""Registry of Born machine geometries, looked up by name.

A geometry module decorates its class with :func:`register_geometry`; the
trainer, checkpoints and command line find it again by name, so adding a
geometry is one module, one import line in :mod:`tnborn.geometries` and one
test file.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, TypeVar

from .errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from .interface import BornMachine

__all__ = ["register_geometry", "get_geometry", "available_geometries"]

_GEOMETRIES: dict[str, type] = {}
T = TypeVar("T", bound=type)


def register_geometry(name: str) -> Callable[[T], T]:
    """Class decorator registering a :class:`~tnborn.interface.BornMachine` subclass.

    Parameters
    ----------
    name : str
        The geometry's name (``"mps"``, ``"tree"`` ...); stored in checkpoints.

    Returns
    -------
    callable
        The decorator, which returns the class unchanged.
    """

    def decorator(cls: T) -> T:
        if name in _GEOMETRIES and _GEOMETRIES[name] is not cls:
            raise ConfigError(f"geometry {name!r} is already registered by {_GEOMETRIES[name].__name__}")
        cls.geometry = name
        _GEOMETRIES[name] = cls
        return cls

    return decorator


def get_geometry(name: str) -> type["BornMachine"]:
    """Return the class registered under ``name``.

    Parameters
    ----------
    name : str
        A registered geometry name.

    Returns
    -------
    type
        The :class:`~tnborn.interface.BornMachine` subclass.

    Raises
    ------
    ConfigError
        If no geometry of that name is registered.
    """
    from . import geometries  # noqa: F401  (registers the built-in geometries)

    try:
        return _GEOMETRIES[name]
    except KeyError:
        raise ConfigError(
            f"unknown geometry {name!r}; registered geometries: {', '.join(sorted(_GEOMETRIES))}"
        ) from None


def available_geometries() -> list[str]:
    """Names of all registered geometries.

    Returns
    -------
    list of str
        Sorted names.
    """
    from . import geometries  # noqa: F401

    return sorted(_GEOMETRIES)
