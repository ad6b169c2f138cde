"""Implementations of the ``tnborn`` sub-commands (see :mod:`tnborn.cli`).

Each module imports the heavy libraries (torch, quimb, matplotlib) only when
one of its commands runs.
"""

__all__: list[str] = []
