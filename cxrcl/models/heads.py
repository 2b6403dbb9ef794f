"""Projection heads (lightly's, as thin wrappers with our defaults).

Our choice: batch norm in the head is off by default. With it on, each DDP rank normalises with
its own batch statistics (unless converted to SyncBatchNorm), which breaks the "W processes ==
one process on the concatenated batch" property that the gathered InfoNCE guarantees.
"""

from __future__ import annotations

from lightly.models.modules.heads import SimCLRProjectionHead


def projection_head(input_dim: int, hidden_dim: int = 512, output_dim: int = 128,
                    num_layers: int = 2, batch_norm: bool = False) -> SimCLRProjectionHead:
    """Linear -> [BN] -> ReLU -> ... -> Linear (SimCLR v1 with 2 layers, v2 with 3)."""
    return SimCLRProjectionHead(input_dim=input_dim, hidden_dim=hidden_dim, output_dim=output_dim,
                                num_layers=num_layers, batch_norm=batch_norm)
