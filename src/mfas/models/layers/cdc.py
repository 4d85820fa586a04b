"""Central difference convolution (Yu et al., CVPR 2020), used by MM-CDCN's branches and MMDG's U-Adapters.

y = sum_n w(p_n) x(p0 + p_n) - theta * x(p0) * sum_n w(p_n): a vanilla convolution blended with one over the
differences to the centre pixel, which responds to fine texture (moire, print dots) rather than intensity.
theta = 0 is a plain convolution; theta = 1 the pure difference.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class CDConv2d(nn.Conv2d):
    """A ``Conv2d`` (same arguments, plus ``theta``) computing the central difference convolution above.
    Input (B, C_in, H, W) -> (B, C_out, H', W')."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
                 padding: int = 1, bias: bool = False, theta: float = 0.7, groups: int = 1):
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=bias,
                         groups=groups)
        if not 0.0 <= theta <= 1.0:
            raise ValueError(f"theta must be in [0, 1], got {theta!r}")
        self.theta = float(theta)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = super().forward(x)
        if self.theta == 0.0:
            return out
        # the centre term as a 1x1 convolution with the kernel's sum: the same stride, no padding offset
        centre = F.conv2d(x, self.weight.sum(dim=(2, 3), keepdim=True), stride=self.stride, padding=0,
                          groups=self.groups)
        if centre.shape[-2:] != out.shape[-2:]:  # padding other than "same": crop the centre grid to fit
            dh, dw = (centre.shape[-2] - out.shape[-2]) // 2, (centre.shape[-1] - out.shape[-1]) // 2
            centre = centre[..., dh:dh + out.shape[-2], dw:dw + out.shape[-1]]
        return out - self.theta * centre
