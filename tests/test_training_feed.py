"""How training's batches reach `fit` on one device (seq2seqVAE_train.one_device_input): with
TensorFlow, one tf.data pipeline over every epoch, serving what `SketchBatches` serves."""

import keras
import numpy as np
import pytest
from test_bucket_tail import sketches_of

import utils
from batch_generator import SketchBatches
from seq2seqVAE import HParams, build_model, compile_model
from seq2seqVAE_train import one_device_input


def elements(dataset):
    return [(np.asarray(x), np.asarray(y)) for x, y in dataset]


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="the tf.data feed")
def test_the_feed_serves_each_epochs_batches_in_order_from_the_initial_epoch():
    lengths = np.random.default_rng(1).integers(3, 20, size=24)
    loader = utils.DataLoader(sketches_of(lengths), batch_size=4, max_seq_len=20,
                              random_scale_factor=0.2, augment_stroke_prob=0.1)
    batches = SketchBatches(loader, 4, augment=True, shuffle=True, seed=5, bucket_batches=3,
                            trim=True, tail=2)
    fit_data, callbacks = one_device_input(batches, initial_epoch=2, epochs=4)
    assert fit_data["steps_per_epoch"] == len(batches) == 6 and callbacks == []
    served = elements(fit_data["x"])
    expected = [batches.piece(epoch, i) for epoch in (2, 3) for i in range(len(batches))]
    assert len(served) == len(expected) == 12
    for (x, y), (x_ref, y_ref) in zip(served, expected):
        np.testing.assert_array_equal(x, x_ref)
        np.testing.assert_array_equal(y, y_ref)
    # Trimmed to different lengths, shuffled differently in the two epochs.
    assert len({x.shape[1] for x, _ in served}) > 1
    assert not all(np.array_equal(a[0], b[0]) for a, b in zip(served[:6], served[6:]))


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="the tf.data feed")
def test_training_takes_trimmed_batches_whose_first_two_have_the_same_length():
    # Sorted, unshuffled: batches of longest 5, 5 and then 9 points. Keras takes a
    # SketchBatches' shapes from its first two batches, and the third then fails.
    loader = utils.DataLoader(sketches_of([5, 4, 5, 5, 9, 9]), batch_size=2, max_seq_len=12)
    batches = SketchBatches(loader, 2, shuffle=False, bucket_batches=3, trim=True)
    assert [batches[i][0].shape[1] for i in range(3)] == [6, 6, 10]
    hps = HParams.parse("dec_rnn_size=8,num_mixture=2,max_seq_len=12,batch_size=2,"
                        "conditional=False,use_recurrent_dropout=False")
    model = compile_model(build_model(hps), hps)
    fit_data, callbacks = one_device_input(batches, 0, 1)
    history = model.fit(**fit_data, epochs=1, callbacks=callbacks, shuffle=False, verbose=0)
    assert int(keras.ops.convert_to_numpy(model.optimizer.iterations)) == 3
    assert np.isfinite(history.history["loss"][-1])
