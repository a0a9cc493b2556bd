"""Data sources: 2-D toy sets, a user's arrays, and (in their own modules) image sets."""

from jaxdiff.data.arrays import load_array
from jaxdiff.data.points import PointSource, Standardizer, make_point_source
from jaxdiff.data.toy2d import TOY2D_NAMES, sample_toy2d
