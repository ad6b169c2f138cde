"""Matrix product state Born machine (Han, Wang, Fan, Wang, Zhang, PRX 8, 031012).

``psi(x) = A_1[x_1] A_2[x_2] ... A_N[x_N]`` on an open chain, held in a quimb
:class:`~quimb.tensor.MatrixProductState` with torch arrays. Nodes are the
site numbers ``0 .. N-1``; variable ``i`` lives on site ``i``.

Fast exact paths over the generic ones of :class:`~tnborn.interface.BornMachine`:
left-to-right log-amplitudes with per-site rescaling, ``log Z`` from the
canonical centre, and a zipper sampler (unconditional and conditional) in
right-canonical form.

:mod:`~tnborn.geometries.mps.machine` holds the class and its constructor,
:mod:`~tnborn.geometries.mps.chain` the batched torch kernels of the chain
(checked against brute-force enumeration and the generic paths by the tests).
"""

from .machine import MPSBornMachine, random_mps_arrays

__all__ = ["MPSBornMachine", "random_mps_arrays"]
