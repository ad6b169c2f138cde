"""Tree tensor network Born machine (Cheng, Wang, Xiang, Zhang, PRB 99, 155131 (2019)).

``psi(x)`` is a tree of tensors whose physical indices sit on the bottom
nodes only; every node has virtual bonds to its children and to its parent.
The network is a quimb :class:`~quimb.tensor.TensorNetwork` of torch arrays,
node ``i`` tagged ``"NODE{i}"``.

Tree layout (a design choice, see :func:`tree_structure`)
---------------------------------------------------------
The tree is *binary*: every internal node has two children, so a node has at
most three virtual bonds and the merged two-node block of the sweep at most
four (``D^4`` entries, as for the paper's tree), not the six of a tree with
four children per node. The pixel hierarchy is nevertheless the 2-D one:
blocks are merged alternately with their horizontal and their vertical
neighbour, so every two levels turn 2x2 blocks into one (28x28 -> 28x14 ->
14x14 -> 14x7 -> 7x7 -> 7x4 -> 4x4 -> ... -> 1). At an odd edge the last
block has no partner and passes up unchanged, which handles any image size.
The first merge creates the *bottom nodes*, each carrying the physical
indices of two neighbouring pixels (one at an odd edge) and a parent bond:
pairs rather than single pixels, because a one-pixel leaf is only a ``d x D``
change of basis that costs a sweep step and teaches nothing. The last merge
joins the two top blocks by one edge instead of creating a root above them:
a root with only two bonds would cap both at their initial dimension (the
split of a block holding it has that other bond alone on one side), so the
later of the two top nodes is the root, with three children. The 1-D
``"binary"`` layout is the same construction on a ``1 x N`` strip.

Nodes are numbered level by level from the bottom, row-major within a level,
so children have smaller numbers than their parent and the root is the last
node. Every node array keeps one fixed index order: child bonds (children
order), physical indices (variable order), parent bond (none at the root).

Fast exact paths over the generic ones of :class:`~tnborn.interface.BornMachine`:
leaves-to-root log-amplitudes with per-node rescaling, ``log Z`` from the
canonical centre, and a root-down sampler (unconditional and conditional) in
the root-centred canonical form.
"""

from .machine import TreeBornMachine, random_tree_arrays
from .structure import TreeStructure, tree_structure

__all__ = ["TreeBornMachine", "TreeStructure", "tree_structure", "random_tree_arrays"]
