"""Every plotting function writes a PNG (headless, via the Agg canvas)."""

import numpy as np
from PIL import Image

from jaxdiff import plotting

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def assert_png(path):
    with open(path, "rb") as handle:
        content = handle.read()
    assert content[:8] == PNG_SIGNATURE and len(content) > 100


def test_scatter_plots(tmp_path):
    rng = np.random.default_rng(3)
    points = rng.normal(size=(200, 3))  # D = 3: only the first two dimensions are drawn
    line = rng.normal(size=(200, 1))  # D = 1: drawn against y = 0
    diverged = points.copy()
    diverged[:5] = np.nan
    paths = [
        plotting.plot_forward_process({0: points, 10: 2 * points, 5: line},
                                      str(tmp_path / "f.png")),
        plotting.plot_samples_vs_data(points, points + 1, str(tmp_path / "s.png")),
        plotting.plot_samples_vs_data(diverged, points, str(tmp_path / "d.png"), title="step 3"),
        plotting.plot_points(points, str(tmp_path / "p.png")),
        plotting.plot_trajectory(rng.normal(size=(30, 100, 2)), str(tmp_path / "t.png")),
        plotting.plot_trajectory(rng.normal(size=(3, 100, 2)), str(tmp_path / "t3.png")),
    ]
    for path in paths:
        assert_png(path)


def test_image_grids(tmp_path):
    rng = np.random.default_rng(4)
    grey = plotting.save_image_grid(rng.uniform(size=(10, 8, 8, 1)), str(tmp_path / "g.png"),
                                    nrow=5, scale=1)
    colour = plotting.save_image_grid(rng.integers(0, 255, (4, 8, 6, 3), dtype=np.uint8),
                                      str(tmp_path / "c.png"), scale=1)
    zoomed = plotting.save_image_grid(rng.uniform(size=(10, 8, 8, 1)), str(tmp_path / "z.png"),
                                      nrow=5)
    with Image.open(zoomed) as image:  # by default 8-pixel images are zoomed x4 (>= 32 pixels)
        assert image.size == (4 * (5 * 9 + 1), 4 * (2 * 9 + 1))
    for path in (grey, colour):
        assert_png(path)
    # 5 per row, 2 rows, 1-pixel gaps around every image
    with Image.open(grey) as image:
        assert image.size == (5 * 9 + 1, 2 * 9 + 1) and image.mode == "L"
    with Image.open(colour) as image:  # default: ceil(sqrt(4)) = 2 per row
        assert image.size == (2 * 7 + 1, 2 * 9 + 1) and image.mode == "RGB"


def test_image_grid_places_images_in_row_order():
    images = np.zeros((3, 2, 2, 1), np.uint8)
    images[1] = 100
    images[2] = 200
    grid = plotting.image_grid(images, nrow=2)
    assert grid.shape == (2 * 3 + 1, 2 * 3 + 1, 1)
    assert grid[1, 1, 0] == 0 and grid[1, 4, 0] == 100 and grid[4, 1, 0] == 200
    assert grid[4, 4, 0] == 255  # the empty fourth slot stays white


def test_samples_vs_data_image_is_the_picture_as_an_array(tmp_path):
    """The TensorBoard picture: RGB uint8 on white, two panels side by side, green dots."""
    rng = np.random.default_rng(5)
    picture = plotting.samples_vs_data_image(rng.normal(size=(500, 2)),
                                             rng.normal(size=(500, 2)) + 3, title="step 7")
    height, width, channels = picture.shape
    assert picture.dtype == np.uint8 and channels == 3 and width == 2 * height
    assert (picture[0, 0] == 255).all()
    green = (picture[..., 1].astype(int) - picture[..., 0].astype(int)) > 60
    assert green[:, :width // 2].sum() > 100 and green[:, width // 2:].sum() > 100
