"""Class-conditional offline digits with classifier-free guidance (CPU, a few minutes).

    python train.py --config digits_cond --workdir runs/digits_cond
    python sample.py --workdir runs/digits_cond --labels 0,1,2 --guidance_scale 0,1,3 \
        --num_samples 8 --out digits_cond.npz

The digits recipe (digits.py) with a label embedding (model.num_classes = 10) and label
dropout: each training example's label is replaced by the null class with probability
model.cond_drop_prob, so one network learns both the conditional and the unconditional
prediction. At the end train.py samples 1,000 digits (100 of each class) from the same noise at
each of eval.guidance_scales and writes, per scale, the digits classifier's accuracy on the
requested class and the digits Fréchet distance to eval.json ("guidance_sweep"), and
guidance.png (one row per class, one column per scale). `:quick` shrinks it for a smoke test.
"""

from jaxdiff.configs import digits as _digits


def get_config(arg: str = ""):
    config = _digits.get_config(arg)
    config.model.num_classes = 10
    if arg != "quick":
        config.train.steps = 4000  # the run behind the README's guidance table
    config.model.cond_drop_prob = 0.15  # label dropout: p(null class) per example
    config.train.cond_drop_schedule = "constant"  # or "linear" (NVIDIA DLI's decay)
    config.train.cond_drop_start = 1.0  # "linear" only: p decays from here to cond_drop_prob

    # s = 1: plain conditional sampling; s = 0: unconditional; s > 1: guided (diffusers' scale)
    config.sample.guidance_scale = 2.0
    config.sample.guidance_rescale = 0.0
    config.eval.guidance_scales = (0.0, 1.0, 2.0, 3.0)
    return config
