"""Pictures of stroke-3 sketches: SVG with svgwrite, PNG and animated GIF rendered by
matplotlib (Agg) and written by Pillow.

Every function takes ``scale_factor``, which multiplies dx and dy: pass a run's stored
scale factor to draw sketches in model units (as SketchRNNDrawer returns them) at the size
the data had, in pixels. y grows downwards, as in the data sets. svgwrite and matplotlib
are imported when first used, so that training never loads them. Files are written with
``write_atomically``: never through a symbolic link, never half-written.
"""

import io

import numpy as np

from sketch_rnn.files import write_atomically


def stroke_lines(stroke3, scale_factor=1.0):
    """Splits a stroke-3 sketch into its strokes, as absolute positions.

    The pen starts at (0, 0), lifted; each row moves it by (dx, dy), and pen_lifted = 1
    ends the stroke after that point.

    Args:
        stroke3: array of shape (N, 3).
        scale_factor: multiplies dx and dy.

    Returns:
        list of float64 arrays of shape (n_i, 2), one per stroke, the points' (x, y). A
        sketch whose last row has pen_lifted = 0 (cut before its end) still closes its
        last stroke there.

    Raises:
        ValueError: a pen position is NaN or infinite.
    """
    stroke3 = _as_stroke3(stroke3)
    points = np.cumsum(stroke3[:, 0:2].astype(np.float64), axis=0) * scale_factor
    if not np.isfinite(points).all():  # else a grid's size becomes NaN far from here
        row = int(np.flatnonzero(~np.isfinite(points).all(axis=1))[0])
        raise ValueError(f"a sketch's pen position is not finite from row {row} on (NaN or inf "
                         f"offsets, or scale_factor={scale_factor}): nothing to draw")
    ends = np.flatnonzero(stroke3[:, 2] == 1) + 1
    return [line for line in np.split(points, ends) if len(line)]


def _stroke_pieces(stroke3, scale_factor=1.0, prefix_length=0):
    """`stroke_lines`, each stroke cut where the sketch's first `prefix_length` points end.

    Returns:
        list of (points (n, 2), index of its first point in the sketch, in_prefix). A stroke
        that the prefix begins and the rest continues is two pieces; the second starts at
        the prefix's last point, so the segment joining them is drawn with the rest.
    """
    pieces, start = [], 0
    for line in stroke_lines(stroke3, scale_factor):
        cut = min(max(prefix_length - start, 0), len(line))  # its points inside the prefix
        if cut > 0:
            pieces.append((line[:cut], start, True))
        if cut < len(line):
            joined = 1 if cut > 0 else 0
            pieces.append((line[cut - joined:], start + cut - joined, False))
        start += len(line)
    return pieces


def _as_stroke3(stroke3):
    stroke3 = np.asarray(stroke3)
    if stroke3.ndim != 2 or stroke3.shape[1] != 3:
        raise ValueError(f"a sketch must be an (N, 3) stroke-3 array, got shape {stroke3.shape}")
    return stroke3


PNG_DPI = 100  # the Agg figure's dots per inch: its font sizes are in points, 72 an inch


def _label_width(text, font_size):
    """The width in pixels of `text` in matplotlib's sans-serif font (DejaVu Sans, what PNG
    labels are drawn in; the sans-serif fonts of SVG viewers are about as wide or narrower):
    the larger of the glyphs' outline and what Agg draws, whose hinting rounds each glyph's
    advance to whole pixels (at 8 to 12 pixels, up to 5% wider than the outline)."""
    from matplotlib.backends.backend_agg import RendererAgg
    from matplotlib.font_manager import FontProperties
    from matplotlib.textpath import TextPath

    if not text.strip():  # TextPath fails on a path with no glyph
        return 0.0
    # A list: a lone string would be read as a fontconfig pattern, in which "-" means a size.
    font = FontProperties(family=["sans-serif"])
    outline = TextPath((0, 0), text, size=font_size, prop=font).get_extents().width
    font.set_size(font_size * 72 / PNG_DPI)
    drawn, _, _ = RendererAgg(1, 1, PNG_DPI).get_text_width_height_descent(text, font, ismath=False)
    return max(outline, drawn)


def _labels_width(labels, font_size):
    """The width a cell needs for the widest label: half a font size free on either side."""
    return max(_label_width(_label_text(label), font_size) for label in labels) + font_size


def _label_text(label):
    """A label as drawn: None is no label (as "" is), anything else its str()."""
    return "" if label is None else str(label)


class _Grid:
    """Sketches placed in equal cells, with a margin inside each cell.

    The cells are as large as the largest sketch, or ``cell_size`` pixels square with every
    sketch scaled to fit its cell. ``cells`` holds, per sketch, its strokes moved into place
    as ``_stroke_pieces`` (points, first index, in_prefix) and its label's (text, x, y).
    Sizes are in pixels.
    """

    def __init__(self, sketches, columns, labels, scale_factor, margin, font_size, cell_size=None,
                 prefix_lengths=None):
        if len(sketches) == 0:
            raise ValueError("nothing to draw: the list of sketches is empty")
        if labels is not None and len(labels) != len(sketches):
            raise ValueError(f"got {len(labels)} labels for {len(sketches)} sketches")
        if prefix_lengths is None:
            prefix_lengths = [0] * len(sketches)
        elif len(prefix_lengths) != len(sketches):
            raise ValueError(f"got {len(prefix_lengths)} prefix lengths for {len(sketches)} sketches")
        if cell_size is not None and not cell_size > 2 * margin:
            raise ValueError(f"cell_size must be larger than twice the margin ({2 * margin}), "
                             f"got {cell_size}")
        self.columns = min(columns or 10, len(sketches))
        self.rows = -(-len(sketches) // self.columns)
        self.font_size = font_size
        all_lines = [_stroke_pieces(sketch, scale_factor, int(prefix))
                     for sketch, prefix in zip(sketches, prefix_lengths)]
        extents = []
        for index, lines in enumerate(all_lines):
            points = np.concatenate([line for line, _, _ in lines]) if lines else np.zeros((1, 2))
            low, high = points.min(axis=0), points.max(axis=0)
            if cell_size is not None:
                zoom = (cell_size - 2 * margin) / np.max(high - low) if np.any(high > low) else 1.0
                all_lines[index] = [(line * zoom, first, part) for line, first, part in lines]
                low, high = low * zoom, high * zoom
            extents.append((low, high))
        if cell_size is None:
            cell_w = max(high[0] - low[0] for low, high in extents) + 2 * margin
            cell_h = max(high[1] - low[1] for low, high in extents) + 2 * margin
        else:
            cell_w = cell_h = float(cell_size)
        label_h = 1.6 * font_size if labels is not None else 0.0
        if labels is not None:
            # Each label keeps inside its own cell, with half a font size free on either side:
            # cells sized by their sketches widen to the widest label, and fixed cells
            # (cell_size) keep their size and draw the labels smaller.
            label_w = _labels_width(labels, font_size)
            if cell_size is None:
                cell_w = max(cell_w, label_w)
            else:  # hinting makes the width not quite proportional to the size: shrink until it fits
                for _ in range(20):
                    if label_w <= cell_w:
                        break
                    self.font_size *= min(0.97, cell_w / label_w)
                    label_w = _labels_width(labels, self.font_size)
        self.width = self.columns * cell_w
        self.height = self.rows * (cell_h + label_h)
        self.cells = []
        for index, (lines, (low, high)) in enumerate(zip(all_lines, extents)):
            left = (index % self.columns) * cell_w
            top = (index // self.columns) * (cell_h + label_h)
            # Centre the sketch's bounding box in the drawing part of its cell.
            shift = np.array([left + cell_w / 2, top + cell_h / 2]) - (low + high) / 2
            label = None
            if labels is not None:
                label = (_label_text(labels[index]), left + cell_w / 2,
                         top + cell_h + 1.1 * font_size)
            self.cells.append(([(line + shift, first, part) for line, first, part in lines], label))


def sketch_to_svg(stroke3, path=None, scale_factor=1.0, stroke_width=2.0, margin=10.0,
                  color="black"):
    """Draws one stroke-3 sketch as SVG, one <path> per stroke.

    Args:
        stroke3: array of shape (N, 3).
        path: file to write, if given.
        scale_factor: multiplies dx and dy (see the section's note).
        stroke_width, margin: in pixels.
        color: the strokes' SVG colour.

    Returns:
        the SVG document as a string.
    """
    return sketches_to_svg([stroke3], path, columns=1, scale_factor=scale_factor,
                           stroke_width=stroke_width, margin=margin, color=color)


PREFIX_COLOR = "#3b7dd8"  # the given part of a completed sketch


def sketches_to_svg(sketches, path=None, columns=None, labels=None, scale_factor=1.0,
                    cell_size=None, stroke_width=2.0, margin=10.0, color="black", font_size=12.0,
                    prefix_lengths=None, prefix_color=PREFIX_COLOR):
    """Draws a grid of stroke-3 sketches as SVG, one <path> per stroke.

    Args:
        sketches: sequence of (N_i, 3) arrays.
        path: file to write, if given.
        columns: sketches per row (default: all, up to 10).
        labels: optional text under each sketch, one per sketch (None or "" for none), kept
            inside its cell: cells widen to the widest label, or with ``cell_size`` the labels
            are drawn smaller.
        scale_factor: multiplies dx and dy (see the section's note).
        cell_size: None: every cell has the size of the largest sketch, so sizes compare
            across the grid; a number: cells of that many pixels square, each sketch
            scaled to fit its own (one long stray line then cannot shrink the others).
        stroke_width, margin, font_size: in pixels.
        color: the strokes' SVG colour.
        prefix_lengths: optional, one per sketch: its first that many points (a prefix it
            was completed from) are drawn in ``prefix_color``, the rest in ``color``.

    Returns:
        the SVG document as a string.
    """
    import svgwrite

    grid = _Grid(sketches, columns, labels, scale_factor, margin, font_size, cell_size,
                 prefix_lengths)
    drawing = svgwrite.Drawing(size=(f"{grid.width:.0f}", f"{grid.height:.0f}"))
    drawing.add(drawing.rect(insert=(0, 0), size=("100%", "100%"), fill="white"))
    for lines, label in grid.cells:
        for line, _, in_prefix in lines:
            if len(line) == 1:  # a single point: a zero-length segment shows as a dot
                line = np.concatenate([line, line])
            coords = [f"{x:.2f},{y:.2f}" for x, y in line]
            drawing.add(drawing.path(
                d=f"M{coords[0]} L{' '.join(coords[1:])}", fill="none",
                stroke=prefix_color if in_prefix else color,
                stroke_width=stroke_width, stroke_linecap="round", stroke_linejoin="round"))
        if label is not None:
            text, x, y = label
            drawing.add(drawing.text(text, insert=(f"{x:.2f}", f"{y:.2f}"), text_anchor="middle",
                                     font_size=f"{grid.font_size:g}", font_family="sans-serif"))
    svg = drawing.tostring()
    if path is not None:
        write_atomically(path, svg)
    return svg


MAX_PICTURE_SIDE = 65535  # pixels: matplotlib's Agg renderer draws no larger side


class _Canvas:
    """A matplotlib Agg figure of exactly the grid's size in pixels, y downwards."""

    def __init__(self, grid, stroke_width, color):
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        self.dpi = PNG_DPI
        width, height = max(1, round(grid.width)), max(1, round(grid.height))
        if max(width, height) > MAX_PICTURE_SIDE:
            raise ValueError(f"the picture would be {width} x {height} pixels, more than the "
                             f"{MAX_PICTURE_SIDE} a side can have: give a cell size (cell_size=, "
                             "the sampler's --cell_size, a GIF's size) to scale each sketch to fit")
        self.figure = Figure(figsize=(width / self.dpi, height / self.dpi), dpi=self.dpi,
                             facecolor="white")
        self.canvas = FigureCanvasAgg(self.figure)
        self.axes = self.figure.add_axes((0, 0, 1, 1))
        self.axes.set_xlim(0, grid.width)
        self.axes.set_ylim(grid.height, 0)
        self.axes.axis("off")
        points_per_pixel = 72 / self.dpi
        self.style = dict(color=color, linewidth=stroke_width * points_per_pixel,
                          solid_capstyle="round", solid_joinstyle="round",
                          marker="o", markersize=0, markevery=[0])
        self.dot_size = stroke_width * points_per_pixel
        self.font_points = grid.font_size * points_per_pixel

    def line(self, points, color=None):
        """Adds a stroke (a single point shows as a dot), in `color` if given; returns its Line2D."""
        style = self.style if color is None else {**self.style, "color": color}
        (line,) = self.axes.plot(points[:, 0], points[:, 1], **style)
        self.set_points(line, points)
        return line

    def set_points(self, line, points):
        line.set_data(points[:, 0], points[:, 1])
        line.set_markersize(self.dot_size if len(points) == 1 else 0)

    def text(self, text, x, y):
        self.axes.text(x, y, text, ha="center", va="baseline", fontsize=self.font_points,
                       family="sans-serif")

    def image(self):
        """The figure as it stands, as an RGB Pillow image."""
        from PIL import Image

        self.canvas.draw()
        return Image.fromarray(np.asarray(self.canvas.buffer_rgba())).convert("RGB")


def sketches_to_image(sketches, columns=None, labels=None, scale_factor=1.0, cell_size=None,
                      stroke_width=2.0, margin=10.0, color="black", font_size=12.0,
                      prefix_lengths=None, prefix_color=PREFIX_COLOR):
    """Draws a grid of stroke-3 sketches as an RGB Pillow image (``sketches_to_png`` in memory).

    The layout and colours are those of ``sketches_to_svg`` with the same arguments: with ``cell_size``,
    ``columns * cell_size`` pixels wide and ``rows * cell_size`` high (plus 1.6 font sizes
    per row for labels).
    """
    grid = _Grid(sketches, columns, labels, scale_factor, margin, font_size, cell_size,
                 prefix_lengths)
    canvas = _Canvas(grid, stroke_width, color)
    for lines, label in grid.cells:
        for points, _, in_prefix in lines:
            canvas.line(points, prefix_color if in_prefix else None)
        if label is not None:
            canvas.text(*label)
    return canvas.image()


def sketches_to_png(sketches, path, columns=None, labels=None, scale_factor=1.0,
                    cell_size=None, stroke_width=2.0, margin=10.0, color="black", font_size=12.0,
                    prefix_lengths=None, prefix_color=PREFIX_COLOR):
    """Draws a grid of stroke-3 sketches (one sketch: a list of one) to a PNG file.

    The layout and colours are those of ``sketches_to_svg`` with the same arguments.

    Returns:
        the image's (width, height) in pixels.
    """
    image = sketches_to_image(sketches, columns, labels, scale_factor, cell_size, stroke_width,
                              margin, color, font_size, prefix_lengths, prefix_color)
    encoded = io.BytesIO()
    image.save(encoded, format="PNG")
    write_atomically(path, encoded.getvalue())
    return image.size


def sketch_to_gif(stroke3, path, frames=None, scale_factor=1.0, duration=40, hold=1000,
                  stroke_width=2.0, margin=10.0, color="black", pen_color="red", size=None,
                  prefix_length=0, prefix_color=PREFIX_COLOR):
    """Writes an animated GIF of the pen drawing a stroke-3 sketch.

    Frame k of F shows the first ceil(k N / F) of the N points, with a dot where the pen
    is; the last frame shows the whole sketch and stays for ``hold`` ms.

    Args:
        stroke3: array of shape (N, 3).
        path: the .gif file to write.
        frames: number of frames F (default 100). A frame adds at least one point, so a
            sketch of N < F points gets N frames; an empty sketch gets one blank frame.
        scale_factor: multiplies dx and dy (see the section's note).
        duration: ms per frame; hold: ms of the last frame.
        stroke_width, margin: in pixels.
        color, pen_color: matplotlib colours of the strokes and of the pen's dot.
        size: None draws the sketch at its size (times scale_factor); a number makes the
            GIF that many pixels square, the sketch scaled to fit.
        prefix_length, prefix_color: the first prefix_length points are drawn in
            prefix_color (see ``sketches_to_svg``).

    Returns:
        the number of frames drawn (Pillow stores two identical frames in a row, such as
        those of a zero-length move, as one frame shown for both durations).
    """
    stroke3 = _as_stroke3(stroke3)
    total = len(stroke3)
    if frames is not None and frames < 1:
        raise ValueError(f"frames must be at least 1, got {frames}")
    # Pillow merges identical consecutive frames, so each frame must add a point.
    frames = min(100 if frames is None else frames, max(total, 1))
    grid = _Grid([stroke3], 1, None, scale_factor, margin, 0.0, cell_size=size,
                 prefix_lengths=[prefix_length])
    canvas = _Canvas(grid, stroke_width, color)
    lines = grid.cells[0][0]  # (points, index of the first one in the sketch, in_prefix)
    artists = [canvas.line(points[:0], prefix_color if in_prefix else None)
               for points, _, in_prefix in lines]
    (pen,) = canvas.axes.plot([], [], "o", color=pen_color, markersize=2.5 * canvas.dot_size)
    images = []
    for k in range(1, frames + 1):
        shown = -(-k * total // frames)  # ceil(k N / F) points
        for artist, (points, first, _) in zip(artists, lines):
            canvas.set_points(artist, points[:max(0, shown - first)])
        if shown:
            last = shown - 1  # the pen is at this point, of the last piece holding it:
            points, first, _ = [piece for piece in lines if piece[1] <= last][-1]
            pen.set_data(*points[last - first].reshape(2, 1))
        images.append(canvas.image())
    durations = [duration] * (len(images) - 1) + [hold]
    encoded = io.BytesIO()
    images[0].save(encoded, format="GIF", save_all=True, append_images=images[1:],
                   duration=durations, loop=0)
    write_atomically(path, encoded.getvalue())
    return len(images)
