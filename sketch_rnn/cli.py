"""What the command-line tools share: a quiet TensorFlow start and flag suggestions.

`quiet_tensorflow()` must run before anything imports Keras or TensorFlow. TensorFlow 2.21
logs its start-up notes (oneDNN, no CUDA driver) through Abseil before Abseil's logging is
initialised, and those lines ignore TF_CPP_MIN_LOG_LEVEL: so the import itself runs with
the process's stderr (file descriptor 2) sent to a temporary file, and what TensorFlow
wrote there is passed on afterwards without the lines below the level asked for.
"""

import argparse
import difflib
import importlib
import importlib.util
import os
import re
import sys
import tempfile

# Abseil/glog lines start with a severity letter and a date: "I0000 00:00:17...", "W1130 ...".
_LOG_LINE = re.compile(r"^([IWEF])\d{4} \d\d:\d\d:\d\d")
_SEVERITIES = "IWEF"  # TF_CPP_MIN_LOG_LEVEL 1 hides I, 2 also W, 3 also E
_NOT_INITIALISED = "WARNING: All log messages before absl::InitializeLog() is called"


def quiet_tensorflow(level="3"):
    """Imports Keras, and TensorFlow if it is installed, without TensorFlow's C++ chatter.

    Sets TF_CPP_MIN_LOG_LEVEL to `level` unless the user has set it (0 shows everything,
    1 hides information lines, 2 warnings too, 3 errors too), then imports with the lines
    below that level removed from what the import writes to stderr.
    """
    level = os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", str(level))
    hidden = _SEVERITIES[:max(0, min(3, int(level) if level.isdigit() else 0))]
    modules = ["keras"] + (["tensorflow"] if importlib.util.find_spec("tensorflow") else [])
    if not hidden or "tensorflow" in sys.modules:
        for name in modules:
            importlib.import_module(name)
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as captured:
        os.dup2(captured.fileno(), 2)
        try:
            for name in modules:
                importlib.import_module(name)
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            for line in captured.read().decode(errors="replace").splitlines(keepends=True):
                match = _LOG_LINE.match(line)
                if line.startswith(_NOT_INITIALISED) or (match and match.group(1) in hidden):
                    continue
                sys.stderr.write(line)
            sys.stderr.flush()


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
        return "".join(f"\n  {line}" for line in advice)
