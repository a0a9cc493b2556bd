"""Your own Flax NNX denoiser and data, trained with jaxdiff's train step, saved, restored and
sampled. The train step wants a pure `apply_fn(params, x_t, t)`, which `nnx.split` gives; the
samplers take the NNX module itself.

    python examples/own_model_nnx.py                          # 2-D points made up below
    python examples/own_model_nnx.py --data points.npy --steps 3000 --out samples.npy
"""

import argparse
import tempfile

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import jaxdiff
from jaxdiff.checkpoint import Checkpointer
from jaxdiff.training import create_train_state, make_optimizer, make_train_step


class Denoiser(nnx.Module):
    """Predicts the noise eps in x_t [B, D] at integer times t [B]."""

    def __init__(self, dim: int, hidden: int, rngs: nnx.Rngs):
        self.inputs = nnx.Linear(dim + 32, hidden, rngs=rngs)
        self.middle = nnx.Linear(hidden, hidden, rngs=rngs)
        self.last = nnx.Linear(hidden, hidden, rngs=rngs)
        self.outputs = nnx.Linear(hidden, dim, rngs=rngs)

    def __call__(self, x, t):
        # Sinusoidal time features (Vaswani et al. 2017), frequencies 1 ... 1/1000.
        frequencies = jnp.exp(-jnp.log(1000.0) * jnp.linspace(0.0, 1.0, 16))
        angles = t.astype(jnp.float32)[:, None] * frequencies[None, :]
        h = jnp.concatenate([x, jnp.sin(angles), jnp.cos(angles)], axis=-1)
        for layer in (self.inputs, self.middle, self.last):
            h = nnx.silu(layer(h))
        return self.outputs(h)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="a .npy array [N, D]; default: two 2-D Gaussian blobs")
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--workdir", help="a new directory for the checkpoint (default: temporary)")
    parser.add_argument("--out", help="write the samples (data space) to this .npy")
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    if args.data:
        data = np.load(args.data).astype(np.float32)
    else:  # two Gaussian blobs, around (-2, 0) and (2, 0)
        blob = rng.choice([-2.0, 2.0], (4000, 1)) * np.array([1.0, 0.0])
        data = (blob + 0.4 * rng.standard_normal((4000, 2))).astype(np.float32)
    mean, std = data.mean(0), data.std(0)  # train on standardised data
    z = (data - mean) / std

    module = Denoiser(z.shape[1], 128, nnx.Rngs(0))
    graphdef, params = nnx.split(module)  # params: an nnx.State, a pytree of arrays

    def apply_fn(params, x, t):
        return nnx.merge(graphdef, params)(x, t)

    schedule = jaxdiff.make_schedule("linear", timesteps=1000)
    optimizer = make_optimizer(2e-3, warmup_steps=100)
    train_step = make_train_step(apply_fn, optimizer, schedule, ema_decay=0.995)
    state = create_train_state(params, optimizer, jax.random.key(1))
    for step in range(1, args.steps + 1):
        batch = {"x": z[rng.integers(0, len(z), 256)]}
        state, metrics = train_step(state, batch)  # the old `state` is donated: keep the new one
        if step % 500 == 0 or step == args.steps:
            print(f"step {step}: loss {float(metrics['loss']):.4f}")

    workdir = args.workdir or tempfile.mkdtemp()
    checkpointer = Checkpointer(workdir)
    checkpointer.save(args.steps, state)
    checkpointer.wait()  # saves are asynchronous
    # Restore onto the structure of the live state (a new process would rebuild it the same way).
    restored, step = checkpointer.restore_newest_good(jax.eval_shape(lambda: state))
    checkpointer.close()
    print(f"restored step {step} from {workdir}")

    # Put the EMA weights into the module and hand the module to the sampler as it is: its
    # weights are traced, so updating them later gives new samples without recompiling.
    # clip_x0=False: standardised data is not confined to [-1, 1].
    nnx.update(module, restored.ema_params)
    samples = jaxdiff.ddim_sample(module, schedule, key=jax.random.key(2),
                                  shape=(4000, z.shape[1]), num_steps=50, clip_x0=False)
    samples = np.asarray(samples) * std + mean
    np.set_printoptions(precision=3, suppress=True)
    print(f"data:    mean {data.mean(0)}  std {data.std(0)}")
    print(f"samples: mean {samples.mean(0)}  std {samples.std(0)}")
    if args.out:
        np.save(args.out, samples)


if __name__ == "__main__":
    main()
