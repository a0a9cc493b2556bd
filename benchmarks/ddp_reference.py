"""Reference files from denoising-diffusion-pytorch ("ddp") and pytorch-fid, for jaxdiff's tests.

Runs once, in its own virtual environment with torch (never a jaxdiff dependency), and does not
import jaxdiff, so the files are independent of the implementation they check:

    python3 -m venv /tmp/dvenv
    /tmp/dvenv/bin/pip install /opt/wheels/torch*.whl numpy scipy einops tqdm pillow packaging
    /tmp/dvenv/bin/pip install --no-deps ema-pytorch==0.8.3 pytorch-fid==0.3.0 torchvision==0.28.0
    /tmp/dvenv/bin/pip install --no-deps --target /tmp/ddp1 denoising-diffusion-pytorch==1.11.1
    /tmp/dvenv/bin/pip install --no-deps --target /tmp/ddp2 denoising-diffusion-pytorch==2.3.4
    /tmp/dvenv/bin/python benchmarks/ddp_reference.py --out tests/data/ddp_reference \
        --ddp1_dir /tmp/ddp1 --ddp2_dir /tmp/ddp2

Versions used for the committed files: torch 2.13.0+cpu, numpy 2.4.6, ema-pytorch 0.8.3,
pytorch-fid 0.3.0, torchvision 0.28.0 (pure-Python modules only, see below), ddp 1.11.1 and
2.3.4. Every file records the versions it was made with (`versions` / `ddp_version`).

The two ddp releases cannot share a process, so the script re-invokes itself once per release
(`--part ddp --package_dir DIR`, the directory put first on sys.path) and once for pytorch-fid
(`--part inception`). ddp imports torchvision, accelerate and pytorch_fid at module level for
its Trainer / FID code only; the ddp parts replace them with the stand-ins of
benchmarks/torch_reference.py (install_import_stubs). The inception part needs the real
torchvision.models.inception (pytorch-fid subclasses InceptionA/C/E): the torchvision 0.28.0
wheel on the index is a CUDA build whose C extension cannot load next to torch+cpu, so
`import torchvision` fails in its _meta_registrations. The inception part therefore registers an
empty package object named "torchvision" whose __path__ is the installed torchvision folder:
submodules (torchvision.models.inception, unchanged upstream code) import from the real files
while torchvision/__init__.py, which loads the C ops, never runs. No class is rewritten.

Writes into --out:

unet_<name>.pt / unet_<name>.npz, random-weight `Unet`s (seeded by the variant's index k with
  torch.manual_seed(k); then every parameter that is still constant at init, i.e. the norm gains
  RMSNorm.g / GroupNorm.weight (ones) and GroupNorm.bias (zeros), gets + 0.1 N(0, 1) from
  torch.Generator seeded 1000 + k; convs, linears, mem_kv, Fourier weights stay as initialised).
  The .pt is `torch.save(model.state_dict())` (float32, torch's default zip format). The .npz
  holds kwargs_json (the Unet kwargs, tuples as lists), ddp_version, x [3, C, H, W] float64
  ~N(0, 1), t [3] int64 (999, a middle value, 0), x_self_cond [3, C, H, W] float64 (self_condition
  only), out64 (the model in float64 on float64 inputs, with torch's default dtype float64 so
  the sinusoidal time embedding is float64 too), out32 (the float32 model on float32 copies of
  x / x_self_cond, default dtype float32), param_count, versions (JSON). Eval mode; times are
  passed as a long tensor, as GaussianDiffusion does. Variants (see VARIANTS for the exact
  kwargs): v1_groupnorm, v1_groups4_selfcond (1.11.1, GroupNorm Blocks), v2_rmsnorm,
  v2_selfcond_learned, v2_fourier_fullattn, v2_theta_outdim, v2_learned_variance (2.3.4,
  RMSNorm Blocks). Dims are kept small (the .pt files are 0.2-1 MB of float32).

param_counts.json: a list of {"package_version", "kwargs", "param_count", "versions"} (sum of
  p.numel() over Unet.parameters()) for Unet(dim=64, dim_mults=(1, 2, 4, 8), channels=3) and
  Unet(dim=32, dim_mults=(1, 2, 2), channels=1), each in 1.11.1 and 2.3.4.

inception.npz: pytorch-fid's InceptionV3([3], resize_input=True, normalize_input=True,
  use_fid_inception=True) whose fid_inception_v3() loads, instead of downloading the FID weight
  file, `inception_reference_weights(the file's name -> shape table, seed)` from
  tests/reference_weights.py (keyed by the weight file's names, e.g.
  "Mixed_5b.branch1x1.conv.weight", as jaxdiff's loader reads them; the unused 1008-way fc is
  zeros) through its own strict load_state_dict; eval mode. Holds images
  [3, 3, 64, 64] float64 in [0, 1] (low-frequency sinusoids + a little noise, clipped),
  features64 [3, 2048] (model.double() on the float64 images), features32 (float32), seed,
  state_dict_names / state_dict_shapes (JSON list of [name, shape]), versions. The forward pass
  resizes to 299 x 299 with F.interpolate(mode="bilinear", align_corners=False), maps x -> 2x - 1,
  and ends with AdaptiveAvgPool2d(1) after Mixed_7c.

ddp1_model-3.pt / ddp2_model-3.pt: tiny trained checkpoints written by the library's own
  `Trainer.save(milestone=3)` (called unbound on a SimpleNamespace with exactly the attributes it
  reads), so they are {"step", "model", "opt", "ema", "scaler", "version"} like a real Trainer's
  model-N.pt: "model" is the GaussianDiffusion state_dict ("model.<Unet key>" plus the schedule
  buffers "betas", "alphas_cumprod", ...), "opt" the Adam state_dict, "ema" the ema_pytorch.EMA
  state_dict ("initted", "step", "online_model.<...>", "ema_model.<...>"), "scaler" None, "step"
  30. Training: GaussianDiffusion(Unet, image_size=8, timesteps=100, sampling_timesteps=10,
  objective, beta_schedule), 30 steps of `loss = diffusion(batch)` (batch 16 from 64 fixed 8x8
  one-channel images in [0, 1]: blobs and stripes), gradient-norm clipping at 1, Adam(lr 1e-3,
  betas (0.9, 0.99)) as the Trainer, and EMA(diffusion, beta=0.9, update_every=1,
  update_after_step=0) updated after every step. Seeds: torch 0, python `random` 0 (ddp's
  self-conditioning coin). 1.11.1: Unet(dim=8, dim_mults=(1, 2), channels=1, attn_heads=2,
  attn_dim_head=16), pred_noise, cosine. 2.3.4: the same Unet with self_condition=True, pred_v,
  sigmoid. (attn_heads / attn_dim_head are reduced from 4 / 32 to keep the files near 1 MB.)

ddp1_ddim.npz / ddp2_ddim.npz: DDIM sampling from the checkpoint's EMA model (ema.ema_model,
  eval): torch.manual_seed(123); x_T = torch.randn(4, 1, 8, 8); torch.manual_seed(123);
  trajectory = ema.ema_model.ddim_sample((4, 1, 8, 8), return_all_timesteps=True).
  ddim_sample's first random draw is `img = torch.randn(shape)`, so its start is x_T. What
  `trajectory` [4, 11, 1, 8, 8] (float32) contains, from ddim_sample's source (same in both
  releases): times = linspace(-1, T - 1, sampling_timesteps + 1) in float32, cast with .int()
  (truncation), reversed; time_pairs = consecutive pairs, here (99, 89), (89, 79), (79, 69),
  ..., (19, 9), (9, -1) (linspace(-1, 99, 11) is exact). imgs = [x_T]; for each
  (time, time_next): model_predictions(img, full((B,), time, long), self_cond,
  clip_x_start=True, rederive_pred_noise=True) gives x_start (the objective's x0 estimate,
  clamped to [-1, 1]) and pred_noise (for pred_noise: re-derived from the clamped x_start and
  img; for pred_x0 / pred_v always derived from the clamped x_start); self_cond is the previous
  step's clamped x_start (None at the first step) when the Unet has self_condition; if
  time_next < 0 the next image is x_start itself, else, with a = alphas_cumprod[time], a' =
  alphas_cumprod[time_next] (float32 buffers), sigma = eta sqrt((1 - a / a') (1 - a') / (1 - a))
  = 0 (eta = ddim_sampling_eta = 0), c = sqrt(1 - a' - sigma^2): img = x_start sqrt(a') +
  c pred_noise + sigma noise (noise = randn_like(img) is drawn at every such step even though
  sigma = 0). The stack of the 11 images (x_T first, the final clamped x_start last) is then
  unnormalized as a whole, (v + 1) / 2 (auto_normalize=True), so trajectory[:, 0] =
  (x_T + 1) / 2 and trajectory[:, -1] lies in [0, 1]. The .npz holds x_T (float32), trajectory,
  unnormalized (True; checked: trajectory[:, 0] == (x_T + 1) / 2), time_pairs [10, 2] int64,
  ddim_sampling_eta, objective, beta_schedule, timesteps, sampling_timesteps, self_condition,
  betas (float64 copy of the float32 `betas` buffer), betas_float64 (the schedule function's
  own float64 output), unet_kwargs_json, versions.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import random
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import torch

os.environ.setdefault("TQDM_DISABLE", "1")  # ddim_sample wraps its loop in tqdm

HERE = Path(__file__).resolve().parent
REPO = HERE.parent

B = 3  # batch of the random-Unet cases

# name -> (ddp major version, Unet kwargs, image size)
VARIANTS = {
    "v1_groupnorm": (1, dict(dim=16, dim_mults=(1, 2), channels=3, resnet_block_groups=8), 16),
    "v1_groups4_selfcond": (1, dict(dim=8, dim_mults=(1, 2, 2), channels=1,
                                    resnet_block_groups=4, self_condition=True, attn_heads=2,
                                    attn_dim_head=16), 8),
    "v2_rmsnorm": (2, dict(dim=8, dim_mults=(1, 2), channels=3), 16),
    "v2_selfcond_learned": (2, dict(dim=8, dim_mults=(1, 2), channels=1, self_condition=True,
                                    learned_sinusoidal_cond=True, learned_sinusoidal_dim=16,
                                    attn_heads=2, attn_dim_head=16), 8),
    "v2_fourier_fullattn": (2, dict(dim=8, dim_mults=(1, 2, 2), channels=2,
                                    random_fourier_features=True, full_attn=(False, True, True),
                                    attn_heads=(2, 2, 4), attn_dim_head=(8, 16, 8),
                                    init_dim=12), 8),
    "v2_theta_outdim": (2, dict(dim=8, dim_mults=(1, 2), channels=3,
                                sinusoidal_pos_emb_theta=1000, out_dim=5, attn_heads=2,
                                attn_dim_head=16), 8),
    "v2_learned_variance": (2, dict(dim=8, dim_mults=(1, 2), channels=1, learned_variance=True), 8),
}

PARAM_COUNT_CASES = [
    (1, dict(dim=64, dim_mults=(1, 2, 4, 8), channels=3)),
    (2, dict(dim=64, dim_mults=(1, 2, 4, 8), channels=3)),
    (1, dict(dim=32, dim_mults=(1, 2, 2), channels=1)),
    (2, dict(dim=32, dim_mults=(1, 2, 2), channels=1)),
]

CHECKPOINTS = {
    1: dict(unet=dict(dim=8, dim_mults=(1, 2), channels=1, attn_heads=2, attn_dim_head=16),
            objective="pred_noise", beta_schedule="cosine"),
    2: dict(unet=dict(dim=8, dim_mults=(1, 2), channels=1, self_condition=True, attn_heads=2,
                      attn_dim_head=16),
            objective="pred_v", beta_schedule="sigmoid"),
}
CKPT_IMAGE_SIZE, CKPT_TIMESTEPS, CKPT_SAMPLING_STEPS = 8, 100, 10
CKPT_TRAIN_STEPS, CKPT_BATCH, CKPT_LR, CKPT_MILESTONE = 30, 16, 1e-3, 3
DDIM_BATCH, DDIM_SEED = 4, 123
INCEPTION_SEED = 0


def _jsonable(kwargs: dict) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in kwargs.items()}


def _versions(**extra) -> dict:
    out = {"torch": torch.__version__, "numpy": np.__version__,
           "python": sys.version.split()[0]}
    out.update(extra)
    return out


def _package_version(name: str) -> str:
    from importlib.metadata import version
    try:
        return version(name)
    except Exception:  # noqa: BLE001
        return "unknown"


# ------------------------------------------------------------------------------------ ddp part

def _import_ddp(package_dir: str):
    sys.path.insert(0, os.path.abspath(package_dir))
    sys.path.insert(0, str(HERE))
    from torch_reference import install_import_stubs  # stand-ins for torchvision & co.
    install_import_stubs()
    import denoising_diffusion_pytorch as ddp
    from denoising_diffusion_pytorch import denoising_diffusion_pytorch as ddp_module
    from denoising_diffusion_pytorch.version import __version__
    assert os.path.abspath(ddp.__file__).startswith(os.path.abspath(package_dir)), ddp.__file__
    return ddp, ddp_module, __version__


def _perturb_constant_params(model: torch.nn.Module, seed: int) -> list[str]:
    gen = torch.Generator().manual_seed(seed)
    changed = []
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.numel() > 0 and bool((p == p.reshape(-1)[0]).all()):
                p.add_(0.1 * torch.randn(p.shape, generator=gen, dtype=p.dtype))
                changed.append(name)
    return changed


def _run_unet(model, x, t, sc):
    with torch.no_grad():
        return model(x, t, sc).numpy()


def write_unet_variant(ddp, version: str, name: str, k: int, kwargs: dict, size: int,
                       out: Path) -> None:
    torch.manual_seed(k)
    model = ddp.Unet(**kwargs)
    changed = _perturb_constant_params(model, 1000 + k)
    still_constant = [n for n, p in model.named_parameters()
                      if p.numel() > 1 and bool((p == p.reshape(-1)[0]).all())]
    assert not still_constant, still_constant
    model.eval()
    torch.save(model.state_dict(), out / f"unet_{name}.pt")

    channels = kwargs["channels"]
    rng = np.random.default_rng(k)
    x = rng.standard_normal((B, channels, size, size))
    t = np.array([999, int(rng.integers(1, 999)), 0], np.int64)
    self_cond = kwargs.get("self_condition", False)
    sc = rng.standard_normal((B, channels, size, size)) if self_cond else None

    out32 = _run_unet(model, torch.from_numpy(x.astype(np.float32)), torch.from_numpy(t),
                      None if sc is None else torch.from_numpy(sc.astype(np.float32)))
    model64 = copy.deepcopy(model).double()
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        out64 = _run_unet(model64, torch.from_numpy(x), torch.from_numpy(t),
                          None if sc is None else torch.from_numpy(sc))
    finally:
        torch.set_default_dtype(previous)
    assert out64.dtype == np.float64 and out32.dtype == np.float32
    assert np.isfinite(out64).all() and np.isfinite(out32).all()
    param_count = sum(p.numel() for p in model.parameters())
    arrays = dict(kwargs_json=json.dumps(_jsonable(kwargs)), ddp_version=version, x=x, t=t,
                  out64=out64, out32=out32, param_count=np.int64(param_count),
                  perturbed_params=json.dumps(changed),
                  versions=json.dumps(_versions(ddp=version)))
    if sc is not None:
        arrays["x_self_cond"] = sc
    np.savez_compressed(out / f"unet_{name}.npz", **arrays)
    diff = float(np.abs(out64 - out32).max())
    print(f"unet_{name}: ddp {version}, {param_count} params, out {out64.shape}, "
          f"|out| max {np.abs(out64).max():.3g}, |out64 - out32| max {diff:.2e}, "
          f"{len(changed)} constant params perturbed", file=sys.stderr)


def _ckpt_images(n: int = 64, size: int = CKPT_IMAGE_SIZE) -> torch.Tensor:
    """Fixed 8x8 one-channel images in [0, 1]: Gaussian blobs and sinusoidal stripes."""
    rng = np.random.default_rng(7)
    yy, xx = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    images = []
    for i in range(n):
        if i % 2 == 0:
            cy, cx = rng.uniform(1.5, size - 2.5, 2)
            r = rng.uniform(1.0, 2.5)
            img = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))
        else:
            theta, period, phase = rng.uniform(0, np.pi), rng.uniform(3, 6), rng.uniform(0, 6.3)
            u = np.cos(theta) * xx + np.sin(theta) * yy
            img = 0.5 + 0.5 * np.sin(2 * np.pi * u / period + phase)
        images.append(np.clip(img, 0, 1)[None])
    return torch.tensor(np.stack(images), dtype=torch.float32)


def write_checkpoint(ddp, ddp_module, version: str, major: int, out: Path) -> None:
    from ema_pytorch import EMA

    spec = CHECKPOINTS[major]
    torch.manual_seed(0)
    random.seed(0)
    unet = ddp.Unet(**spec["unet"])
    diffusion = ddp.GaussianDiffusion(unet, image_size=CKPT_IMAGE_SIZE, timesteps=CKPT_TIMESTEPS,
                                      sampling_timesteps=CKPT_SAMPLING_STEPS,
                                      objective=spec["objective"],
                                      beta_schedule=spec["beta_schedule"])
    opt = torch.optim.Adam(diffusion.parameters(), lr=CKPT_LR, betas=(0.9, 0.99))
    ema = EMA(diffusion, beta=0.9, update_every=1, update_after_step=0)
    data = _ckpt_images()
    diffusion.train()
    losses = []
    for _ in range(CKPT_TRAIN_STEPS):
        idx = torch.randint(0, data.shape[0], (CKPT_BATCH,))
        loss = diffusion(data[idx])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(diffusion.parameters(), 1.0)
        opt.step()
        opt.zero_grad()
        ema.update()
        losses.append(loss.item())

    trainer = types.SimpleNamespace(
        accelerator=types.SimpleNamespace(is_local_main_process=True,
                                          get_state_dict=lambda m: m.state_dict(), scaler=None),
        step=CKPT_TRAIN_STEPS, model=diffusion, opt=opt, ema=ema, results_folder=out)
    ddp_module.Trainer.save(trainer, CKPT_MILESTONE)
    written = out / f"model-{CKPT_MILESTONE}.pt"
    target = out / f"ddp{major}_model-{CKPT_MILESTONE}.pt"
    os.replace(written, target)

    # Online and EMA weights must differ (so a converter that picks the wrong one fails).
    with torch.no_grad():
        online = dict(diffusion.named_parameters())
        ema_gap = max(float((p - online[n]).abs().max())
                      for n, p in ema.ema_model.named_parameters())
    assert ema_gap > 1e-4, ema_gap

    # DDIM trajectory from the EMA model.
    model = ema.ema_model
    model.eval()
    shape = (DDIM_BATCH, 1, CKPT_IMAGE_SIZE, CKPT_IMAGE_SIZE)
    torch.manual_seed(DDIM_SEED)
    x_T = torch.randn(shape)
    torch.manual_seed(DDIM_SEED)
    trajectory = model.ddim_sample(shape, return_all_timesteps=True)
    trajectory = trajectory.detach().clone().numpy()
    assert trajectory.shape == (DDIM_BATCH, CKPT_SAMPLING_STEPS + 1, *shape[1:]), trajectory.shape
    unnormalized = bool(np.allclose(trajectory[:, 0], (x_T.numpy() + 1) / 2, rtol=0, atol=1e-6))
    assert unnormalized, "trajectory[:, 0] is not (x_T + 1) / 2"
    assert trajectory[:, -1].min() >= 0 and trajectory[:, -1].max() <= 1

    # ddim_sample's time pairs, recomputed exactly as in its source.
    times = torch.linspace(-1, model.num_timesteps - 1, steps=model.sampling_timesteps + 1)
    times = list(reversed(times.int().tolist()))
    time_pairs = np.array(list(zip(times[:-1], times[1:])), np.int64)

    schedule_fn = {"linear": ddp_module.linear_beta_schedule,
                   "cosine": ddp_module.cosine_beta_schedule,
                   "sigmoid": ddp_module.sigmoid_beta_schedule}[spec["beta_schedule"]]
    np.savez_compressed(
        out / f"ddp{major}_ddim.npz",
        x_T=x_T.numpy(), trajectory=trajectory, unnormalized=np.bool_(unnormalized),
        time_pairs=time_pairs, ddim_sampling_eta=np.float64(model.ddim_sampling_eta),
        objective=spec["objective"], beta_schedule=spec["beta_schedule"],
        timesteps=np.int64(model.num_timesteps),
        sampling_timesteps=np.int64(model.sampling_timesteps),
        self_condition=np.bool_(model.self_condition),
        betas=model.betas.detach().double().numpy(),
        betas_float64=schedule_fn(CKPT_TIMESTEPS).numpy(),
        unet_kwargs_json=json.dumps(_jsonable(spec["unet"])),
        checkpoint=target.name, train_losses=np.array(losses),
        versions=json.dumps(_versions(ddp=version, ema_pytorch=_package_version("ema-pytorch"))))
    print(f"{target.name}: ddp {version}, {target.stat().st_size} bytes, loss "
          f"{losses[0]:.3f} -> {losses[-1]:.3f}, max |ema - online| {ema_gap:.3g}; "
          f"ddim time pairs {time_pairs.tolist()}", file=sys.stderr)


def ddp_part(args) -> None:
    ddp, ddp_module, version = _import_ddp(args.package_dir)
    major = int(version.split(".")[0])
    out = Path(args.out)
    for k, (name, (variant_major, kwargs, size)) in enumerate(VARIANTS.items()):
        if variant_major == major:
            write_unet_variant(ddp, version, name, k, kwargs, size, out)
    counts = []
    for case_major, kwargs in PARAM_COUNT_CASES:
        if case_major == major:
            model = ddp.Unet(**kwargs)
            counts.append({"package_version": version, "kwargs": _jsonable(kwargs),
                           "param_count": sum(p.numel() for p in model.parameters()),
                           "versions": _versions(ddp=version)})
    write_checkpoint(ddp, ddp_module, version, major, out)
    print(json.dumps(counts))  # last stdout line, read by main()


# ------------------------------------------------------------------------------ inception part

def _import_pytorch_fid():
    """pytorch_fid.inception with the real torchvision.models.inception, without running
    torchvision/__init__.py (it loads C ops that the CUDA wheel cannot provide here)."""
    import importlib.util
    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("torchvision is not installed (pip install --no-deps torchvision)")
    folder = list(spec.submodule_search_locations)[0]
    shell = types.ModuleType("torchvision")
    shell.__path__ = [folder]
    shell.__spec__ = importlib.machinery.ModuleSpec("torchvision", None, is_package=True)
    shell.__spec__.submodule_search_locations = [folder]
    shell.__version__ = _package_version("torchvision")
    sys.modules["torchvision"] = shell
    import pytorch_fid.inception as fid_inception
    import torchvision.models.inception as tv_inception
    return fid_inception, tv_inception


def _inception_images(seed: int = 0, n: int = 3, size: int = 64) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.meshgrid(np.linspace(0, 1, size), np.linspace(0, 1, size), indexing="ij")
    images = np.empty((n, 3, size, size))
    for b in range(n):
        offset = rng.uniform(0.3, 0.7)
        for c in range(3):
            freqs = rng.uniform(0.5, 3.0, size=(3, 2))
            phases = rng.uniform(0, 2 * np.pi, 3)
            v = offset + sum(0.2 * np.sin(2 * np.pi * (freqs[i, 0] * xx + freqs[i, 1] * yy)
                                          + phases[i]) for i in range(3))
            images[b, c] = np.clip(v + 0.05 * rng.standard_normal((size, size)), 0, 1)
    return images


def inception_part(args) -> None:
    fid_inception, tv_inception = _import_pytorch_fid()
    sys.path.insert(0, str(REPO / "tests"))
    from reference_weights import inception_reference_weights

    # The weights are keyed like pytorch-fid's weight file (pt_inception-2015-12-05: torchvision
    # Inception3 names, e.g. "Mixed_5b.branch1x1.conv.weight"), which is what jaxdiff's loader
    # reads, and go in through pytorch-fid's own path: fid_inception_v3() loads whatever
    # load_state_dict_from_url returns with a strict load_state_dict.
    load_url = fid_inception.load_state_dict_from_url
    load_sd = tv_inception.Inception3.load_state_dict
    fid_inception.load_state_dict_from_url = lambda *a, **k: {}
    tv_inception.Inception3.load_state_dict = lambda self, *a, **k: None
    try:
        bare = fid_inception.fid_inception_v3()  # for the file's name -> shape table only
    finally:
        tv_inception.Inception3.load_state_dict = load_sd
    shapes = {k: tuple(v.shape) for k, v in bare.state_dict().items()}
    features = {k: v for k, v in shapes.items() if not k.startswith("fc.")}
    weights = inception_reference_weights(features, seed=INCEPTION_SEED)
    file_weights = {k: torch.from_numpy(v) for k, v in weights.items()}
    for name in shapes:  # the 1008-way classifier: in the file, unused by the pool features
        if name.startswith("fc."):
            file_weights[name] = torch.zeros(shapes[name])
    fid_inception.load_state_dict_from_url = lambda *a, **k: file_weights
    try:
        net = fid_inception.InceptionV3([3], resize_input=True, normalize_input=True,
                                        use_fid_inception=True)
    finally:
        fid_inception.load_state_dict_from_url = load_url
    net.eval()
    shapes = features

    images = _inception_images()
    with torch.no_grad():
        f32 = net(torch.from_numpy(images.astype(np.float32)))[0]
        f64 = copy.deepcopy(net).double()(torch.from_numpy(images))[0]
    f32 = f32.reshape(f32.shape[0], -1).numpy()
    f64 = f64.reshape(f64.shape[0], -1).numpy()
    assert f64.shape == (3, 2048) and np.isfinite(f64).all()
    names = list(shapes)
    np.savez_compressed(
        Path(args.out) / "inception.npz", images=images, features64=f64, features32=f32,
        seed=np.int64(INCEPTION_SEED), state_dict_names=np.array(names),
        state_dict_shapes=json.dumps([[n, list(shapes[n])] for n in names]),
        pytorch_fid_version=_package_version("pytorch-fid"),
        versions=json.dumps(_versions(pytorch_fid=_package_version("pytorch-fid"),
                                      torchvision=_package_version("torchvision"))))
    between = float(np.abs(f64[0] - f64[1]).mean())
    print(f"inception.npz: {len(names)} state_dict entries; features64 mean {f64.mean():.3g}, "
          f"std {f64.std():.3g}, max {f64.max():.3g}, zero fraction {(f64 == 0).mean():.3f}, "
          f"mean |f[0] - f[1]| {between:.3g}, max |f64 - f32| {np.abs(f64 - f32).max():.2e}",
          file=sys.stderr)


# ------------------------------------------------------------------------------------------ main

def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(REPO / "tests" / "data" / "ddp_reference"))
    parser.add_argument("--ddp1_dir", default="/tmp/ddp1", help="unpacked ddp 1.11.1")
    parser.add_argument("--ddp2_dir", default="/tmp/ddp2", help="unpacked ddp 2.3.4")
    parser.add_argument("--part", choices=("ddp", "inception"), default=None,
                        help=argparse.SUPPRESS)
    parser.add_argument("--package_dir", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    torch.set_num_threads(min(8, os.cpu_count() or 1))
    if args.part == "ddp":
        return ddp_part(args)
    if args.part == "inception":
        return inception_part(args)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    counts = []
    for package_dir in (args.ddp1_dir, args.ddp2_dir):
        result = subprocess.run([sys.executable, __file__, "--part", "ddp", "--out", str(out),
                                 "--package_dir", package_dir],
                                check=True, stdout=subprocess.PIPE, text=True)
        counts += json.loads(result.stdout.strip().splitlines()[-1])
    (out / "param_counts.json").write_text(json.dumps(counts, indent=1) + "\n")
    subprocess.run([sys.executable, __file__, "--part", "inception", "--out", str(out)],
                   check=True)
    for path in sorted(out.iterdir()):
        print(f"{path.stat().st_size:>9}  {path}")


if __name__ == "__main__":
    main()
