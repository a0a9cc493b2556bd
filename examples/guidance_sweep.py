"""Classifier-free guidance from Python: train a small class-conditional model with label dropout,
then sample every class at several guidance scales in one batch.

    python examples/guidance_sweep.py --scales 0,1,2,4 --out sweep.npz

The data: 4 classes, one Gaussian blob per class on a circle of radius 2. The sweep prints, per
scale, the share of samples nearest to their own class's centre (chance: 1/4) and their mean
distance to it. Guidance scale s = 0 is unconditional, s = 1 plain conditional sampling, and
s > 1 exaggerates the class (Ho & Salimans 2022): the share goes to 1, and at large s samples
overshoot past their centre, away from the other classes, so the distance grows again.
"""

import argparse
import functools

import jax
import numpy as np

import jaxdiff
from jaxdiff.models import MLPDenoiser
from jaxdiff.training import create_train_state, make_optimizer, make_train_step

NUM_CLASSES = 4
CENTRES = 2.0 * np.array([[1, 0], [0, 1], [-1, 0], [0, -1]], np.float32)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--scales", default="0,0.5,1,2,4", help="guidance scales, comma-separated")
    parser.add_argument("--out", help="write samples, labels, scales and centres to this .npz")
    args = parser.parse_args()
    scales = [float(s) for s in args.scales.split(",")]

    rng = np.random.default_rng(0)
    labels = rng.integers(0, NUM_CLASSES, 4000)
    data = (CENTRES[labels] + 0.7 * rng.standard_normal((4000, 2))).astype(np.float32)

    # jaxdiff's MLP with a label embedding; label `NUM_CLASSES` is the learned null class.
    model = MLPDenoiser(hidden=64, depth=2, time_dim=32, num_classes=NUM_CLASSES)
    params = model.init(jax.random.key(0), data[:1], np.zeros(1, np.int32))
    schedule = jaxdiff.make_schedule("linear", timesteps=1000)
    optimizer = make_optimizer(2e-3, warmup_steps=100)
    # Label dropout: each example's label becomes the null class with probability 0.1, so the one
    # model learns both the conditional and the unconditional prediction.
    loss_kwargs = {"null_cond": {"labels": NUM_CLASSES}, "cond_drop_prob": 0.1}
    train_step = make_train_step(model.apply, optimizer, schedule, loss_kwargs=loss_kwargs,
                                 ema_decay=0.995)
    state = create_train_state(params, optimizer, jax.random.key(1))
    for step in range(1, args.steps + 1):
        rows = rng.integers(0, len(data), 256)
        state, metrics = train_step(state, {"x": data[rows], "labels": labels[rows]})
        if step % 500 == 0 or step == args.steps:
            print(f"step {step}: loss {float(metrics['loss']):.4f}")

    # One batch: every (scale, class) cell with the same 200 noise draws, so along a class only
    # the scale changes. `guidance_scale` is one value per sample and traced: no recompiling.
    per_cell = 200
    cell_scale, cell_label = np.meshgrid(scales, np.arange(NUM_CLASSES), indexing="ij")
    sample_scales = np.repeat(cell_scale.ravel(), per_cell).astype(np.float32)
    sample_labels = np.repeat(cell_label.ravel(), per_cell).astype(np.int32)
    noise = jax.random.normal(jax.random.key(2), (per_cell, 2))
    x_T = np.tile(noise, (len(scales) * NUM_CLASSES, 1))
    samples = jaxdiff.ddim_sample(
        functools.partial(model.apply, state.ema_params), schedule, key=jax.random.key(3),
        shape=x_T.shape, x_T=x_T, num_steps=50, clip_x0=False,  # points: no [-1, 1] clipping
        cond={"labels": sample_labels}, guidance_scale=sample_scales,
        null_cond={"labels": NUM_CLASSES})
    samples = np.asarray(samples)

    nearest = np.argmin(((samples[:, None] - CENTRES[None]) ** 2).sum(-1), axis=1)
    distance = np.linalg.norm(samples - CENTRES[sample_labels], axis=1)
    print("scale  on-class share  mean distance to own centre")
    for scale in scales:
        cell = sample_scales == np.float32(scale)
        print(f"{scale:5g}  {np.mean(nearest[cell] == sample_labels[cell]):14.3f}  "
              f"{distance[cell].mean():27.3f}")
    if args.out:
        np.savez(args.out, samples=samples, labels=sample_labels, scales=sample_scales,
                 centres=CENTRES)


if __name__ == "__main__":
    main()
