"""Pictures of sketches for the CNN encoder (sketch-pix2seq, Chen et al. 2017, arXiv 1709.04121).

Two ways into the same picture, an `img_size` square of float32 ink in [0, 1] (strokes bright
on a black background, 0 outside the strokes):

- `render_sketches`: stroke-3 sketches, rendered per batch in the data pipeline. Each sketch
  is fitted into the square with `margin` pixels on the side of its longer dimension and
  centred; every stroke is a line `line_width` pixels wide with round ends and joints,
  anti-aliased over one pixel: a pixel whose centre lies at distance d from the polyline gets
  clip(line_width / 2 + 1/2 - d, 0, 1). For a straight line this is its exact area coverage
  whenever the line runs along the pixel grid (a horizontal line of width w adds up to w per
  column). All segments of the whole batch are rasterised at once in NumPy: each segment
  visits the pixels of its own bounding box only.
- `picture_to_input`: a raster picture (a PNG or JPEG file, a Pillow image or an array), for
  `SketchRNNDrawer.encode_image`: made grey, inverted when its strokes are darker than its
  background, its ink normalised, cropped to the strokes, fitted and centred as a rendering is,
  and its lines thickened or thinned to `line_width`.

The reference code fed 0-255 grey PNGs of black strokes on white, rendered beforehand from
the unaugmented sketches. Here strokes are bright on a zero background, so the CNN's fixed
high-pass filter (zero padding) sees no edge at the picture's border, and the picture is
rendered from the augmented strokes the decoder reconstructs.
"""

import functools
import os

import numpy as np

from sketch_rnn.files import check_regular_file

SUPERSAMPLE = 4  # picture_to_input resizes and thickens lines at 4x the final resolution


def render_sketches(sketches, size=48, line_width=1.5, margin=3.0):
    """Renders stroke-3 sketches, each fitted and centred in a `size` square.

    Args:
        sketches: sequence of B (N_b, 3) stroke-3 arrays (any units: each is fitted).
        size: pixels of the square.
        line_width: width of the lines, in pixels.
        margin: pixels left free on each side along the sketch's longer dimension (the
            line centres reach it; half the line width goes beyond).

    Returns:
        (B, size, size) float32 ink in [0, 1], row = y (downwards), column = x.
    """
    radius = line_width / 2 + 0.5  # the ink reaches 0 at this distance from the polyline
    starts, ends, owners = [], [], []
    for index, sketch in enumerate(sketches):
        a, b = _segments(np.asarray(sketch, np.float64), size, margin)
        starts.append(a)
        ends.append(b)
        owners.append(np.full(len(a), index, np.int64))
    images = np.zeros(len(sketches) * size * size, np.float32)
    if not starts or sum(len(a) for a in starts) == 0:
        return images.reshape(len(sketches), size, size)
    a, b, owner = np.concatenate(starts), np.concatenate(ends), np.concatenate(owners)
    # Each segment's window: the pixels whose centres may lie within `radius` of it.
    low = np.clip(np.floor(np.minimum(a, b) - radius), 0, size).astype(np.int64)
    high = np.clip(np.ceil(np.maximum(a, b) + radius), 0, size).astype(np.int64)
    width, height = high[:, 0] - low[:, 0], high[:, 1] - low[:, 1]
    counts = width * height
    segment = np.repeat(np.arange(len(a)), counts)  # the segment of each (segment, pixel) pair
    local = np.arange(len(segment)) - np.repeat(np.cumsum(counts) - counts, counts)
    px = low[segment, 0] + local % width[segment]
    py = low[segment, 1] + local // width[segment]
    centre = np.stack([px + 0.5, py + 0.5], axis=-1)
    start, direction = a[segment], (b - a)[segment]
    length2 = np.sum(direction**2, axis=-1)
    t = np.clip(np.sum((centre - start) * direction, axis=-1) / np.where(length2 > 0, length2, 1.0),
                0.0, 1.0)
    distance = np.linalg.norm(centre - start - t[:, None] * direction, axis=-1)
    ink = np.clip(radius - distance, 0.0, 1.0).astype(np.float32)
    np.maximum.at(images, owner[segment] * size * size + py * size + px, ink)
    return images.reshape(len(sketches), size, size)


def _segments(sketch, size, margin):
    """A sketch's segments in pixels, fitted and centred: (starts (S, 2), ends (S, 2)).

    A stroke of one point is a segment of length 0 (a dot). The pen starts at (0, 0) lifted,
    as in `stroke_lines`.
    """
    if len(sketch) == 0:
        return np.zeros((0, 2)), np.zeros((0, 2))
    points = np.cumsum(sketch[:, 0:2], axis=0)
    lifted = sketch[:, 2] == 1
    low, high = points.min(axis=0), points.max(axis=0)
    extent = float(np.max(high - low))
    scale = (size - 2 * margin) / extent if extent > 0 else 1.0
    points = (points - (low + high) / 2) * scale + size / 2
    joined = ~lifted[:-1]  # point j continues to point j + 1
    first_of_stroke = np.concatenate([[True], lifted[:-1]])
    dots = first_of_stroke & lifted  # strokes of one point
    starts = np.concatenate([points[:-1][joined], points[dots]])
    ends = np.concatenate([points[1:][joined], points[dots]])
    return starts, ends


def batch_renderer(hps):
    """The function the data pipeline renders a batch's sketches with, (B, S, S, 1), or None
    when the model reads no pictures (encoder=rnn, or no encoder)."""
    if not (hps.conditional and hps.encoder == "cnn"):
        return None
    return functools.partial(_render_batch, size=hps.img_size, line_width=hps.img_line_width,
                             margin=hps.img_margin)


def _render_batch(sketches, size, line_width, margin):
    return render_sketches(sketches, size, line_width, margin)[..., None]


# ---------------------------------------------------------------------------------------
# Pictures from files and arrays
# ---------------------------------------------------------------------------------------


def picture_to_input(picture, size=48, line_width=1.5, margin=3.0, name=None):
    """Converts a raster picture of a sketch into what `render_sketches` would have drawn.

    Steps: grey (a picture with transparency: its opacity is the ink); inverted if the
    border is brighter than the middle grey (dark strokes on paper); the background level
    (the border's median) subtracted and the ink scaled so that the strokes reach 1; cropped
    to the pixels above half ink; scaled so that the strokes' centre lines span `size - 2 *
    margin` pixels along the longer side and centred; lines thickened or thinned to
    `line_width` (their width estimated as twice their area over their outline's length);
    anti-aliased by averaging 4x4 sub-pixels.

    Args:
        picture: a path to an image file (PNG, JPEG, ...), a Pillow image, or an array:
            (H, W) grey, (H, W, 3) RGB or (H, W, 4) RGBA; integers are 0-255, floats 0-1.
        size, line_width, margin: the rendering's (the run's img_* hparams).
        name: what to call the picture in errors (default: its path, or "picture").

    Returns:
        (size, size) float32 ink in [0, 1].

    Raises:
        ValueError: naming the picture, when it cannot be read or shows no strokes.
    """
    from PIL import Image

    name = name or (os.fspath(picture) if isinstance(picture, (str, os.PathLike)) else "picture")
    ink = _ink(picture, name)
    strokes = ink > 0.5
    if not strokes.any():
        raise ValueError(f"{name}: no strokes found (a picture of dark lines on a light background, "
                         "or light lines on a dark one, was expected)")
    rows, columns = np.flatnonzero(strokes.any(axis=1)), np.flatnonzero(strokes.any(axis=0))
    top, bottom, left, right = rows[0], rows[-1] + 1, columns[0], columns[-1] + 1
    width = _line_width(ink[top:bottom, left:right])
    # The centre lines' extent is the ink's minus one line width.
    extent = max(max(bottom - top, right - left) - width, 1.0)
    scale = SUPERSAMPLE * (size - 2 * margin) / extent  # source pixels -> sub-pixels
    crop = Image.fromarray(ink[top:bottom, left:right].astype(np.float32), mode="F")
    shape = (max(1, round((right - left) * scale)), max(1, round((bottom - top) * scale)))
    resample = Image.Resampling.BOX if scale < 1 else Image.Resampling.BILINEAR
    fine = np.asarray(crop.resize(shape, resample))
    # A line thinner than a sub-pixel is faint after averaging: cut at half its typical ink.
    peak = np.percentile(fine[fine > 0.02], 90) if np.any(fine > 0.02) else 1.0
    lines = fine >= 0.5 * min(peak, 1.0)
    lines = _set_line_width(lines, SUPERSAMPLE * line_width)
    canvas = np.zeros((size * SUPERSAMPLE, size * SUPERSAMPLE), np.float32)
    # Centre the lines' box, as render_sketches centres the sketch's.
    height_px, width_px = lines.shape
    y0 = int(round((canvas.shape[0] - height_px) / 2))
    x0 = int(round((canvas.shape[1] - width_px) / 2))
    source_y = slice(max(0, -y0), min(height_px, canvas.shape[0] - y0))
    source_x = slice(max(0, -x0), min(width_px, canvas.shape[1] - x0))
    canvas[max(0, y0):max(0, y0) + source_y.stop - source_y.start,
           max(0, x0):max(0, x0) + source_x.stop - source_x.start] = lines[source_y, source_x]
    return canvas.reshape(size, SUPERSAMPLE, size, SUPERSAMPLE).mean(axis=(1, 3))


def _ink(picture, name):
    """The picture as (H, W) float64 ink in [0, 1]: 1 on the strokes, 0 on the background."""
    from PIL import Image, UnidentifiedImageError

    if isinstance(picture, (str, os.PathLike)):
        check_regular_file(picture)
        try:
            with Image.open(picture) as opened:
                opened.load()
                picture = opened.copy()
        except (UnidentifiedImageError, OSError) as err:
            raise ValueError(f"{name}: not an image Pillow can read ({err})") from None
    if isinstance(picture, Image.Image):
        if picture.mode in ("RGBA", "LA", "PA") or "transparency" in picture.info:
            picture = np.asarray(picture.convert("RGBA"), np.float64) / 255.0
        else:
            picture = np.asarray(picture.convert("L"), np.float64) / 255.0
    else:
        picture = np.asarray(picture)
        if picture.dtype.kind not in "uif" or picture.ndim not in (2, 3) or (
                picture.ndim == 3 and picture.shape[2] not in (1, 3, 4)):
            raise ValueError(f"{name}: expected an (H, W), (H, W, 3) or (H, W, 4) array of numbers, "
                             f"got {picture.dtype} of shape {picture.shape}")
        picture = picture.astype(np.float64) / (255.0 if picture.dtype.kind in "ui" else 1.0)
    if not np.all(np.isfinite(picture)):
        raise ValueError(f"{name}: holds NaN or infinite values")
    if min(picture.shape[:2]) < 2:
        raise ValueError(f"{name}: a picture of {picture.shape[1]}x{picture.shape[0]} pixels is "
                         "too small")
    if picture.ndim == 3 and picture.shape[2] == 4 and picture[..., 3].min() < 1:
        ink = picture[..., 3]  # drawn on a transparent background: the opacity is the ink
    else:
        grey = picture if picture.ndim == 2 else (
            picture[..., :3] @ np.array([0.299, 0.587, 0.114]) if picture.shape[2] >= 3
            else picture[..., 0])
        border = np.concatenate([grey[0], grey[-1], grey[:, 0], grey[:, -1]])
        ink = 1.0 - grey if np.median(border) > 0.5 else grey
    border = np.concatenate([ink[0], ink[-1], ink[:, 0], ink[:, -1]])
    background, top = np.median(border), np.percentile(ink, 99.9)
    if top - background < 0.1:
        raise ValueError(f"{name}: no strokes found: the picture is almost uniform")
    return np.clip((ink - background) / (top - background), 0.0, 1.0)


def _line_width(ink):
    """Mean width of the lines of a picture (ink in [0, 1]): twice its area over the length of
    its outline (a w x L line has area w L and an outline of 2 (w + L)), that length being
    the sum of the ink's gradient norm (the coarea formula), which does not depend on the
    lines' direction as a count of pixel edges would."""
    gradient_y, gradient_x = np.gradient(np.pad(np.asarray(ink, np.float64), 1))
    outline = np.hypot(gradient_x, gradient_y).sum()
    return 2.0 * float(np.sum(ink)) / max(outline, 1e-9)


def _set_line_width(mask, wanted):
    """Thickens (max filter) or thins (min filter) the lines of a boolean picture to about
    `wanted` pixels."""
    from PIL import Image, ImageFilter

    change = wanted - _line_width(mask)
    if abs(change) < 1:
        return mask
    filter_size = 2 * int(round(abs(change) / 2)) + 1  # a k x k filter changes widths by k - 1
    grown = ImageFilter.MaxFilter if change > 0 else ImageFilter.MinFilter
    # Padded, so that thickening does not cut lines at the picture's edge.
    pad = filter_size
    image = Image.fromarray(np.pad(mask, pad).astype(np.uint8) * 255, mode="L")
    result = np.asarray(image.filter(grown(filter_size))) > 127
    if change < 0 and not result.any():
        return mask  # thinning would erase the lines: keep them as they are
    return result[pad:-pad, pad:-pad] if change < 0 else result
