"""The geometry-agnostic Born machine interface: read this module first.

A Born machine is a tensor network ``psi`` with one physical index per
variable; it defines ``P(x) = |psi(x)|^2 / Z`` with ``Z = sum_x |psi(x)|^2``.
Every geometry (matrix product state, tree, PEPS ...) is a subclass of
:class:`BornMachine` holding a quimb tensor network whose arrays are torch
tensors. The network is seen as a graph of *nodes* (hashable keys, one tensor
each) joined by virtual bonds; physical indices hang off some nodes.

The model's structure (nodes, neighbours, bonds, where each variable sits)
is derived from the network (:mod:`tnborn.structure`), never declared. What a
geometry must supply (the abstract methods) is only how to build and rebuild
its network: its construction parameters :meth:`~BornMachine.config` and
:meth:`~BornMachine.from_arrays` (used by checkpoints).

Everything else has an exact generic implementation, written against that
structure, in one module per responsibility (each a base class of
:class:`BornMachine`):

- :mod:`~tnborn.interface.machine`: the network, its derived structure and
  the node accessors (:meth:`~BornMachine.nodes`,
  :meth:`~BornMachine.neighbours`, :meth:`~BornMachine.bond_index` ...);
- :mod:`~tnborn.interface.canonical`: the canonical centre and its one
  owner, QR gauge moves through quimb, the two-site sweep schedule of any
  tree, and the check that notices outside edits of the network;
- :mod:`~tnborn.interface.probability`: log-amplitudes and
  log-probabilities by a log-scaled batched contraction of the network (batch
  as a shared hyper-index, cotengra paths cached per shape) and the log-norm;
- :mod:`~tnborn.interface.sampling`: exact sampling and conditional sampling
  by sequential marginals;
- :mod:`~tnborn.interface.blocks`: the two-site merge and the truncated SVD
  split through quimb.

A geometry overrides a method only where it has a faster exact path, and the
test suite checks the fast path against the generic one.
"""

from ..structure import Node  # noqa: F401  (the node-key type, for annotations)
from .blocks import TwoSiteBlock, TwoSiteMoves
from .canonical import CanonicalForm
from .machine import BornMachine, checked_arrays
from .probability import Probabilities
from .sampling import ExactSampling

__all__ = ["BornMachine", "checked_arrays", "TwoSiteBlock",
           "CanonicalForm", "Probabilities", "ExactSampling", "TwoSiteMoves"]
