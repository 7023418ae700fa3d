"""Data-parallel runs with ``torch.distributed`` (torchrun): sharded image encoding, partition-parallel training.

Importing this package does not import torch; see :mod:`stmm_core.distributed.context`.
"""
