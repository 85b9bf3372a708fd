"""Weight files from before the cells (`sketch_rnn.cells`), converted to today's layout.

Until the cell redesign, the recurrent layers were `SketchLSTM`s that held the LSTM's weights
themselves; Keras files name a layer's entry after its class, so such a file has
`layers/sketch_lstm{,_1,_2}/vars/{0,1,2,seed_state}` where today's has
`layers/recurrent{,_1,_2}/cell/vars/{0,1,2}` (kernel, recurrent_kernel, bias: the same
arrays) and `layers/recurrent{...}/vars/seed_state`. Everything else (the dense layers, the
latent layer, the optimizer's state) is unchanged. `load_weights` converts such a file on the
fly; the command converts a run folder's checkpoints in place:

    python -m sketch_rnn.legacy RUN_DIR_OR_WEIGHTS_FILE [...]
"""

import glob
import os
import sys
import tempfile
import warnings

OLD = "sketch_lstm"  # the entry names of the former layer class
NEW = "recurrent"


HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def check_weights_file(path):
    """ValueError in one line (the reason, without the path) unless `path` is an HDF5 file, as
    Keras's .weights.h5 files are; it names the command that imports the other formats."""
    with open(path, "rb") as f:
        if f.read(len(HDF5_SIGNATURE)) == HDF5_SIGNATURE:
            return
    name = os.path.basename(path).lower()
    hint = ""
    if name.endswith(".json"):
        hint = "; a magenta.js model? import it with convert_model.py --from_magenta_js"
    elif ".index" in name or ".data-" in name or name.endswith(".meta"):
        hint = ("; an official TensorFlow 1 checkpoint? import its run folder with "
                "convert_model.py --from_magenta")
    raise ValueError(f"not a Keras weights file (.weights.h5, HDF5){hint}")


def needs_conversion(path):
    """True for a weights file written before the cells (it has a `sketch_lstm` entry)."""
    import h5py

    with h5py.File(path, "r") as f:
        return "layers" in f and any(name.startswith(OLD) for name in f["layers"])


def convert(source, target):
    """Writes `source` (the former layout) to `target` in today's layout."""
    import h5py

    with h5py.File(source, "r") as old, h5py.File(target, "w") as new:
        for key, value in old.attrs.items():
            new.attrs[key] = value
        for name in old:
            if name != "layers":
                old.copy(old[name], new, name=name)
        for name, group in old["layers"].items():
            if not name.startswith(OLD):
                old.copy(group, new.require_group("layers"), name=name)
                continue
            layer = new.require_group("layers").create_group(NEW + name[len(OLD):])
            for key, dataset in group["vars"].items():  # 0, 1, 2: the cell's; seed_state: the layer's
                parent = layer.require_group("vars" if key == "seed_state" else "cell/vars")
                old.copy(dataset, parent, name=key)


def load_weights(model, path):
    """`model.load_weights(path)`, converting a file of the former layout on the fly.

    Keras warns about each part of a file that does not fit before it raises; those warnings
    are dropped when it raises (the error says it in one line) and kept when the load works.
    """
    check_weights_file(path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if not needs_conversion(path):
            model.load_weights(path)
        else:
            with tempfile.TemporaryDirectory() as folder:
                converted = os.path.join(folder, os.path.basename(path))
                convert(path, converted)
                model.load_weights(converted)
    for warning in caught:  # only reached when the load worked
        warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)


def convert_in_place(path):
    """Converts one weights file, atomically; returns False if it needed no conversion."""
    if not needs_conversion(path):
        return False
    folder = os.path.dirname(os.path.abspath(path))
    with tempfile.NamedTemporaryFile(dir=folder, suffix=".weights.h5", delete=False) as scratch:
        temporary = scratch.name
    try:
        convert(path, temporary)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)
    return True


def main(argv=None):
    paths = sys.argv[1:] if argv is None else argv
    if not paths:
        print(__doc__.strip().splitlines()[-1].strip(), file=sys.stderr)
        return 2
    for path in paths:
        files = (sorted(glob.glob(os.path.join(path, "checkpoints", "*.weights.h5")))
                 if os.path.isdir(path) else [path])
        if not files:
            print(f"error: {path}: no checkpoints/*.weights.h5 in this folder", file=sys.stderr)
            return 2
        for file in files:
            try:
                changed = convert_in_place(file)
            except OSError as error:
                print(f"error: {file}: not a readable weights file ({error})", file=sys.stderr)
                return 2
            print(f"{file}: {'converted' if changed else 'already in the current layout'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
