"""What the command lines share: a quiet TensorFlow start, and flag errors that suggest.

    from sketch_rnn import cli

    args = cli.ArgumentParser(description=...).parse_args(argv)  # before anything heavy
    cli.quiet_tensorflow()  # then import keras, seq2seqVAE, ...

This module imports neither Keras nor TensorFlow at import time.
"""

import argparse
import difflib
import importlib
import importlib.util
import os
import re
import sys
import tempfile

# A line of TensorFlow's C++ (absl) log: severity letter, MMDD, time, thread id, file:line].
CPP_LOG_LINE = re.compile(r"^([IWEF])\d{4} [\d:.]+ +\d+ \S+:\d+\] ")
ABSL_PREAMBLE = "WARNING: All log messages before absl::InitializeLog() is called"


def quiet_tensorflow():
    """Imports Keras (and TensorFlow behind it) without TensorFlow's C++ start-up lines.

    TF_CPP_MIN_LOG_LEVEL hides TensorFlow's C++ log lines below a severity (0 all, 1 no
    INFO, 2 no WARNING, 3 no ERROR); unless the user set it, it is set to 3 here, which
    also hides the CUDA probing errors of a machine without a GPU. The lines TensorFlow
    logs while its libraries load (the oneDNN note, `cudart_stub`) come before its logging
    is set up and ignore that variable, so the import runs with the standard error stream
    (file descriptor 2) going to a temporary file, and afterwards everything in it except
    C++ log lines below that level is written to the real one.

    Call it before anything imports Keras; afterwards (or if Keras is already imported) it
    only sets the variable, which then may not take effect.
    """
    level = os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if "keras" in sys.modules or "tensorflow" in sys.modules:
        return
    try:
        level = int(level)
    except ValueError:
        level = 0
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            # The import is the point: Keras loads its backend, and TensorFlow (if installed,
            # whatever the backend) is loaded here too, so that a later import (TensorBoard
            # logging on the JAX backend) prints nothing either.
            for name in ["keras"] + (["tensorflow"] if importlib.util.find_spec("tensorflow") else []):
                importlib.import_module(name)
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            lines = capture.read().decode("utf-8", "replace").splitlines(keepends=True)
            sys.stderr.write("".join(line for line in lines if not _hidden(line, level)))
            sys.stderr.flush()


def _hidden(line, level):
    """Whether TF_CPP_MIN_LOG_LEVEL=level hides this line of TensorFlow's C++ log."""
    if line.startswith(ABSL_PREAMBLE):
        return level >= 1
    match = CPP_LOG_LINE.match(line)
    return bool(match) and "IWEF".index(match.group(1)) < min(level, 3)


class ArgumentParser(argparse.ArgumentParser):
    """`argparse.ArgumentParser` whose error for an unknown flag names the closest real one.

    Args:
        hints: optional {name: advice} for names that are not flags but that people type as
            flags (a hyperparameter, say); a mistyped flag close to one gets its advice.
        *args, **kwargs: as `argparse.ArgumentParser`.
    """

    def __init__(self, *args, hints=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.hints = dict(hints or {})

    def parse_args(self, args=None, namespace=None):
        namespace, unknown = self.parse_known_args(args, namespace)
        if unknown:
            self.error("unrecognized arguments: " + " ".join(unknown) + self._suggestions(unknown))
        return namespace

    def error(self, message):
        """Exits with status 2 after one line, as every other error of these commands (argparse
        would print the whole usage block first; --help still shows it)."""
        self.exit(2, f"{self.prog}: error: {message} [{self.prog} --help lists the flags]\n")

    def _suggestions(self, unknown):
        flags = [s for action in self._actions for s in action.option_strings if s.startswith("--")]
        advice = []
        for argument in unknown:
            if not argument.startswith("--"):
                continue
            name = argument.split("=", 1)[0]
            close = difflib.get_close_matches(name, flags, n=1, cutoff=0.75)
            hint = difflib.get_close_matches(name[2:], list(self.hints), n=1, cutoff=0.75)
            if close:
                advice.append(f"{name}: did you mean {close[0]}?")
            elif hint:
                advice.append(f"{name}: {self.hints[hint[0]]}")
        return f" ({'; '.join(advice)})" if advice else ""  # one line, as every error here
