"""Restore a train.py run with plain Orbax (no jaxdiff.checkpoint) and sample its EMA weights.

    python train.py --config toy2d --workdir runs/toy
    python examples/restore_with_orbax.py --workdir runs/toy --num_samples 1000 --out samples.npz

The workdir (README, "Checkpoint layout"): config.json is the config, run.json the data shape
and the codec (data space <-> model space), checkpoints/<step>/default/ an Orbax PyTree of the
train state {step, params, ema_params, opt_state, rng, skipped, skip_streak}.
"""

import argparse
import functools
import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

import jaxdiff
from jaxdiff.data.codecs import codec_from_dict
from jaxdiff.models import build_model


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", required=True, help="a workdir written by train.py")
    parser.add_argument("--step", type=int, help="the checkpoint to read; default: the newest")
    parser.add_argument("--num_samples", type=int, default=1000)
    parser.add_argument("--steps", type=int, help="DDIM steps; default: the config's sample.steps")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="write the samples (data space) to this .npz")
    flags = parser.parse_args()
    workdir = os.path.abspath(flags.workdir)  # Orbax wants absolute paths

    with open(os.path.join(workdir, "config.json")) as handle:
        config = ml_collections.ConfigDict(json.load(handle))
    with open(os.path.join(workdir, "run.json")) as handle:
        run_info = json.load(handle)
    shape = tuple(run_info["data_shape"])  # one example, e.g. [2] for points, [H, W, C] images

    # The structure to restore onto, from the config's model, without computing anything.
    model = build_model(config)
    item = {"ema_params": jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1,) + shape),
                                         jnp.zeros((1,), jnp.int32))}

    # Only the EMA parameters of one step (partial_restore skips the rest of the state), as
    # NumPy arrays (restore_args without shardings), on any device count. Read only: nothing is
    # created, moved or deleted (create and save_interval_steps are what read_only sets anyway;
    # giving them spares two warnings).
    options = ocp.CheckpointManagerOptions(read_only=True, create=False, save_interval_steps=0)
    with ocp.CheckpointManager(os.path.join(workdir, "checkpoints"), options=options) as manager:
        step = manager.latest_step() if flags.step is None else flags.step
        restored = manager.restore(step, args=ocp.args.PyTreeRestore(
            item, restore_args=ocp.checkpoint_utils.construct_restore_args(item),
            partial_restore=True))
    ema_params = restored["ema_params"]
    print(f"restored the EMA parameters of step {step} "
          f"({sum(a.size for a in jax.tree.leaves(ema_params)):,} numbers)")

    # Sample in model space with the config's diffusion settings (a class-conditional model
    # samples its null class here; pass cond={"labels": ...} for classes).
    schedule = jaxdiff.make_schedule(config.diffusion.schedule, config.diffusion.timesteps)
    x = jaxdiff.ddim_sample(
        functools.partial(model.apply, ema_params), schedule, key=jax.random.key(flags.seed),
        shape=(flags.num_samples,) + shape, num_steps=flags.steps or config.sample.steps,
        eta=config.sample.eta, objective=config.diffusion.objective,
        clip_x0=config.sample.clip_x0, timestep_spacing=config.sample.timestep_spacing,
        self_condition=config.model.self_condition)

    # Back to data space with run.json's codec: points x = z * std + mean (the training data's
    # statistics), images uint8 = round((x + 1) * 127.5).
    samples = codec_from_dict(run_info["codec"]).decode(np.asarray(x))
    axis = 0 if samples.ndim == 2 else None  # points: per dimension
    np.set_printoptions(precision=3, suppress=True)
    print(f"{len(samples)} samples of shape {samples.shape[1:]} ({samples.dtype}): "
          f"mean {samples.mean(axis)}, std {samples.std(axis)}")
    if flags.out:
        np.savez(flags.out, samples=samples)


if __name__ == "__main__":
    main()
