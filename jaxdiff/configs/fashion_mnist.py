"""Fashion-MNIST 28x28x1 (TFDS "fashion_mnist"): the MNIST recipe on clothing images.

    python train.py --config fashion_mnist --workdir runs/fashion_mnist
"""

from jaxdiff.configs import mnist as _mnist


def get_config(arg: str = ""):
    config = _mnist.get_config(arg)
    config.data.name = "fashion_mnist"
    return config
