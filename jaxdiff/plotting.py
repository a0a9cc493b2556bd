"""Pictures: scatter plots of point data (first two dimensions) and image grids, as PNG files.
Uses matplotlib's object API with the Agg canvas, so no display is needed."""

from __future__ import annotations

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

_STYLE = dict(s=1, color="#45b97c", alpha=0.6)


def _save(figure: Figure, path: str) -> str:
    FigureCanvasAgg(figure)
    figure.savefig(path, dpi=100, bbox_inches="tight")
    return path


def _limits(*sets: np.ndarray):
    points = np.concatenate([np.asarray(s)[:, :2] for s in sets])
    low, high = np.percentile(points, 0.5, axis=0), np.percentile(points, 99.5, axis=0)
    pad = 0.1 * (high - low) + 1e-6
    return (low[0] - pad[0], high[0] + pad[0]), (low[1] - pad[1], high[1] + pad[1])


def _scatter_row(panels: list[tuple[str, np.ndarray]], path: str, limits=None) -> str:
    figure = Figure(figsize=(3 * len(panels), 3))
    for index, (title, points) in enumerate(panels):
        axis = figure.add_subplot(1, len(panels), index + 1)
        points = np.asarray(points)
        axis.scatter(points[:, 0], points[:, 1] if points.shape[1] > 1 else np.zeros(len(points)),
                     **_STYLE)
        if limits is not None:
            axis.set_xlim(*limits[0])
            axis.set_ylim(*limits[1])
        axis.set_title(title)
        axis.set_aspect("equal", adjustable="box")
        axis.set_axis_off()
    return _save(figure, path)


def plot_forward_process(points_by_t: dict[int, np.ndarray], path: str) -> str:
    """x_t of the forward process at several t, one panel each (as seed 001 shows it)."""
    return _scatter_row([(f"t = {t}", x) for t, x in sorted(points_by_t.items())], path)


def plot_samples_vs_data(samples: np.ndarray, data: np.ndarray, path: str,
                         title: str | None = None) -> str:
    """Data and generated samples side by side on the same axes."""
    panels = [("data", data), (title or "samples", samples)]
    return _scatter_row(panels, path, _limits(data, samples))


def plot_points(points: np.ndarray, path: str, title: str = "samples") -> str:
    """One scatter plot of points (first two dimensions)."""
    return _scatter_row([(title, points)], path, _limits(points))


def plot_trajectory(trajectory: np.ndarray, path: str, num_frames: int = 8) -> str:
    """x_t along the reverse process [S, N, D], from noise to samples; frames are denser near
    the end, where the structure appears."""
    trajectory = np.asarray(trajectory)
    fractions = 1.0 - (1.0 - np.linspace(0.0, 1.0, num_frames)) ** 2
    frames = np.unique(np.round(fractions * (len(trajectory) - 1)).astype(int))
    panels = [(f"step {i}/{len(trajectory) - 1}", trajectory[i]) for i in frames]
    return _scatter_row(panels, path, _limits(trajectory[0], trajectory[-1]))


def image_grid(images: np.ndarray, nrow: int | None = None, pad: int = 1) -> np.ndarray:
    """Tile images [N, H, W, C] (uint8, or float in [0, 1]) into one uint8 image."""
    images = np.asarray(images)
    if images.dtype != np.uint8:
        images = np.clip(np.round(images * 255.0), 0, 255).astype(np.uint8)
    count, height, width, channels = images.shape
    nrow = nrow or int(np.ceil(np.sqrt(count)))
    ncol = int(np.ceil(count / nrow))
    grid = np.full((ncol * (height + pad) + pad, nrow * (width + pad) + pad, channels), 255,
                   np.uint8)
    for index, image in enumerate(images):
        row, column = divmod(index, nrow)
        top, left = pad + row * (height + pad), pad + column * (width + pad)
        grid[top:top + height, left:left + width] = image
    return grid


def save_image_grid(images: np.ndarray, path: str, nrow: int | None = None) -> str:
    """Write `image_grid(images, nrow)` as a PNG."""
    from PIL import Image

    grid = image_grid(images, nrow)
    Image.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid).save(path)
    return path


def save_trajectory_gif(trajectory: np.ndarray, path: str, num_frames: int = 40,
                        duration_ms: int = 80) -> str:
    """An animated GIF of image grids along the reverse process, trajectory [S, N, H, W, C]."""
    from PIL import Image

    trajectory = np.asarray(trajectory)
    indices = np.unique(np.linspace(0, len(trajectory) - 1, num_frames).round().astype(int))
    frames = []
    for index in indices:
        grid = image_grid(trajectory[index])
        frames.append(Image.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid))
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=duration_ms, loop=0)
    return path
