"""Built-in geometries; importing this package registers them.

To add a geometry, write one module here whose class subclasses
:class:`tnborn.interface.BornMachine` and is decorated with
:func:`tnborn.registry.register_geometry`, then import it below.
"""

from .mps import MPSBornMachine
from .network import NetworkBornMachine, from_quimb
from .peps import PEPSBornMachine
from .tree import TreeBornMachine

__all__ = ["MPSBornMachine", "NetworkBornMachine", "PEPSBornMachine", "TreeBornMachine", "from_quimb"]
