"""The PyTorch reference for benchmarks/throughput.py: denoising-diffusion-pytorch, same config.

Runs in its own virtual environment; torch is never a dependency of jaxdiff:

    python3 -m venv /work/torchvenv
    /work/torchvenv/bin/pip install /opt/wheels/torch*.whl scipy einops tqdm pillow packaging numpy
    /work/torchvenv/bin/pip install --no-deps denoising-diffusion-pytorch==2.3.4 ema-pytorch
    /work/torchvenv/bin/python benchmarks/torch_reference.py --dim 32 --dim_mults 1,2,2 \
        --image_size 28 --channels 1 --batch 64 --steps 20 --warmup 3 --sample_steps 10

The measured work matches throughput.py's: a train step is GaussianDiffusion's loss (forward),
backward, gradient-norm clipping at 1, an Adam step and an EMA update of the parameters (as
jaxdiff's train step does); sampling is `GaussianDiffusion.ddim_sample` with `--sample_steps`
steps (one Unet evaluation per image and step). Prints one JSON line with the same field names.

`--package_dir` puts another unpacked release first on sys.path (for example 1.11.1, the last with
GroupNorm Blocks, to compare with jaxdiff's default `resnet_block_groups=8`; 2.x uses RMSNorm).
"""

from __future__ import annotations

import argparse
import importlib.machinery
import json
import os
import statistics
import sys
import time
import types

from bench_common import (add_shared_args, cpu_busy_seconds, cpu_model, others_cpu_share,
                          parse)

os.environ.setdefault("TQDM_DISABLE", "1")  # ddim_sample wraps its loop in tqdm


def _stub_module(name: str, **attributes) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__spec__ = importlib.machinery.ModuleSpec(name, None)
    module.__dict__.update(attributes)
    sys.modules[name] = module
    return module


def _unavailable(name: str):
    def fail(*args, **kwargs):
        raise NotImplementedError(f"{name} is a stub in benchmarks/torch_reference.py")
    return fail


def install_import_stubs() -> None:
    """Stand-ins for packages that denoising_diffusion_pytorch imports at module level but only
    its Trainer and FID code use: torchvision (no wheel here), accelerate, pytorch_fid."""
    if "torchvision" not in sys.modules:
        torchvision = _stub_module("torchvision")
        torchvision.transforms = _stub_module("torchvision.transforms")
        torchvision.utils = _stub_module("torchvision.utils")
    if "accelerate" not in sys.modules:
        _stub_module("accelerate", Accelerator=_unavailable("accelerate.Accelerator"))
    if "pytorch_fid" not in sys.modules:
        _stub_module("pytorch_fid")
        _stub_module("pytorch_fid.inception", InceptionV3=_unavailable("InceptionV3"))
        _stub_module("pytorch_fid.fid_score", calculate_frechet_distance=_unavailable(
            "calculate_frechet_distance"))


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_shared_args(parser, dtype_help="bfloat16 runs the step under autocast (CPU or CUDA)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    parser.add_argument("--device", default="cpu", help="torch device: cpu or cuda")
    parser.add_argument("--package_dir", default=None,
                        help="directory holding another denoising_diffusion_pytorch release")
    return parse(parser, argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.package_dir:
        sys.path.insert(0, args.package_dir)
    install_import_stubs()
    import torch
    from torch.utils.flop_counter import FlopCounterMode
    from denoising_diffusion_pytorch import GaussianDiffusion, Unet
    from denoising_diffusion_pytorch.version import __version__

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    model = Unet(dim=args.dim, dim_mults=args.dim_mults, channels=args.channels)
    diffusion = GaussianDiffusion(model, image_size=args.image_size, timesteps=1000,
                                  sampling_timesteps=args.sample_steps, objective=args.objective,
                                  beta_schedule="cosine").to(args.device)
    device_type = torch.device(args.device).type
    params = [p for p in diffusion.parameters() if p.requires_grad]
    ema_params = [p.detach().clone() for p in params]
    optimizer = torch.optim.Adam(params, lr=1e-4)
    autocast = torch.autocast(device_type, dtype=torch.bfloat16,
                              enabled=args.dtype == "bfloat16")
    shape = (args.batch, args.channels, args.image_size, args.image_size)
    # auto_normalize: GaussianDiffusion takes images in [0, 1].
    batches = [torch.rand(shape, device=args.device) for _ in range(2)]

    def synchronize():
        if device_type == "cuda":
            torch.cuda.synchronize()

    def train_step(x):
        with autocast:
            loss = diffusion(x)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        with torch.no_grad():
            torch._foreach_lerp_(ema_params, params, 1.0 - 0.9999)
        return loss

    diffusion.train()
    start = time.perf_counter()
    train_step(batches[0])
    synchronize()
    first_step_s = time.perf_counter() - start
    with FlopCounterMode(display=False) as counter:
        train_step(batches[1])
    train_flops = counter.get_total_flops()
    for i in range(args.warmup):
        train_step(batches[i % 2])
    train_rates, cpu_s, others = [], [], []
    for _ in range(args.repeats):
        start, start_cpu, start_busy = time.perf_counter(), time.process_time(), cpu_busy_seconds()
        for i in range(args.steps):
            loss = train_step(batches[i % 2])
        loss = float(loss.detach())  # reads the value: waits for the queued device work
        wall, own = time.perf_counter() - start, time.process_time() - start_cpu
        train_rates.append(args.steps * args.batch / wall)
        cpu_s.append(own / args.steps)
        others.append(others_cpu_share(start_busy, cpu_busy_seconds(), own, wall))

    diffusion.eval()

    def sample():
        with autocast:
            return diffusion.sample(batch_size=args.batch)

    assert diffusion.is_ddim_sampling
    start = time.perf_counter()
    sample()
    synchronize()
    first_sample_s = time.perf_counter() - start
    sample_rates, sample_others = [], []
    for _ in range(args.repeats):
        start, start_cpu, start_busy = time.perf_counter(), time.process_time(), cpu_busy_seconds()
        for _ in range(args.sample_calls):
            samples = sample()
        synchronize()
        wall = time.perf_counter() - start
        sample_rates.append(args.sample_calls * args.batch * args.sample_steps / wall)
        sample_others.append(others_cpu_share(start_busy, cpu_busy_seconds(),
                                              time.process_time() - start_cpu, wall))
    if not (bool(torch.isfinite(samples).all()) and torch.isfinite(torch.tensor(loss))):
        raise FloatingPointError("non-finite loss or samples")

    train_img_per_s = statistics.median(train_rates)
    step_s = args.batch / train_img_per_s
    result = {
        "framework": "torch", "torch": torch.__version__,
        "denoising_diffusion_pytorch": __version__,
        "model": "unet", "block_norm": type(model.downs[0][0].block1.norm).__name__,
        "dim": args.dim, "dim_mults": list(args.dim_mults),
        "image_size": args.image_size, "channels": args.channels, "batch": args.batch,
        "dtype": args.dtype, "objective": args.objective,
        "steps": args.steps, "warmup": args.warmup, "repeats": args.repeats,
        "sample_steps": args.sample_steps, "sample_calls": args.sample_calls,
        "params": sum(p.numel() for p in model.parameters()),
        "train_img_per_s": round(train_img_per_s, 2),
        "train_img_per_s_runs": [round(r, 2) for r in train_rates],
        "train_step_ms": round(1e3 * step_s, 2),
        "train_cpu_s_per_step": round(statistics.median(cpu_s), 3),
        "train_others_cpu_share_runs": [None if o is None else round(o, 2) for o in others],
        "sample_img_steps_per_s": round(statistics.median(sample_rates), 2),
        "sample_img_steps_per_s_runs": [round(r, 2) for r in sample_rates],
        "sample_others_cpu_share_runs": [None if o is None else round(o, 2) for o in sample_others],
        "compile_s": 0.0,  # eager
        "first_step_s": round(first_step_s, 3), "first_sample_s": round(first_sample_s, 3),
        "train_flops_per_step": train_flops,
        "train_tflop_per_s": round(train_flops / step_s / 1e12, 4),
        "device_kind": (torch.cuda.get_device_name() if device_type == "cuda" else "cpu"),
        "device_count": 1, "threads": torch.get_num_threads(),
        "cpu_model": cpu_model(), "cpu_count": os.cpu_count(),
        "loadavg_1m": round(os.getloadavg()[0], 2),
    }
    print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    main()
