"""The DataLoader: one split's sketches, clamped and scaled, in stroke-5 batches (official DataLoader).
"""

import copy

import numpy as np

from sketch_rnn.strokes import STROKE_LIMIT, augment_strokes, clamp_and_scale, random_scale, to_stroke5


class DataLoader:
    """Holds the sketches of one split and builds stroke-5 batches (official DataLoader).

    Sketches longer than ``max_seq_len`` are dropped, values are clamped to
    [-limit, limit] and dx, dy are divided by ``scale_factor``. Unlike the official code
    the sketches keep their order (no sort by length).

    Args:
        strokes: sequence of (N, 3) stroke-3 arrays.
        batch_size: sketches per batch (used for ``num_batches``).
        max_seq_len: longest sketch kept; batches have max_seq_len + 1 steps.
        scale_factor: dx and dy are divided by it on loading.
        random_scale_factor: augmentation stretch, see ``random_scale``.
        augment_stroke_prob: augmentation drop probability, see ``augment_strokes``.
        limit: absolute values above it are clamped, as in the official code.
        name: split name used in messages.
        labels: optional, one label per sketch of ``strokes`` (as ``load_labelled_strokes``
            gives); ``self.labels`` keeps those of the sketches kept, in their order.
    """

    def __init__(
        self,
        strokes,
        batch_size=100,
        max_seq_len=250,
        scale_factor=1.0,
        random_scale_factor=0.0,
        augment_stroke_prob=0.0,
        limit=STROKE_LIMIT,
        name="train",
        labels=None,
    ):
        if batch_size < 1:
            raise ValueError(f"{name}: batch_size must be at least 1, got {batch_size}")
        if not scale_factor > 0:
            raise ValueError(
                f"{name}: scale_factor must be positive, got {scale_factor}"
            )
        self.batch_size = batch_size
        self.max_seq_len = max_seq_len
        self.scale_factor = scale_factor
        self.random_scale_factor = random_scale_factor
        self.augment_stroke_prob = augment_stroke_prob
        self.limit = limit
        self.name = name
        self.preprocess(strokes, labels)

    def preprocess(self, strokes, labels=None):
        """Keeps sketches of at most max_seq_len points (and their labels), clamps and scales them."""
        if labels is not None and len(labels) != len(strokes):
            raise ValueError(f"{self.name}: got {len(labels)} labels for {len(strokes)} sketches")
        self.strokes = []
        kept = []
        for index, sketch in enumerate(strokes):
            if len(sketch) > self.max_seq_len:
                continue
            self.strokes.append(clamp_and_scale(sketch, self.scale_factor, self.limit))
            kept.append(index)
        self.labels = None if labels is None else np.asarray(labels)[np.array(kept, np.int64)]
        self.num_dropped = len(strokes) - len(self.strokes)
        self.lengths = np.array([len(s) for s in self.strokes], dtype=np.int64)
        print(
            f"{self.name}: dropped {self.num_dropped} of {len(strokes)} sketches "
            f"longer than max_seq_len={self.max_seq_len}"
        )

    def __len__(self):
        return len(self.strokes)

    def subset(self, indices, name=None):
        """A loader of the sketches at ``indices`` (and their labels), in that order, with
        this one's settings; nothing is preprocessed again (the sketch arrays are shared)."""
        indices = np.asarray(indices, np.int64)
        part = copy.copy(self)
        part.strokes = [self.strokes[i] for i in indices]
        part.lengths = self.lengths[indices]
        part.labels = None if self.labels is None else self.labels[indices]
        part.num_dropped = 0
        part.name = self.name if name is None else name
        return part

    @property
    def num_batches(self):
        """Number of full batches of batch_size sketches."""
        return len(self) // self.batch_size

    def calculate_normalizing_scale_factor(self):
        """Returns the standard deviation of all dx and dy values taken together."""
        if not self.strokes:
            raise ValueError(f"{self.name}: no sketches to compute a scale factor from")
        offsets = np.concatenate([sketch[:, 0:2].ravel() for sketch in self.strokes])
        return float(np.std(offsets, dtype=np.float64))

    def normalize(self, scale_factor=None):
        """Divides dx and dy of every sketch by scale_factor (by default its own std).

        The validation and test loaders must be given the training set's factor. Calling
        this twice divides twice, as in the official code.

        Args:
            scale_factor: the divisor; computed with
                ``calculate_normalizing_scale_factor`` when None.
        """
        if scale_factor is None:
            scale_factor = self.calculate_normalizing_scale_factor()
        if not (np.isfinite(scale_factor) and scale_factor > 0):
            raise ValueError(
                f"{self.name}: the normalizing scale factor must be a positive number, "
                f"got {scale_factor}"
            )
        self.scale_factor = float(scale_factor)
        for sketch in self.strokes:
            sketch[:, 0:2] /= self.scale_factor

    def get_batch(self, indices, rng=None, augment=False, max_len=None):
        """Builds the batch of the sketches at ``indices``.

        Args:
            indices: sequence of B sketch indices.
            rng: ``np.random.Generator`` for augmentation (a fresh unseeded one when
                None).
            augment: apply ``random_scale`` (random_scale_factor) and then
                ``augment_strokes`` (augment_stroke_prob), as official
                _get_batch_from_indices.
            max_len: time steps after the start token; defaults to max_seq_len and may
                be smaller as long as every sketch of the batch fits.

        Returns:
            (stroke3_list, stroke5, seq_len): the B (augmented) stroke-3 arrays, the
            float32 stroke-5 batch of shape (B, max_len + 1, 5) and the int64 array of
            the B sketch lengths.
        """
        if max_len is None:
            max_len = self.max_seq_len
        if augment and rng is None:
            rng = np.random.default_rng()
        batch = []
        for index in indices:
            sketch = self.strokes[index]
            if augment:
                if self.random_scale_factor > 0:
                    sketch = random_scale(sketch, self.random_scale_factor, rng)
                if self.augment_stroke_prob > 0:
                    sketch = augment_strokes(sketch, self.augment_stroke_prob, rng)
            batch.append(sketch.copy())  # so callers cannot edit the loader's sketches
        seq_len = np.array([len(sketch) for sketch in batch], dtype=np.int64)
        return batch, to_stroke5(batch, max_len), seq_len
