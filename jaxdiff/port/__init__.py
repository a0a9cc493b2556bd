"""Checkpoints from other libraries -> jaxdiff runs.

`python -m jaxdiff.port ddp model-10.pt --workdir W` converts a denoising-diffusion-pytorch
checkpoint (its Trainer's `model-N.pt`, a GaussianDiffusion or a bare Unet state_dict, 1.x or
2.x) into a jaxdiff workdir that `load_run`, sample.py and jaxdiff-likelihood use like any run,
without torch. The tensor mapping lives in `jaxdiff.port.ddp`, the workdir writing in
`jaxdiff.port.workdir`.
"""

from jaxdiff.port.ddp import (DdpCheckpoint, diffusion_settings, infer_unet_kwargs,
                              read_ddp_checkpoint, unet_params)
from jaxdiff.port.workdir import port_ddp_checkpoint

__all__ = ["DdpCheckpoint", "diffusion_settings", "infer_unet_kwargs", "port_ddp_checkpoint",
           "read_ddp_checkpoint", "unet_params"]
