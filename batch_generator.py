"""Keras batches of stroke-5 sketches drawn from a utils.DataLoader (and, for a CNN encoder,
pictures of them rendered per batch)."""

import math

import keras
import numpy as np


class SketchBatches(keras.utils.PyDataset):
    """Serves (x, y) stroke-5 batches of a DataLoader to ``model.fit``.

    The order of the sketches is a permutation drawn from ``[seed, epoch]`` and the
    augmentation of batch i from ``[seed, epoch, i]``, so a batch depends only on
    (seed, epoch, i): it is the same whatever worker builds it and in whatever order,
    and a run resumed at ``initial_epoch`` sees the batches that the uninterrupted run
    would have seen. With TensorFlow, training reads ``piece(epoch, i)`` through one
    tf.data pipeline over all its epochs (``seq2seqVAE_train.one_device_input``); given to
    ``fit`` itself (other backends), ``epoch`` is set from outside, by
    ``callbacks.BatchEpoch`` at the start of each epoch, from Keras's own epoch index:
    counting ``on_epoch_end`` calls would not do, as Keras makes one more of them than
    there are epochs.

    Args:
        loader: ``utils.DataLoader`` holding the sketches.
        batch_size: sketches per batch.
        augment: apply the loader's random_scale / augment_strokes settings.
        shuffle: draw a new order each epoch; False keeps the loader's order.
        seed: non-negative int seeding order and augmentation.
        steps_per_epoch: if given, serve at most this many batches per epoch.
        drop_remainder: serve only full batches (training); False adds a last, smaller
            batch so that validation and test see every sketch.
        bucket_batches: when > 1, the epoch's order is cut into pools of this many
            batches and each pool is sorted by length before it is cut into batches, whose
            order is then shuffled: batches hold sketches of similar lengths.
        trim: cut each batch after its longest sketch instead of padding it to
            max_seq_len. The model's loss is divided by max_seq_len either way; what a
            trimmed batch leaves out is the training pen loss on steps after every sketch
            of the batch has ended (the evaluation losses mask those steps anyway).
        tail: with `trim`, cut each batch this many steps after its longest sketch (at
            most max_seq_len steps): every sketch of the batch then trains its
            end-of-sketch pen state (p3 = 1) on at least `tail` steps (with tail 0 the
            batch's longest sketch trains it on none).
        render: None, or a function of the batch's B stroke-3 sketches returning their
            pictures (B, S, S, 1) (`sketch_rnn.raster.batch_renderer`): x is then the dict
            {"strokes", "image"}, the pictures drawn from the augmented sketches, so that
            the picture shows what the decoder is to draw.
        **kwargs: passed to ``keras.utils.PyDataset`` (workers, use_multiprocessing,
            max_queue_size).
    """

    def __init__(
        self,
        loader,
        batch_size,
        augment=False,
        shuffle=True,
        seed=0,
        steps_per_epoch=None,
        drop_remainder=True,
        bucket_batches=0,
        trim=False,
        tail=0,
        render=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.loader = loader
        self.batch_size = batch_size
        self.augment = augment
        self.shuffle = shuffle
        self.seed = seed
        self.steps_per_epoch = steps_per_epoch
        self.drop_remainder = drop_remainder
        self.bucket_batches = bucket_batches
        self.trim = trim
        self.tail = tail
        self.render = render
        self.epoch = 0  # the epoch being served, set by callbacks.BatchEpoch
        self._order_cache = None  # (epoch, permutation) of the last epoch asked for
        if len(self) == 0:
            raise ValueError(
                f"{loader.name}: {len(loader)} sketches make no batch of "
                f"batch_size={batch_size} (drop_remainder={drop_remainder})"
            )

    def __len__(self):
        if self.drop_remainder:
            num = len(self.loader) // self.batch_size
        else:
            num = math.ceil(len(self.loader) / self.batch_size)
        if self.steps_per_epoch is not None:
            num = min(num, self.steps_per_epoch)
        return num

    def _order(self, epoch):
        """Returns the sketch order of ``epoch``."""
        cached = self._order_cache  # one read: worker threads may replace it meanwhile
        if cached is not None and cached[0] == epoch:
            return cached[1]
        rng = np.random.default_rng([self.seed, epoch])
        order = rng.permutation(len(self.loader)) if self.shuffle else np.arange(len(self.loader))
        if self.bucket_batches > 1:
            order = self._bucket(order, rng if self.shuffle else None)
        self._order_cache = (epoch, order)
        return order

    def _bucket(self, order, rng):
        """Sorts pools of `bucket_batches` batches by length; shuffles the batches' order."""
        pool = self.bucket_batches * self.batch_size
        lengths = self.loader.lengths
        pools = [order[start:start + pool] for start in range(0, len(order), pool)]
        order = np.concatenate([p[np.argsort(lengths[p], kind="stable")] for p in pools])
        if rng is None:
            return order
        full = len(order) // self.batch_size * self.batch_size
        batches = order[:full].reshape(-1, self.batch_size)[rng.permutation(full // self.batch_size)]
        return np.concatenate([batches.reshape(-1), order[full:]])

    def __getitem__(self, i):
        """Returns batch i of the current epoch as (x, y).

        Returns:
            x: float32 stroke-5 batch of shape (B, T + 1, 5) starting with S0, where T is
                max_seq_len, or when trimming min(max_seq_len, longest sketch + `tail`);
                with `render`, the dict {"strokes": that batch, "image": (B, S, S, 1)
                float32 pictures}.
            y: the targets x[:, 1:], shape (B, T, 5).
        """
        return self.piece(self.epoch, i)

    def piece(self, epoch, i, replica=0, replicas=1):
        """Replica `replica`'s rows of batch i of `epoch`, when `replicas` share each batch.

        The batch's rows are split in replica order, the first (rows % replicas) shares
        one row longer (`np.array_split`): replica r of a data-parallel step trains on the
        sketches one device would, and `model.LatentSample` gives it the matching rows of
        the z noise. A share is augmented from ``[seed, epoch, i, replica]`` (the whole
        batch, from ``[seed, epoch, i]``) and trimmed after its own longest sketch (plus
        `tail` steps).

        Returns:
            (x, y) as ``__getitem__``, with this replica's rows (possibly none, for a last
            batch smaller than the number of replicas).
        """
        if not 0 <= i < len(self):
            raise IndexError(f"batch index {i} out of range for {len(self)} batches")
        indices = self._order(epoch)[i * self.batch_size : (i + 1) * self.batch_size]
        key = [self.seed, epoch, i]
        if replicas > 1:
            indices = np.array_split(indices, replicas)[replica]
            key.append(replica)
        rng = np.random.default_rng(key) if self.augment else None
        sketches, x, lengths = self.loader.get_batch(indices, rng=rng, augment=self.augment)
        if self.trim:
            longest = int(lengths.max(initial=1))  # 1 for an empty share: no 0-step batch
            x = x[:, : min(longest + self.tail, self.loader.max_seq_len) + 1]
        y = x[:, 1:, :].copy()  # (B, T, 5)
        if self.render is not None:
            return {"strokes": x, "image": self.render(sketches)}, y
        return x, y


def evaluation_batches(loader, batch_size, render=None):
    """The batches that validation and test evaluate: every sketch once, in a fixed order.

    Evaluation masks every loss term after a sketch's end, so sorting the sketches by
    length and cutting each batch after its longest sketch changes its figures not at all,
    only its speed. JAX compiles the model once per batch shape: there every batch keeps
    the full length, in the loader's order. Training's validation, its final test and
    evaluate.py all batch this way, so that the z noise (see `callbacks.FixedEvaluationNoise`)
    falls on the same sketches and the same weights give the same figures.

    Args:
        loader: `utils.DataLoader` of the split.
        batch_size: sketches per batch (the run's); the last batch may be smaller.
        render: as `SketchBatches` (a cnn model's `sketch_rnn.raster.batch_renderer`).
    """
    trim = keras.backend.backend() != "jax"
    return SketchBatches(loader, batch_size, shuffle=False, drop_remainder=False,
                         bucket_batches=len(loader) if trim else 0, trim=trim, render=render)
