"""smplfast's custom ops (torch.library), each with a pure-PyTorch reference of the same maths.

Every op here is registered under the ``smplfast::`` namespace with a fake (meta) implementation
for ``torch.compile`` and an analytic backward that is itself a custom op.
"""
from .rodrigues import rodrigues, rodrigues_reference
from .kinematic_chain import kinematic_chain, kinematic_chain_reference
from .sparse_lbs import sparse_lbs, sparse_lbs_reference, dense_to_sparse_weights

__all__ = [
    "rodrigues",
    "rodrigues_reference",
    "kinematic_chain",
    "kinematic_chain_reference",
    "sparse_lbs",
    "sparse_lbs_reference",
    "dense_to_sparse_weights",
]
