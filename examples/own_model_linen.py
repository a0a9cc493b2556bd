"""Your own Flax Linen denoiser and data, trained with jaxdiff's train step, saved, restored and
sampled (the model, the data and the loop are yours).

    python examples/own_model_linen.py                          # 2-D points made up below
    python examples/own_model_linen.py --data points.npy --steps 3000 --out samples.npy
"""

import argparse
import functools
import tempfile

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

import jaxdiff
from jaxdiff.checkpoint import Checkpointer
from jaxdiff.training import create_train_state, make_optimizer, make_train_step


class Denoiser(nn.Module):
    """Predicts the noise eps in x_t [B, D] at integer times t [B]."""

    hidden: int = 128

    @nn.compact
    def __call__(self, x, t):
        # Sinusoidal time features (Vaswani et al. 2017), frequencies 1 ... 1/1000.
        frequencies = jnp.exp(-jnp.log(1000.0) * jnp.linspace(0.0, 1.0, 16))
        angles = t.astype(jnp.float32)[:, None] * frequencies[None, :]
        h = jnp.concatenate([x, jnp.sin(angles), jnp.cos(angles)], axis=-1)
        for _ in range(3):
            h = nn.silu(nn.Dense(self.hidden)(h))
        return nn.Dense(x.shape[-1])(h)


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
    # Train on standardised data (zero mean, unit variance); map samples back at the end.
    mean, std = data.mean(0), data.std(0)
    z = (data - mean) / std

    model = Denoiser()
    schedule = jaxdiff.make_schedule("linear", timesteps=1000)
    optimizer = make_optimizer(2e-3, warmup_steps=100)

    def init_state(seed):
        params = model.init(jax.random.key(seed), z[:1], jnp.zeros((1,), jnp.int32))
        return create_train_state(params, optimizer, jax.random.key(seed + 1))

    # EMA of the weights, skipping of non-finite steps and donation of the state are built in.
    train_step = make_train_step(model.apply, optimizer, schedule, ema_decay=0.995)
    state = init_state(0)
    for step in range(1, args.steps + 1):
        batch = {"x": z[rng.integers(0, len(z), 256)]}
        state, metrics = train_step(state, batch)  # the old `state` is donated: keep the new one
        if step % 500 == 0 or step == args.steps:
            print(f"step {step}: loss {float(metrics['loss']):.4f}")

    workdir = args.workdir or tempfile.mkdtemp()
    checkpointer = Checkpointer(workdir)
    checkpointer.save(args.steps, state)
    checkpointer.wait()  # saves are asynchronous
    # Restore as a new process would: jax.eval_shape gives the structure without computing it.
    restored, step = checkpointer.restore_newest_good(jax.eval_shape(init_state, 0))
    checkpointer.close()
    print(f"restored step {step} from {workdir}")

    # Any model function works; partial(model.apply, params) is the Linen one. clip_x0=False:
    # standardised data is not confined to [-1, 1].
    model_fn = functools.partial(model.apply, restored.ema_params)
    samples = jaxdiff.ddim_sample(model_fn, schedule, key=jax.random.key(2),
                                  shape=(4000, z.shape[1]), num_steps=50, clip_x0=False)
    samples = np.asarray(samples) * std + mean
    np.set_printoptions(precision=3, suppress=True)
    print(f"data:    mean {data.mean(0)}  std {data.std(0)}")
    print(f"samples: mean {samples.mean(0)}  std {samples.std(0)}")
    if args.out:
        np.save(args.out, samples)


if __name__ == "__main__":
    main()
