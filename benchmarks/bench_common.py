"""What benchmarks/throughput.py (jax) and benchmarks/torch_reference.py (torch, its own venv)
share: the model / timing flags and the machine-load measurements. Standard library only, so
both environments import it (each script's folder is on sys.path when it runs)."""

from __future__ import annotations

import argparse
import os

OBJECTIVES = ("pred_noise", "pred_x0", "pred_v")


def add_shared_args(parser: argparse.ArgumentParser, dtype_help: str) -> None:
    """The flags both scripts take, with the same defaults, so one command line serves both."""
    parser.add_argument("--dim", type=int, default=32, help="Unet dim / DDPMUnet ch")
    parser.add_argument("--dim_mults", default="1,2,2", help="comma-separated multipliers")
    parser.add_argument("--image_size", type=int, default=28)
    parser.add_argument("--channels", type=int, default=1)
    parser.add_argument("--batch", type=int, default=64, help="global batch (all devices)")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32",
                        help=dtype_help)
    parser.add_argument("--objective", default="pred_noise", choices=OBJECTIVES)
    parser.add_argument("--steps", type=int, default=20, help="timed train steps per repeat")
    parser.add_argument("--warmup", type=int, default=3, help="untimed train steps first")
    parser.add_argument("--sample_steps", type=int, default=10, help="DDIM steps per sample call")
    parser.add_argument("--sample_calls", type=int, default=2, help="timed sample calls per repeat")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)


def parse(parser: argparse.ArgumentParser, argv=None) -> argparse.Namespace:
    """Parse; dim_mults as a tuple; counts that must be positive are checked."""
    args = parser.parse_args(argv)
    try:
        args.dim_mults = tuple(int(m) for m in args.dim_mults.split(","))
    except ValueError:
        parser.error(f"--dim_mults={args.dim_mults!r} must be comma-separated integers")
    for name in ("batch", "steps", "sample_steps", "sample_calls", "repeats"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1")
    return args


def cpu_busy_seconds() -> float | None:
    """CPU seconds all processes have used (user, nice, system, irq, softirq, steal; /proc/stat).
    The share of it that is not this process's measures how much other jobs competed."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    user, nice, system, idle, iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def others_cpu_share(busy_start, busy_end, own_cpu_s: float, wall_s: float) -> float | None:
    """Fraction of the machine's CPU capacity used by other processes over a timed window."""
    if busy_start is None or busy_end is None:
        return None
    return max(0.0, busy_end - busy_start - own_cpu_s) / (wall_s * os.cpu_count())


def cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None
