"""TensorFlow's checkpoint reader, for TF1 checkpoints of other programs (Magenta's).

Reads a checkpoint's variable names, shapes and values without building any graph; a file
TensorFlow cannot read is one line naming it.
"""

import tensorflow as tf

from sketch_rnn.files import first_line


def open_checkpoint(prefix):
    """The variables of the checkpoint `prefix` (`DIR/name-N`, beside `DIR/name-N.index`).

    Returns:
        (shapes, read): {name: shape list} of every variable, and `read(name) -> np.ndarray`,
        which reads one variable's value when called.

    Raises:
        ValueError: naming `prefix` (and the variable), for a file TensorFlow cannot read.
    """
    try:
        reader = tf.train.load_checkpoint(prefix)
        shapes = reader.get_variable_to_shape_map()
    except (tf.errors.OpError, ValueError) as err:
        raise ValueError(f"{prefix}: not a readable TensorFlow checkpoint ({_reason(err)})") from None

    def read(name):
        try:
            return reader.get_tensor(name)
        except (tf.errors.OpError, IndexError, ValueError, OSError) as err:  # truncated: IndexError
            raise ValueError(f"{prefix}: cannot read variable '{name}' ({_reason(err)})") from None

    return shapes, read


def _reason(err):
    return first_line(err.message if isinstance(err, tf.errors.OpError) else err)
