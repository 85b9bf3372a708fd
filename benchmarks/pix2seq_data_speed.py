"""A cnn model's data time per batch (strokes, and pictures rendered from them) against its
training step time.

Usage:
    python benchmarks/pix2seq_data_speed.py --data datasets/cat_eye_guitar.npz \\
        [--hparams "encoder=cnn,kl_weight=0"] [--batches 20]

Times, over --batches training batches of the data's train split (augmented, as training
serves them): building the stroke-5 batch (`DataLoader.get_batch`), rendering its pictures
(`sketch_rnn.raster`), and one training step (`train_on_batch`, after two warm-up steps), one
after the other.
A benchmark, not a test: run it on an otherwise idle machine.
"""

import argparse
import dataclasses
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="a Sketch-RNN .npz data set")
    parser.add_argument("--hparams", default="encoder=cnn,kl_weight=0",
                        help="hparam overrides (the data sets max_seq_len to its longest sketch)")
    parser.add_argument("--batches", type=int, default=20, help="training batches to time")
    args = parser.parse_args()

    from sketch_rnn.cli import quiet_tensorflow

    quiet_tensorflow()
    import numpy as np

    import utils
    from seq2seqVAE import HParams, build_model, compile_model
    from sketch_rnn.raster import batch_renderer

    hps = HParams.parse(args.hparams)
    arrays = utils.load_npz(args.data)
    splits = [[np.asarray(s, np.float32) for s in arrays[name]] for name in utils.SPLITS]
    hps = dataclasses.replace(hps, max_seq_len=utils.longest_sketch(splits, hps.max_seq_len))
    loader = utils.DataLoader(splits[0], batch_size=hps.batch_size, max_seq_len=hps.max_seq_len,
                              random_scale_factor=hps.random_scale_factor,
                              augment_stroke_prob=hps.augment_stroke_prob)
    loader.normalize()
    render = batch_renderer(hps)
    count = min(args.batches, loader.num_batches)
    model = compile_model(build_model(hps), hps)
    rng = np.random.default_rng(hps.seed)
    order = rng.permutation(len(loader))

    strokes_time, render_time, step_time = [], [], []
    for i in range(count + 2):
        indices = order[(i % count) * hps.batch_size:(i % count + 1) * hps.batch_size]
        start = time.perf_counter()
        sketches, x, _ = loader.get_batch(indices, rng=rng, augment=True)
        y = x[:, 1:].copy()
        served = time.perf_counter()
        if render is not None:
            x = {"strokes": x, "image": render(sketches)}
        rendered = time.perf_counter()
        model.train_on_batch(x, y)
        stepped = time.perf_counter()
        if i >= 2:  # the first steps trace the model
            strokes_time.append(served - start)
            render_time.append(rendered - served)
            step_time.append(stepped - rendered)
    print(f"{args.data}: {count} batches of {hps.batch_size} sketches, max_seq_len "
          f"{hps.max_seq_len}, encoder {hps.encoder}, decoder {hps.dec_model} {hps.dec_rnn_size}")
    print(f"strokes (stroke-5 batch, augmented): {1000 * np.mean(strokes_time):7.1f} ms/batch")
    if render is not None:
        print(f"pictures ({hps.img_size}x{hps.img_size}):           "
              f"{1000 * np.mean(render_time):7.1f} ms/batch")
    print(f"training step:                       {1000 * np.mean(step_time):7.1f} ms/batch")


if __name__ == "__main__":
    main()
