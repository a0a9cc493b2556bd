"""The train step (jaxdiff.training): the label-dropout schedule evaluated inside the compiled
step, and non-finite batches skipped without touching the state."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxdiff
from jaxdiff import losses
from jaxdiff.models import MLPDenoiser
from jaxdiff.schedules import make_schedule
from jaxdiff.training import LinenApply, create_train_state, make_optimizer, make_train_step

from helpers import assert_trees_equal


def test_train_step_evaluates_the_dropout_schedule_once_compiled():
    model = MLPDenoiser(hidden=8, depth=1, time_dim=8, num_classes=3)
    x = jnp.zeros((16, 2))
    params = model.init(jax.random.key(0), x, jnp.zeros((16,), jnp.int32))
    optimizer = make_optimizer(1e-3)
    state = create_train_state(params, optimizer, jax.random.key(1))
    schedule = losses.cond_drop_schedule("linear", 0.1, start=1.0, total_steps=4)
    step = make_train_step(LinenApply(model), optimizer, jaxdiff.make_schedule("linear", 20),
                           loss_kwargs=dict(cond_drop_prob=schedule, null_cond={"labels": 3}),
                           ema_decay=0.9, takes_key=True)
    batch = {"x": np.ones((16, 2), np.float32), "labels": np.arange(16, dtype=np.int32) % 3}
    probabilities = []
    for _ in range(4):
        state, metrics = step(state, batch)
        probabilities.append(float(metrics["cond_drop_prob"]))
    np.testing.assert_allclose(probabilities, [1.0, 0.75, 0.5, 0.25], rtol=1e-6)
    assert step._cache_size() == 1


def _toy_step():
    schedule = jaxdiff.make_schedule("linear", timesteps=10)
    optimizer = make_optimizer(1e-2)

    def apply_fn(params, x, t, train=False, rngs=None):
        return x * params["w"][None, :] + params["b"][None, :]

    params = {"w": jnp.ones((2,)), "b": jnp.zeros((2,))}
    state = create_train_state(params, optimizer, jax.random.key(0))
    step = make_train_step(apply_fn, optimizer, schedule, loss_kwargs={}, ema_decay=0.9)
    return state, step


def test_non_finite_batch_skips_the_update_and_counts_it():
    state, step = _toy_step()
    good = {"x": jnp.ones((8, 2))}
    bad = {"x": jnp.full((8, 2), jnp.nan)}
    state, _ = step(state, good)
    before = jax.device_get(state)
    state, metrics = step(state, bad)
    after = jax.device_get(state)
    assert int(after.step) == 2 and int(after.skipped) == 1 and int(after.skip_streak) == 1
    assert float(metrics["skipped"]) == 1.0
    assert_trees_equal(after.params, before.params)
    assert_trees_equal(after.ema_params, before.ema_params)
    assert_trees_equal(after.opt_state, before.opt_state)
    state, _ = step(state, bad)
    assert int(state.skip_streak) == 2
    state, _ = step(state, good)
    assert int(state.skipped) == 2 and int(state.skip_streak) == 0
    assert np.all(np.isfinite(jax.device_get(state.params)["w"]))


def test_a_non_finite_update_is_skipped_like_a_non_finite_gradient():
    """An optimiser that blows the parameters up (here: to infinity) with a finite loss and
    gradient: the update is skipped, so the state never holds a non-finite value."""
    import optax

    from jaxdiff.training import all_finite, create_train_state, make_train_step

    blow_up = optax.GradientTransformation(
        lambda params: optax.EmptyState(),
        lambda updates, state, params=None: (jax.tree.map(lambda u: u + jnp.inf, updates), state))
    apply_fn = lambda params, x, t, train=False, rngs=None: x * params["w"]  # noqa: E731
    params = {"w": jnp.ones((1, 2), jnp.float32)}
    state = create_train_state(params, blow_up, jax.random.key(0))
    step = make_train_step(apply_fn, blow_up, make_schedule("linear", timesteps=10),
                           loss_kwargs={"objective": "pred_noise"}, ema_decay=0.9)
    batch = {"x": jnp.ones((4, 2), jnp.float32)}
    before = np.asarray(params["w"])  # the step donates the state's buffers
    after, metrics = step(state, batch)
    assert np.isfinite(float(metrics["loss"])) and np.isfinite(float(metrics["grad_norm"]))
    assert int(after.skipped) == 1 and int(after.skip_streak) == 1
    np.testing.assert_array_equal(after.params["w"], before)
    np.testing.assert_array_equal(after.ema_params["w"], before)
    assert bool(all_finite(after))
    assert not bool(all_finite({"a": jnp.array([1.0, jnp.nan]), "step": jnp.int32(3)}))


def _compiled_instruction_count(num_leaves: int) -> int:
    """Instructions in the optimised HLO of the train step of a model with `num_leaves`
    parameter arrays (x * (w_1 + ... + w_n), the sum as one reduction)."""

    def apply_fn(params, x_t, t):
        return x_t * jnp.sum(jnp.stack(list(params.values())), axis=0)[None, :]

    params = {f"w{i:03d}": jnp.ones((3,), jnp.float32) for i in range(num_leaves)}
    optimizer = make_optimizer(1e-3)
    step = make_train_step(apply_fn, optimizer, make_schedule("linear", timesteps=10))
    state = create_train_state(params, optimizer, jax.random.key(0))
    text = step.lower(state, {"x": jnp.ones((4, 3), jnp.float32)}).compile().as_text()
    return sum(1 for line in text.splitlines() if " = " in line)


def test_the_compiled_step_grows_linearly_with_the_number_of_parameter_leaves():
    """The skip-on-non-finite guard must not copy a per-leaf chain into every leaf's update.
    It did, through a stack of per-leaf flags that XLA unrolled into an `and` chain and fused
    into each consumer: 40 -> 80 leaves took the HLO from 22,669 to 69,229 instructions
    (quadratic) and DDPMUnet's compile took 114 s on CPU instead of 20.5 s. Now 10,294 ->
    18,974."""
    small, large = _compiled_instruction_count(40), _compiled_instruction_count(80)
    assert large / small < 2.5, (small, large)


# --- your own model ------------------------------------------------------------------------------

def _linear_apply(params, x_t, t):
    return x_t * params["w"][None, :] + params["b"][None, :]


def test_own_apply_fn_ema_follows_its_recurrence():
    """A plain apply_fn (no train flag, no rngs) trains, and the EMA equals the recurrence
    ema_k = d ema_{k-1} + (1 - d) params_k computed here from the parameters after each step."""
    schedule = make_schedule("linear", timesteps=10)
    optimizer = make_optimizer(1e-2, grad_clip=0.0)
    params = {"w": jnp.zeros((2,)), "b": jnp.zeros((2,))}
    state = create_train_state(params, optimizer, jax.random.key(0))
    step = make_train_step(_linear_apply, optimizer, schedule, ema_decay=0.8, ema_warmup=False)
    x = jax.random.normal(jax.random.key(1), (64, 2))
    ema = {name: np.zeros(2, np.float64) for name in params}
    losses = []
    for _ in range(30):
        state, metrics = step(state, {"x": x})
        losses.append(float(metrics["loss"]))
        for name in ema:
            ema[name] = 0.8 * ema[name] + 0.2 * np.asarray(state.params[name], np.float64)
    for name in ema:
        np.testing.assert_allclose(state.ema_params[name], ema[name], rtol=1e-5, atol=1e-7)
    assert np.mean(losses[-5:]) < np.mean(losses[:5])  # it learns (pred_noise of N(0, I) data)
    assert step._cache_size() == 1


def test_takes_key_passes_a_fresh_key_per_step():
    """With takes_key=True the apply_fn gets `key=`: the keys it sees (reported to the host from
    inside the compiled step) differ from step to step; without takes_key none is passed."""
    schedule = make_schedule("linear", timesteps=10)
    optimizer = make_optimizer(1e-3)
    seen = []

    def apply_fn(params, x_t, t, *, key):
        jax.debug.callback(lambda data: seen.append(np.asarray(data)), jax.random.key_data(key))
        return x_t * params["w"][None, :]

    state = create_train_state({"w": jnp.ones((2,))}, optimizer, jax.random.key(0))
    step = make_train_step(apply_fn, optimizer, schedule, takes_key=True, ema_decay=0.9)
    for _ in range(3):
        state, _ = step(state, {"x": jnp.ones((8, 2))})
    jax.effects_barrier()
    keys = {tuple(k.ravel().tolist()) for k in seen}
    assert len(seen) >= 3 and len(keys) == 3  # one key per step (the gradient pass may repeat it)
    # without takes_key no key is passed: a function that requires one fails to trace
    plain = make_train_step(apply_fn, optimizer, schedule, ema_decay=0.9)
    with pytest.raises(TypeError, match="key"):
        plain(create_train_state({"w": jnp.ones((2,))}, optimizer, jax.random.key(0)),
              {"x": jnp.ones((8, 2))})


def test_own_state_saves_and_restores_with_the_checkpointer(tmp_path):
    from jaxdiff.checkpoint import Checkpointer

    schedule = make_schedule("linear", timesteps=10)
    optimizer = make_optimizer(1e-2)
    state = create_train_state({"w": jnp.ones((2,)), "b": jnp.zeros((2,))}, optimizer,
                               jax.random.key(0))
    step = make_train_step(_linear_apply, optimizer, schedule, ema_decay=0.9)
    for _ in range(3):
        state, _ = step(state, {"x": jnp.ones((8, 2))})
    expected = jax.tree.map(np.asarray, state)
    checkpointer = Checkpointer(str(tmp_path))
    checkpointer.save(3, state)
    checkpointer.wait()
    checkpointer.close()
    template = create_train_state({"w": jnp.zeros((2,)), "b": jnp.zeros((2,))}, optimizer,
                                  jax.random.key(5))
    restored, restored_step = Checkpointer(str(tmp_path), read_only=True).restore_newest_good(
        template)
    assert restored_step == 3
    jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, restored), expected)
