"""Codecs (jaxdiff.data.codecs): data space <-> model space. Points are standardised per
dimension; images map 0..255 onto [-1, 1] by x = u / 127.5 - 1 and back to every level."""

import json

import numpy as np

from jaxdiff.data.codecs import ImageCodec, Standardizer, to_model_space, to_uint8


def test_standardizer_round_trip(tmp_path):
    x = np.random.default_rng(1).normal(size=(100, 3)) * [1, 10, 0] + [0, 5, 7]
    scaler = Standardizer.fit(x)
    np.testing.assert_allclose(scaler.mean, x.mean(0))
    np.testing.assert_allclose(scaler.std, [x[:, 0].std(), x[:, 1].std(), 1e-6])
    z = scaler.transform(x)
    assert z.dtype == np.float32 and np.isfinite(z).all()
    np.testing.assert_allclose(z[:, 2], 0)
    np.testing.assert_allclose(scaler.inverse(z), x, rtol=1e-5, atol=1e-5)
    json.dumps(scaler.to_dict())
    scaler.save(str(tmp_path / "s.json"))
    loaded = Standardizer.load(str(tmp_path / "s.json"))
    np.testing.assert_array_equal(loaded.mean, scaler.mean)
    np.testing.assert_array_equal(loaded.std, scaler.std)
    restored = Standardizer.from_dict(scaler.to_dict())
    np.testing.assert_array_equal(restored.transform(x), z)


def test_model_space_maps_0_255_onto_minus_one_one_and_back():
    levels = np.arange(256, dtype=np.uint8)
    x = to_model_space(levels)
    assert x.dtype == np.float32
    np.testing.assert_allclose(x, levels / 127.5 - 1.0, atol=1e-6)
    assert x[0] == -1.0 and x[-1] == 1.0
    np.testing.assert_array_equal(to_uint8(x), levels)
    np.testing.assert_array_equal(to_uint8(np.array([-3.0, 3.0])), [0, 255])  # clipped


def test_image_codec_round_trips_every_level():
    levels = np.arange(256, dtype=np.uint8).reshape(1, 16, 16, 1)
    codec = ImageCodec()
    x = codec.encode(levels)
    assert x.min() == -1.0 and x.max() == 1.0
    np.testing.assert_array_equal(codec.decode(x), levels)
