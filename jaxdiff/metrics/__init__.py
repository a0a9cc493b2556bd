"""Sample-quality metrics, one module per kind:

- `points.py`: point clouds [N, D] (sliced Wasserstein, energy distance, MMD, precision and
  recall, and `point_quality_report`, which sets each next to its floor between two data draws).
- `frechet.py`: the Fréchet distance between Gaussians fitted to two feature sets (the "F" of FID).
- `inception.py`: pytorch-fid's Inception-v3 feature network in Flax, its weight-file loader and
  `inception_features` (FID = frechet_distance_from_features of two sets of these features).
- `digits_classifier.py`: a small CNN trained on the offline digits set, whose features give the
  "digits Fréchet distance" and whose predictions give class-conditional accuracy.

Importing this package loads only NumPy and SciPy: the point and Fréchet functions are re-exported
here; `inception` and `digits_classifier` need Flax and are imported as submodules, e.g.
`from jaxdiff.metrics.inception import inception_features`.
"""

from jaxdiff.metrics.frechet import (feature_statistics, frechet_distance,
                                     frechet_distance_from_features)
from jaxdiff.metrics.points import (DEFAULT_BANDWIDTHS, energy_distance, mmd_rbf,
                                    point_quality_report, precision_recall, sliced_wasserstein)
