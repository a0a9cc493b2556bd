"""Pictures as PNG files: scatter plots of point data and grids of images.

Point data [N, D] is drawn in its first two dimensions only, so arrays with D > 2 still plot
(D = 1 is drawn against y = 0). Figures use matplotlib's object API with the Agg canvas, so
nothing touches pyplot's global state or needs a display. Each `plot_*` / `save_*` function
returns its path; `samples_vs_data_image` returns the picture as an RGB array (for TensorBoard).
"""

from __future__ import annotations

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

_STYLE = dict(s=1, color="#45b97c", alpha=0.6)  # small green dots, as in the classic 2-D DDPM tutorials

Limits = tuple[tuple[float, float], tuple[float, float]]


def _save(figure: Figure, path: str) -> str:
    FigureCanvasAgg(figure)
    figure.savefig(path, dpi=100, bbox_inches="tight")
    return path


def _xy(points: np.ndarray, name: str = "points") -> np.ndarray:
    """The first two columns of points [N, D] as [N, 2]; D = 1 gets a zero second column."""
    points = np.asarray(points, np.float64)
    if points.ndim != 2 or points.shape[1] < 1:
        raise ValueError(f"{name}.shape={points.shape} is invalid; expected [N, D]")
    if points.shape[1] == 1:
        return np.concatenate([points, np.zeros_like(points)], axis=1)
    return points[:, :2]


def _limits(*sets: np.ndarray) -> Limits:
    """Axis limits holding the central 99% of the finite points of all sets, plus a margin;
    percentiles rather than extremes so a few stray samples do not shrink the picture, and
    finite points only so a diverged sampler still plots."""
    points = np.concatenate([_xy(s) for s in sets])
    points = points[np.isfinite(points).all(axis=1)]
    if len(points) == 0:
        return (-1.0, 1.0), (-1.0, 1.0)
    low, high = np.percentile(points, 0.5, axis=0), np.percentile(points, 99.5, axis=0)
    pad = 0.1 * (high - low) + 1e-6
    return (low[0] - pad[0], high[0] + pad[0]), (low[1] - pad[1], high[1] + pad[1])


def _scatter_figure(panels: list[tuple[str, np.ndarray]],
                    limits: Limits | None = None) -> Figure:
    """One row of scatter plots, titled, equal aspect, axes off."""
    if not panels:
        raise ValueError("nothing to plot: the list of panels is empty")
    figure = Figure(figsize=(3 * len(panels), 3))
    for index, (title, points) in enumerate(panels):
        axis = figure.add_subplot(1, len(panels), index + 1)
        points = _xy(points)
        axis.scatter(points[:, 0], points[:, 1], **_STYLE)
        x_limits, y_limits = _limits(points) if limits is None else limits
        axis.set_xlim(*x_limits)
        axis.set_ylim(*y_limits)
        axis.set_title(title)
        axis.set_aspect("equal", adjustable="box")
        axis.set_axis_off()
    return figure


def _scatter_row(panels: list[tuple[str, np.ndarray]], path: str,
                 limits: Limits | None = None) -> str:
    return _save(_scatter_figure(panels, limits), path)


def _render(figure: Figure, dpi: int = 100) -> np.ndarray:
    """The figure drawn by the Agg canvas as an RGB array [H, W, 3] uint8 (white background)."""
    canvas = FigureCanvasAgg(figure)
    figure.set_dpi(dpi)
    figure.set_facecolor("white")
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def plot_forward_process(points_by_t: dict[int, np.ndarray], path: str) -> str:
    """x_t of the forward process at several t, one panel each titled "t = ...", in increasing
    t (as the 2-D DDPM tutorials show it); each panel has its own limits, so the spreading shows in scale."""
    return _scatter_row([(f"t = {t}", x) for t, x in sorted(points_by_t.items())], path)


def plot_samples_vs_data(samples: np.ndarray, data: np.ndarray, path: str,
                         title: str | None = None) -> str:
    """Data (left) and generated samples (right, titled `title` or "samples") side by side
    with the same axis limits."""
    panels = [("data", data), (title or "samples", samples)]
    return _scatter_row(panels, path, _limits(data, samples))


def samples_vs_data_image(samples: np.ndarray, data: np.ndarray,
                          title: str | None = None) -> np.ndarray:
    """`plot_samples_vs_data`'s picture as an RGB array [H, W, 3] uint8 instead of a file, e.g.
    for TensorBoard's `add_image(..., dataformats="HWC")`."""
    return _render(_scatter_figure([("data", data), (title or "samples", samples)],
                                   _limits(data, samples)))


def plot_points(points: np.ndarray, path: str, title: str = "samples") -> str:
    """One scatter plot of points (first two dimensions)."""
    return _scatter_row([(title, points)], path, _limits(points))


def plot_trajectory(trajectory: np.ndarray, path: str, num_frames: int = 8) -> str:
    """x_t along the reverse process, trajectory [S, N, D] from pure noise (index 0) to the
    samples (index S - 1): `num_frames` panels at evenly spaced indices, both ends included,
    sharing the axis limits of the noise and the samples."""
    trajectory = np.asarray(trajectory)
    if trajectory.ndim != 3 or len(trajectory) < 1:
        raise ValueError(f"trajectory.shape={trajectory.shape} is invalid; expected [S, N, D]")
    if num_frames < 1:
        raise ValueError(f"num_frames={num_frames} is invalid; need >= 1")
    last = len(trajectory) - 1
    frames = np.unique(np.round(np.linspace(0, last, num_frames)).astype(int))
    names = {0: "noise", last: "samples"}
    panels = [(f"{names.get(i, 'step')} {i}/{last}", trajectory[i]) for i in frames]
    return _scatter_row(panels, path, _limits(trajectory[0], trajectory[-1]))


def image_grid(images: np.ndarray, nrow: int | None = None, pad: int = 1) -> np.ndarray:
    """Tile images [N, H, W, C] (uint8, or float in [0, 1], clipped) into one uint8 image
    [rows (H + pad) + pad, nrow (W + pad) + pad, C] on white: `nrow` images per row
    (torchvision's convention; default ceil(sqrt(N))), filled row by row."""
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] not in (1, 3) or len(images) < 1:
        raise ValueError(f"images.shape={images.shape} is invalid; expected [N, H, W, C] with "
                         f"C = 1 or 3")
    if images.dtype != np.uint8:
        images = np.clip(np.round(np.nan_to_num(images) * 255.0), 0, 255).astype(np.uint8)
    count, height, width, channels = images.shape
    nrow = int(np.ceil(np.sqrt(count))) if nrow is None else int(nrow)
    if nrow < 1:
        raise ValueError(f"nrow={nrow} is invalid; need >= 1")
    rows = -(-count // nrow)
    grid = np.full((rows * (height + pad) + pad, nrow * (width + pad) + pad, channels), 255,
                   np.uint8)
    for index, image in enumerate(images):
        row, column = divmod(index, nrow)
        top, left = pad + row * (height + pad), pad + column * (width + pad)
        grid[top:top + height, left:left + width] = image
    return grid


def _display_scale(height: int, minimum: int = 32) -> int:
    """Integer nearest-neighbour zoom that shows small images (8x8 digits) at >= `minimum` px."""
    return max(1, -(-minimum // max(height, 1)))


def save_image_grid(images: np.ndarray, path: str, nrow: int | None = None,
                    scale: int | None = None) -> str:
    """Write `image_grid(images, nrow)` as a PNG (grey for C = 1, RGB for C = 3) with PIL,
    zoomed by `scale` (default: so that each image is at least 32 pixels high)."""
    from PIL import Image

    grid = image_grid(images, nrow)
    scale = _display_scale(np.asarray(images).shape[1]) if scale is None else scale
    grid = grid.repeat(scale, axis=0).repeat(scale, axis=1)
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
        zoom = _display_scale(np.asarray(trajectory).shape[2])
        grid = grid.repeat(zoom, axis=0).repeat(zoom, axis=1)
        frames.append(Image.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid))
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=duration_ms, loop=0)
    return path


def save_trajectory_strip(trajectory: np.ndarray, path: str, num_images: int = 10,
                          num_frames: int = 10) -> str:
    """A grid with one row per image (the first `num_images`) and one column per frame at evenly
    spaced indices of the reverse process, trajectory [S, N, H, W, C] uint8."""
    trajectory = np.asarray(trajectory)
    frames = np.linspace(0, len(trajectory) - 1, num_frames).round().astype(int)
    strip = trajectory[frames, :num_images].transpose(1, 0, 2, 3, 4)  # [images, frames, ...]
    return save_image_grid(strip.reshape((-1,) + trajectory.shape[2:]), path, nrow=len(frames))


def save_samples(samples: np.ndarray, path: str, title: str = "samples",
                 nrow: int | None = None) -> str:
    """Data-space samples as a picture: points [N, D] as a scatter plot (first two dimensions),
    images [N, H, W, C] as a grid with `nrow` per row."""
    samples = np.asarray(samples)
    if samples.ndim == 2:
        return plot_points(samples, path, title=title)
    return save_image_grid(samples, path, nrow=nrow)


def save_trajectory(trajectory: np.ndarray, stem: str) -> list[str]:
    """The reverse process as pictures next to `stem`: for points [S, N, D] a row of scatter
    plots (stem_trajectory.png); for images [S, N, H, W, C] an animated GIF of the first 16
    (stem_trajectory.gif) and a strip of the first 10 (stem_trajectory.png)."""
    trajectory = np.asarray(trajectory)
    if trajectory.ndim == 3:
        return [plot_trajectory(trajectory, f"{stem}_trajectory.png")]
    return [save_trajectory_gif(trajectory[:, :16], f"{stem}_trajectory.gif"),
            save_trajectory_strip(trajectory, f"{stem}_trajectory.png")]
