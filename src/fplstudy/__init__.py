"""fplstudy: how should N edge nodes split the training of one network, and what does it cost?

Really trains every parallelism configuration (data parallel, model parallel, split learning,
split-federated and flexible parallel learning, FPL) with PyTorch, keeps a per-node cost ledger,
and sweeps configurations with DVC and papermill. See DESIGN.md for the vocabulary.
"""

__version__ = "0.1.0"
