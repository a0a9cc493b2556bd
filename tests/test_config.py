"""Configs (jaxdiff.config): the shipped class-conditional configs validate and build, and
`validate_config` names the offending field of a bad one."""

import functools
import re

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jaxdiff.config import config_warnings, validate_config
from jaxdiff.errors import ConfigError
from jaxdiff.models import build_model
from jaxdiff.train_loop import prepare
from jaxdiff.training import (
    LinenApply,
    build_optimizer,
    build_schedule,
    init_train_state,
    loss_kwargs,
    make_train_step,
)

from helpers import load_config, one_line, set_fields


def test_digits_cond_config_validates_and_builds():
    config = load_config("digits_cond")
    validate_config(config)
    model = build_model(config)
    assert model.num_classes == 10
    kwargs = loss_kwargs(config)
    assert kwargs["null_cond"] == {"labels": 10} and kwargs["cond_drop_prob"] == 0.15
    out = jax.eval_shape(lambda: model.init_with_output(
        jax.random.key(0), jnp.zeros((2, 8, 8, 1)), jnp.zeros((2,), jnp.int32),
        labels=jnp.array([3, 10]))[0])
    assert out.shape == (2, 8, 8, 1)


def test_fashion_mnist_cfg_is_the_seed_recipe_and_reads_mock_data():
    import tensorflow_datasets as tfds

    config = load_config("fashion_mnist_cfg")
    validate_config(config)
    assert (config.diffusion.schedule, config.diffusion.timesteps) == ("linear", 150)
    assert config.sample.guidance_scale == 5.0  # the seed's w
    schedule = loss_kwargs(config)["cond_drop_prob"]
    steps = config.train.steps
    for fraction in (0.0, 0.2, 0.5, 0.95):
        assert float(schedule(int(fraction * steps))) == pytest.approx(
            max(0.1, 1 - int(fraction * steps) / steps), abs=1e-6)
    model = build_model(config)
    assert model.num_classes == 10
    config.train.batch_size = 8
    with tfds.testing.mock_data(num_examples=32):
        source = prepare(config)
        batch = source.batch(0, 8)
    assert source.num_classes == 10 and source.shape == (16, 16, 1)
    assert batch["x"].shape == (8, 16, 16, 1) and batch["labels"].dtype == np.int32
    # the whole train step traces (abstractly: nothing is compiled) with dropout on the labels
    optimizer = build_optimizer(config)
    state = jax.eval_shape(lambda: init_train_state(config, model, optimizer, source.shape))
    step = make_train_step(LinenApply(model), optimizer, build_schedule(config),
                           loss_kwargs=loss_kwargs(config), ema_decay=0.0, takes_key=True)
    _, metrics = jax.eval_shape(step, state, batch)
    assert metrics["cond_drop_prob"].shape == ()


# --- bad input ---------------------------------------------------------------------------------

@pytest.mark.parametrize("fields,needle", [
    ({"sample.guidance_scale": 3.0}, "needs a class-conditional model"),
    ({"eval.guidance_scales": (0.0, 2.0)}, "needs a class-conditional model"),
    ({"model.cond_drop_prob": 0.1}, "label dropout needs a class-conditional model"),
], ids=["scale", "sweep", "dropout"])
def test_validate_config_rejects_guidance_on_an_unconditional_model(fields, needle):
    config = set_fields(load_config("digits_cond"), {
        "model.num_classes": 0, "model.cond_drop_prob": 0.0, "sample.guidance_scale": 1.0,
        "eval.guidance_scales": (), **fields})
    with pytest.raises(ConfigError) as error:
        validate_config(config)
    assert needle in str(error.value), str(error.value)


@pytest.mark.parametrize("field,value,needle", [
    ("model.cond_drop_prob", 1.5, "config.model.cond_drop_prob=1.5"),
    ("train.cond_drop_schedule", "cosine", "config.train.cond_drop_schedule='cosine'"),
    ("sample.guidance_scale", -1.0, "config.sample.guidance_scale=-1.0"),
    ("sample.guidance_rescale", 2.0, "config.sample.guidance_rescale=2.0"),
    ("eval.guidance_scales", (1.0, -2.0), "config.eval.guidance_scales"),
])
def test_validate_config_rejects_bad_guidance_fields(field, value, needle):
    config = set_fields(load_config("digits_cond"), {field: value})
    with pytest.raises(ConfigError) as error:
        validate_config(config)
    assert needle in str(error.value), str(error.value)


def test_guidance_without_label_dropout_is_rejected():
    config = set_fields(load_config("digits_cond"), {"model.cond_drop_prob": 0.0})
    with pytest.raises(ConfigError, match="never learned"):
        validate_config(config)


def test_image_size_must_survive_the_unet_downsampling():
    config = set_fields(load_config("digits"), {"data.image_size": 6,
                                                "model.dim_mults": (1, 2, 4)})
    with pytest.raises(ConfigError) as error:
        prepare(config)
    assert "data.image_size=6" in one_line(error)


def _numeric_fields(config, prefix=""):
    """(field, value) of every int / float field of `config` (not bools)."""
    for key, value in config.items():
        if isinstance(value, ml_collections.ConfigDict):
            yield from _numeric_fields(value, f"{prefix}{key}.")
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            yield f"{prefix}{key}", value


_BAD_NUMBERS = {"nan": float("nan"), "inf": float("inf"), "-inf": float("-inf"), "text": "1e-3",
                "bool": True, "list": [1]}


@pytest.mark.parametrize("config_name", ["toy2d", "digits"])
def test_every_numeric_field_refuses_non_finite_and_wrong_types(config_name):
    """Every number of the default configs: NaN, +-inf, a string, a bool and a list are each a
    ConfigError naming the field (no config value may silently poison a run)."""
    fields = list(_numeric_fields(load_config(config_name)))
    assert len(fields) >= 25
    for field, _ in fields:
        for bad in _BAD_NUMBERS.values():
            tree = load_config(config_name).to_dict()
            *sections, name = field.split(".")
            functools.reduce(lambda node, key: node[key], sections, tree)[name] = bad
            with pytest.raises(ConfigError, match=re.escape(f"config.{field}=")):
                validate_config(ml_collections.ConfigDict(tree))


@pytest.mark.parametrize("field, value", [
    ("optim.lr", 0.0), ("optim.lr", -1e-3), ("train.steps", -5), ("train.batch_size", 0),
    ("diffusion.timesteps", 0), ("ema.decay", 1.0), ("data.holdout", 0.0), ("data.holdout", 1.0),
    ("seed", 2**64), ("seed", -1), ("eval.num_samples", 3),
])
def test_out_of_range_values_name_the_field(field, value):
    tree = load_config("toy2d").to_dict()
    *sections, name = field.split(".")
    functools.reduce(lambda node, key: node[key], sections, tree)[name] = value
    with pytest.raises(ConfigError, match=re.escape(f"config.{field}=")):
        validate_config(ml_collections.ConfigDict(tree))


def test_a_path_with_a_data_set_that_reads_none_is_refused():
    config = set_fields(load_config("toy2d"), {"data.path": "points.npy"})
    with pytest.raises(ConfigError, match="config.data.path='points.npy' is invalid with "
                                          "data.name='butterfly'"):
        validate_config(config)


def test_a_config_without_sections_names_the_first_missing_field():
    with pytest.raises(ConfigError, match="config.seed is missing"):
        validate_config(ml_collections.ConfigDict())


# --- warnings ----------------------------------------------------------------------------------

@pytest.mark.parametrize("warmup, steps, warned", [(0, 1, False), (99, 100, False),
                                                   (100, 100, True), (500, 300, True)])
def test_a_warm_up_as_long_as_the_run_is_warned(warmup, steps, warned):
    config = set_fields(load_config("toy2d"), {"optim.warmup_steps": warmup, "train.steps": steps})
    validate_config(config)  # valid, only probably not meant
    expected = [f"config.optim.warmup_steps={warmup} >= config.train.steps={steps}: the run "
                f"trains only during warm-up (the learning rate never reaches optim.lr=0.001)"]
    assert config_warnings(config) == (expected if warned else [])


@pytest.mark.parametrize("field, value, needle", [
    ("model.attn_heads", (4, 4, 4), "config.model.attn_heads=(4, 4, 4) is invalid: an integer"),
    ("model.full_attn", (True,), "config.model.full_attn=(True,) is invalid"),
    ("model.init_dim", -1, "config.model.init_dim=-1 is invalid"),
    ("train.fsdp", 3, "config.train.fsdp=3 is invalid: an integer >= 1 dividing the devices"),
])
def test_unet_port_fields_and_fsdp_are_validated(field, value, needle):
    config = load_config("digits")  # dim_mults (1, 2): two stages
    section, name = field.split(".")
    del config[section][name]  # a ConfigDict field keeps its first type
    config[section][name] = value
    if field == "train.fsdp":
        config.train.num_devices = 1
    with pytest.raises(ConfigError) as error:
        validate_config(config)
    assert needle in one_line(error)
