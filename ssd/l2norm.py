"""Channel-wise L2 normalisation with a learned per-channel scale (ParseNet; SSD's conv4_3)."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["L2Norm"]


class L2Norm(nn.Module):
    """``weight[c] * x[:, c] / (sqrt(sum_c x^2) + eps)`` on an ``[B, C, H, W]`` tensor.

    ``weight`` (key ``L2Norm.weight`` in SSD checkpoints) starts at ``scale`` (20 in SSD).
    The arithmetic is the one ssd.pytorch used, so float32 outputs match it bit for bit.
    Half-precision inputs (autocast) are normalised in float32 and cast back: the sum of
    squares of a ReLU'd conv4_3 map easily exceeds float16's range.
    """

    def __init__(self, n_channels: int = 512, scale: float = 20.0, eps: float = 1e-10) -> None:
        super().__init__()
        self.n_channels = int(n_channels)
        self.gamma = float(scale)
        self.eps = float(eps)
        self.weight = nn.Parameter(torch.empty(self.n_channels))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.constant_(self.weight, self.gamma)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``[B, C, H, W]`` -> same shape and dtype."""
        if x.dim() != 4 or x.shape[1] != self.n_channels:
            raise ValueError(f"L2Norm({self.n_channels}) expects [B, {self.n_channels}, H, W] "
                             f"inputs, got shape {tuple(x.shape)}")
        out_dtype = x.dtype
        if x.dtype in (torch.float16, torch.bfloat16):
            x = x.float()
        norm = x.pow(2).sum(dim=1, keepdim=True).sqrt() + self.eps
        out = self.weight.to(x.dtype)[None, :, None, None] * torch.div(x, norm)
        return out.to(out_dtype)

    def extra_repr(self) -> str:
        return f"{self.n_channels}, scale={self.gamma:g}, eps={self.eps:g}"
