"""Checks that need several devices: run by tests/test_sharding.py in a subprocess with
XLA_FLAGS=--xla_force_host_platform_device_count=N (the flag must be set before JAX starts).

    python tests/sharding_checks.py <check> [args...]

Each check prints one JSON line with its measurements; the test asserts on them.
"""

import functools
import json
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from jaxdiff import ddim_sample, make_schedule, sharding  # noqa: E402
from jaxdiff.checkpoint import Checkpointer  # noqa: E402
from jaxdiff.losses import diffusion_loss  # noqa: E402
from jaxdiff.models import MLPDenoiser  # noqa: E402
from jaxdiff.models.unet import Unet  # noqa: E402
from jaxdiff.training import create_train_state, make_optimizer, make_train_step  # noqa: E402


def _setup(model_name):
    if model_name == "unet":
        model = Unet(dim=8, dim_mults=(1, 2), channels=1, resnet_block_groups=4)
        x = np.random.default_rng(0).uniform(-1, 1, (16, 8, 8, 1)).astype(np.float32)
    else:
        model = MLPDenoiser(hidden=32, depth=2, time_dim=16)
        x = np.random.default_rng(0).normal(size=(32, 2)).astype(np.float32)
    params = model.init(jax.random.key(0), jnp.asarray(x[:1]), jnp.zeros((1,), jnp.int32))
    optimizer = make_optimizer(1e-2, warmup_steps=2)
    state = create_train_state(params, optimizer, jax.random.key(1))
    schedule = make_schedule("cosine", timesteps=50)
    return model, optimizer, schedule, state, x


def max_difference(a, b):
    return max(float(np.max(np.abs(np.asarray(u, np.float64) - np.asarray(v, np.float64))))
               for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))


def train_equivalence(model_name="mlp", steps="3", per_call="1"):
    """k sharded steps on all devices vs the same steps on one device, same global batches."""
    steps, per_call = int(steps), int(per_call)
    model, optimizer, schedule, state, x = _setup(model_name)
    kwargs = dict(loss_kwargs={"objective": "pred_noise"}, ema_decay=0.9)
    batches = [{"x": np.roll(x, i, axis=0)} for i in range(steps)]

    single = make_train_step(model.apply, optimizer, schedule, **kwargs)
    one = jax.tree.map(lambda a: jnp.array(a, copy=True), state)  # the step donates its input
    for batch in batches:
        one, _ = single(one, batch)

    mesh = sharding.make_mesh()
    step = make_train_step(model.apply, optimizer, schedule, mesh=mesh, steps_per_call=per_call,
                           **kwargs)
    many = sharding.put_replicated(state, mesh)
    for start in range(0, steps, per_call):
        chunk = batches[start:start + per_call]
        batch = chunk[0] if per_call == 1 else {"x": np.stack([b["x"] for b in chunk])}
        many, _ = step(many, sharding.global_batch(batch, mesh, stacked=per_call > 1))
    spec = many.params["params"][next(iter(many.params["params"]))]
    leaf = jax.tree.leaves(spec)[0]
    print(json.dumps({
        "devices": jax.device_count(),
        "params_max_abs_diff": max_difference(one.params, many.params),
        "ema_max_abs_diff": max_difference(one.ema_params, many.ema_params),
        "param_scale": max(float(np.max(np.abs(np.asarray(p)))) for p in
                           jax.tree.leaves(one.params)),
        "step": int(many.step),
        "replicated": bool(leaf.sharding.is_fully_replicated),
    }))


def noise_per_device():
    """The loss's noise for a batch of identical examples: every device's slice differs, and the
    sharded draw equals the unsharded one."""
    mesh = sharding.make_mesh()
    schedule = make_schedule("linear", timesteps=10)
    x = jnp.ones((jax.device_count() * 2, 3))
    captured = {}

    def loss(x, key):
        def model_fn(x_t, t):
            return x_t  # the loss then measures the noise itself
        _, per_example = diffusion_loss(model_fn, schedule, x, key, t=jnp.zeros(len(x), jnp.int32))
        return per_example

    key = jax.random.key(3)
    sharded_x = jax.device_put(x, sharding.batch_sharding(mesh))
    per_example = jax.jit(loss)(sharded_x, key)
    captured["unsharded"] = np.asarray(jax.jit(loss)(jax.device_put(x, jax.devices()[0]), key))
    shards = [np.asarray(s.data) for s in per_example.addressable_shards]
    print(json.dumps({
        "num_shards": len(shards),
        "distinct_shards": len({s.tobytes() for s in shards}),
        "distinct_examples": len(set(np.asarray(per_example).round(6).tolist())),
        "equals_unsharded": bool(np.allclose(np.asarray(per_example), captured["unsharded"],
                                             rtol=1e-6, atol=1e-6)),
    }))


def save(workdir):
    """Train 2 steps on all devices and save the sharded (replicated) state."""
    model, optimizer, schedule, state, x = _setup("mlp")
    mesh = sharding.make_mesh()
    step = make_train_step(model.apply, optimizer, schedule, loss_kwargs={}, ema_decay=0.9,
                           mesh=mesh)
    state = sharding.put_replicated(state, mesh)
    for _ in range(2):
        state, _ = step(state, sharding.global_batch({"x": x}, mesh))
    checkpointer = Checkpointer(workdir)
    checkpointer.save(2, state)
    checkpointer.wait()
    checkpointer.close()
    np.savez(os.path.join(workdir, "expected.npz"),
             *[np.asarray(leaf) for leaf in jax.tree.leaves(state)])
    print(json.dumps({"devices": jax.device_count(), "saved": 2}))


def restore(workdir):
    """Restore onto this process's (different) device count and compare with the saved values."""
    model, optimizer, schedule, state, x = _setup("mlp")
    mesh = sharding.make_mesh()
    target = sharding.put_replicated(state, mesh)
    checkpointer = Checkpointer(workdir)
    restored = checkpointer.restore(target, 2)
    checkpointer.close()
    expected = np.load(os.path.join(workdir, "expected.npz"))
    leaves = jax.tree.leaves(restored)
    difference = max(float(np.max(np.abs(np.asarray(leaf, np.float64) - expected[f"arr_{i}"])))
                     if np.asarray(leaf).size else 0.0 for i, leaf in enumerate(leaves))
    devices = {d.id for leaf in leaves for d in leaf.sharding.device_set}
    print(json.dumps({"devices": jax.device_count(), "max_abs_diff": difference,
                      "restored_step": int(restored.step), "on_devices": len(devices)}))


def sampling():
    """A batch of samples split over all devices in one compiled call equals the unsharded one."""
    model, _, schedule, state, x = _setup("mlp")
    model_fn = functools.partial(model.apply, state.params)
    mesh = sharding.make_mesh()
    shape = (4 * jax.device_count(), 2)
    x_T = sharding.batch_noise(jax.random.key(5), shape, mesh)
    sharded = ddim_sample(functools.partial(model.apply, sharding.put_replicated(state.params,
                                                                                  mesh)),
                          schedule, key=jax.random.key(6), shape=shape, num_steps=10, eta=1.0,
                          x_T=x_T)
    plain = ddim_sample(model_fn, schedule, key=jax.random.key(6), shape=shape, num_steps=10,
                        eta=1.0, x_T=jax.device_put(np.asarray(x_T), jax.devices()[0]))
    print(json.dumps({
        "num_shards": len(sharded.addressable_shards),
        "max_abs_diff": float(np.max(np.abs(np.asarray(sharded) - np.asarray(plain)))),
    }))


def run_sampling(workdir):
    """`Run.sample` of a train.py run: split over all devices (the batch padded to a multiple of
    the count) it gives the samples of a single-device call with the same seed."""
    from jaxdiff.experiment import load_run

    run = load_run(workdir)
    seen = []
    to_host = sharding.to_host

    def recording_to_host(tree):
        seen.append(max(len(leaf.sharding.device_set) for leaf in jax.tree.leaves(tree)))
        return to_host(tree)

    sharding.to_host = recording_to_host
    common = dict(seed=3, sampler="ddim", steps=10, eta=1.0)
    spread, path = run.sample(10, return_trajectory=True, **common)
    single = run.sample(10, num_devices=1, **common)
    ddpm = [run.sample(6, seed=4, sampler="ddpm", num_devices=n) for n in (None, 1)]
    print(json.dumps({
        "devices_used": seen, "shape": list(spread.shape), "path_shape": list(path.shape),
        "max_abs_diff": float(np.max(np.abs(spread - single))),
        "ddpm_max_abs_diff": float(np.max(np.abs(ddpm[0] - ddpm[1]))),
        "path_end_matches": bool(np.allclose(path[-1], spread)),
    }))


if __name__ == "__main__":
    check, *arguments = sys.argv[1:]
    globals()[check](*arguments)
