"""Fashion-MNIST 28x28x1 (TFDS "fashion_mnist"): the MNIST recipe on clothing images.

    python train.py --config configs/fashion_mnist.py --workdir runs/fashion_mnist
"""

import importlib.util
import os

_spec = importlib.util.spec_from_file_location(
    "_mnist_config", os.path.join(os.path.dirname(os.path.abspath(__file__)), "mnist.py"))
_mnist = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_mnist)


def get_config(arg: str = ""):
    config = _mnist.get_config(arg)
    config.data.name = "fashion_mnist"
    return config
