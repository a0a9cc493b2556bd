"""Classifier accuracy and digits Fréchet distance of a trained class-conditional digits run at
more guidance scales, sampled exactly as train.py's end-of-training sweep samples them (same
key, same labels 0..9 repeated, same noise for every scale):

    python benchmarks/cfg_digits_scales.py --workdir runs/digits_cond --scales 0.25,0.5 \
        --out runs/digits_cond/extra_scales.json
"""

import json
import time

import jax
import numpy as np
from absl import app, flags
from absl import logging as absl_logging

from jaxdiff.evaluate import digits_quality
from jaxdiff.run import load_run, sample_model

_WORKDIR = flags.DEFINE_string("workdir", None, "A run of configs/digits_cond.py.", required=True)
_SCALES = flags.DEFINE_string("scales", "0.25,0.5", "Comma-separated guidance scales.")
_OUT = flags.DEFINE_string("out", None, "Optional .json file for the rows.")


def main(argv) -> None:
    del argv
    absl_logging.set_verbosity(absl_logging.WARNING)
    run = load_run(_WORKDIR.value)
    config = run.config
    num = config.eval.num_samples
    labels = np.arange(num) % config.model.num_classes
    rows = []
    for scale in [float(s) for s in _SCALES.value.split(",")]:
        start = time.perf_counter()
        x = sample_model(run.model_fn, run.schedule, config, (num,) + run.data_shape,
                         key=jax.random.key(config.seed + 1), labels=labels,
                         guidance_scale=np.full(num, scale, np.float32))
        metrics = digits_quality(run.to_data_space(x), labels)
        rows.append({"guidance_scale": scale, "class_accuracy": metrics["class_accuracy"],
                     "digits_fd": metrics["digits_fd"],
                     "sample_seconds": time.perf_counter() - start})
        print(json.dumps(rows[-1]), flush=True)
    if _OUT.value:
        with open(_OUT.value, "w") as handle:
            json.dump(rows, handle, indent=2)


if __name__ == "__main__":
    app.run(main)
