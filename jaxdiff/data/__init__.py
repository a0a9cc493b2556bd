"""Data sources (one interface for points and images, see `sources`), their codecs, the 2-D toy
sets and a user's arrays; image sets live in `images` and `digits` (imported on demand: TFDS)."""

from jaxdiff.data.arrays import load_array
from jaxdiff.data.codecs import ImageCodec, Standardizer, codec_from_dict, codec_to_dict
from jaxdiff.data.points import PointSource, make_point_source
from jaxdiff.data.sources import DataSource, open_source
from jaxdiff.data.toy2d import TOY2D_NAMES, sample_toy2d
