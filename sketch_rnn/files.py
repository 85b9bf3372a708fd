"""Files the project reads and writes: one-line reasons, checks before reading, atomic writes.

Every command reads paths a user typed and writes into folders a user named; these helpers
make the answers the same everywhere: a missing or irregular file is one line naming it, a
write never goes through a symbolic link and never leaves half a file, JSON configs are
size- and depth-limited, and folders a failed start made are removed again.
"""

import contextlib
import json
import math
import os
import reprlib
import secrets
import stat


class UnsafePathError(ValueError):
    """A path we would write through is a symbolic link, or one we would read is not a file."""


def first_line(error, limit=300):
    """The reason an exception gives, in one line.

    Keras and urllib put an introduction, the reason and then lists of objects on separate
    lines: a first line that ends with ':' is joined to the next non-empty one and the rest
    is dropped. Long reasons are cut at ``limit`` characters.
    """
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if not lines:
        return type(error).__name__
    text = lines[0]
    if text.endswith(":") and len(lines) > 1:
        text = f"{text} {lines[1]}"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_regular_file(path, what=None):
    """Raises one line unless ``path`` is a regular file (or a link to one).

    Reading a FIFO waits forever and a device never ends: check before opening.

    Args:
        path: the file.
        what: the flag or file it came from, to start the message (e.g. "--checkpoint").

    Raises:
        FileNotFoundError: if nothing is there; UnsafePathError: if it is not a regular file.
    """
    lead = f"{what}: " if what else ""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise FileNotFoundError(f"{lead}{path} does not exist") from None
    except OSError as err:
        raise UnsafePathError(f"{lead}cannot read {path} ({err.strerror})") from None
    if stat.S_ISDIR(mode):
        raise UnsafePathError(f"{lead}{path} is a folder, expected a file")
    if not stat.S_ISREG(mode):
        raise UnsafePathError(f"{lead}{path} is not a regular file (a FIFO, socket or device); "
                              "refusing to read it")


def missing_folders(path):
    """The folders of `path`, it and its parents, that do not exist yet: deepest first."""
    missing, folder = [], os.path.abspath(path)
    while not os.path.lexists(folder):
        missing.append(folder)
        folder = os.path.dirname(folder)
    return missing


def remove_empty_folders(folders):
    """Removes each of `folders`, in their order (deepest first), that is empty; the others,
    and those another process has put files in, stay."""
    for folder in folders:
        with contextlib.suppress(OSError):
            os.rmdir(folder)


def is_within(path, folder):
    """True if ``path`` is the folder ``folder`` or lies inside it (it need not exist).

    Folders are compared as files (``os.path.samefile``), not by name: another spelling of
    the same folder (letter case on a case-insensitive file system, a bind mount) is the same.
    """
    if not os.path.isdir(folder):
        return False
    current = os.path.realpath(path)
    while True:
        if os.path.exists(current) and os.path.samefile(current, folder):
            return True
        parent = os.path.dirname(current)
        if parent == current:
            return False
        current = parent


def refuse_link(path, what=None):
    """Raises one line if ``path`` is a symbolic link: we never write through one."""
    if os.path.islink(path):
        lead = f"{what}: " if what else ""
        raise UnsafePathError(f"{lead}{path} is a symbolic link; refusing to write through it "
                              "(remove the link)")


def write_atomically(path, data, what=None):
    """Writes ``data`` to ``path`` via a new temporary file and a rename.

    ``data`` is bytes, a str (written as UTF-8), or a function that writes to the binary file
    it is given (to stream what would not fit in memory as one bytes object). ``what`` names
    the path in the error for a link (a flag, say).

    A link at ``path`` is refused, and the temporary file is created, never opened, so no
    link can redirect the write; a crash leaves the old file or none, never half a file.
    The temporary name, ``.tmp-<pid>-<random>-<name>``, is one that
    ``callbacks.remove_stale_temporaries`` recognises.
    """
    path = os.fspath(path)
    refuse_link(path, what)
    if isinstance(data, str):
        data = data.encode("utf-8")
    write = data if callable(data) else (lambda f: f.write(data))
    directory, name = os.path.split(os.path.abspath(path))
    temporary = os.path.join(directory, f".tmp-{os.getpid()}-{secrets.token_hex(4)}-{name}")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(temporary, flags, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException:
        if os.path.lexists(temporary):
            os.remove(temporary)
        raise


MAX_CONFIG_BYTES = 1 << 20
MAX_CONFIG_DEPTH = 16


def read_json_config(path):
    """Reads a run's JSON file (model_config.json) as a dict, with one-line errors.

    Args:
        path: the file.

    Returns:
        the dict it holds.

    Raises:
        FileNotFoundError, UnsafePathError: if it is missing or not a regular file.
        ValueError: naming the file, if it is larger than 1 MiB, not UTF-8, not JSON,
            nested deeper than 16 levels or not a JSON object.
    """
    config = read_json_file(path, "written by this project")
    if not isinstance(config, dict):
        raise ValueError(f"{path}: not a {os.path.basename(path)} written by this project "
                         f"(a JSON {type(config).__name__}, expected an object {{...}})")
    return config


def read_json_file(path, description=None):
    """Reads a small JSON file (a config) with one-line errors; any JSON value.

    Args:
        path: the file.
        description: how the messages describe the file ("not a model_config.json <it>").

    Raises:
        FileNotFoundError, UnsafePathError: if it is missing or not a regular file.
        ValueError: naming the file, if it is larger than 1 MiB, not UTF-8, not JSON or
            nested deeper than 16 levels.
    """
    check_regular_file(path)

    def wrong(reason):
        what = f"a {os.path.basename(path)} {description}" if description else "a JSON file"
        return ValueError(f"{path}: not {what} ({reason})")

    with open(path, "rb") as f:
        raw = f.read(MAX_CONFIG_BYTES + 1)
    if len(raw) > MAX_CONFIG_BYTES:
        raise wrong(f"larger than {MAX_CONFIG_BYTES} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise wrong(f"not UTF-8 text: byte {err.start} is {raw[err.start]:#04x}") from None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise wrong(f"not valid JSON: {first_line(err)}") from None
    except RecursionError:
        raise wrong(f"nested deeper than {MAX_CONFIG_DEPTH} levels") from None
    pending = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if depth > MAX_CONFIG_DEPTH:
            raise wrong(f"nested deeper than {MAX_CONFIG_DEPTH} levels")
        children = item.values() if isinstance(item, dict) else item if isinstance(
            item, list) else ()
        pending.extend((child, depth + 1) for child in children)
    return value


def check_scale_factor(value, source):
    """Returns ``value`` as a float if it is a finite positive number; else one line naming ``source``."""
    if (isinstance(value, bool) or not isinstance(value, (int, float))
            or not (math.isfinite(value) and value > 0)):
        raise ValueError(f"{source}: 'scale_factor' must be a positive number, "
                         f"got {reprlib.repr(value)}")
    return float(value)
