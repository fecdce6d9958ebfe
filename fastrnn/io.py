"""Saving and loading fastrnn objects: one ``.npz`` file, no pickle.

``save(path, obj)`` writes the object's ``params`` (in order) and a small JSON header into one
NumPy ``.npz`` archive; ``load(path)`` reads it back with ``np.load(allow_pickle=False)`` and
rebuilds the object through its class's ``from_config``.  Loading never executes code from the
file: the header is JSON, the arrays are plain numeric ``.npy`` members, and the class is looked
up by name in a registry of fastrnn's own classes.

The header (member ``__fastrnn__``, UTF-8 JSON stored as a uint8 array) holds::

    {"format": "fastrnn", "format_version": 1, "class": "TimeLSTM",
     "config": {...obj.get_config()...},
     "arrays": [{"name": "param_0", "shape": [D, 4H], "dtype": "<f4"}, ...]}

A parameter that is the transpose of an earlier one (the book's weight tying lists the embedding
``W`` and the read-out's ``W.T``) is stored once: its entry says ``"transpose_of": i`` and it has
no member; ``load`` hands ``from_config`` the transposed view.  Such files are format version 2
(older fastrnn refuses them with a clear error); files without it stay version 1.

Every savable class follows the persistence protocol: ``obj.get_config()`` returns the
JSON-serializable constructor arguments (no arrays), ``obj.params`` the arrays, and the
classmethod ``cls.from_config(config, params)`` rebuilds the object, checking the shapes.  A class
joins the registry with the ``register`` decorator; the modules listed in ``_PROVIDERS`` are
imported on demand when a file names a class not registered yet.

Layers' carried state (``h``, ``c``), gradients and caches are not saved: a loaded layer starts
fresh, as a newly built one does.
"""

import importlib
import json
import os
import shutil
import tempfile
import zipfile

import numpy as np

__all__ = ["FORMAT_VERSION", "FileFormatError", "load", "register", "registered_classes", "save"]

#: Newest version of the file layout ``save`` writes (2 only when a parameter is stored as the
#: transpose of another, else 1); ``load`` refuses files of a newer version.
FORMAT_VERSION = 2

_HEADER = "__fastrnn__"
_ALLOWED_KINDS = "fiub"  # float, signed / unsigned integer, bool: never object or void

# class name -> class; filled by @register as the defining modules are imported
_REGISTRY = {}

# modules whose classes register themselves with @register; imported lazily (on load of an
# unknown name) so that importing fastrnn.io stays cheap and optional parts may be absent
_PROVIDERS = (
    "fastrnn.layers.recurrent",
    "fastrnn.layers.lm",
    "fastrnn.layers",
    "fastrnn.models",
)

# classes that follow the protocol without the decorator: name -> defining module, registered on
# first use (imported lazily, like the providers)
_KNOWN = {
    "TimeEmbedding": "fastrnn.layers.lm",
    "TimeAffine": "fastrnn.layers.lm",
    "TimeSoftmaxWithLoss": "fastrnn.layers.lm",
    "TimeDropout": "fastrnn.layers.lm",
    "VariationalDropout": "fastrnn.layers.lm",
    "Stack": "fastrnn.layers.stack",
    "LanguageModel": "fastrnn.models.lm",
    "Rnnlm": "fastrnn.models.lm",
    "BetterRnnlm": "fastrnn.models.lm",
}


class FileFormatError(ValueError):
    """A file that is not a valid fastrnn save: truncated, tampered, or of the wrong content."""


def register(cls=None, *, name=None):
    """Class decorator: make ``cls`` savable by ``save`` and loadable by ``load``.

    The class must implement ``get_config()``, ``params`` and the classmethod
    ``from_config(config, params)``.  It is recorded under ``name`` (default: the class's
    ``__name__``), which is what files store; registering a different class under a taken name is
    an error.

    Examples
    --------
    >>> from fastrnn.io import register
    >>> @register
    ... class MyLayer:
    ...     ...
    """

    def deco(c):
        key = name or c.__name__
        for attr in ("get_config", "from_config"):
            if not callable(getattr(c, attr, None)):
                raise TypeError(f"{c.__name__} cannot be registered: it has no {attr}()")
        old = _REGISTRY.get(key)
        if (
            old is not None
            and old is not c
            and (old.__module__, old.__qualname__) != (c.__module__, c.__qualname__)
        ):
            raise ValueError(
                f"class name {key!r} is already registered to {old.__module__}.{old.__qualname__}"
            )
        _REGISTRY[key] = c
        c._fastrnn_name = key
        return c

    return deco if cls is None else deco(cls)


def _import_optional(mod):
    try:
        return importlib.import_module(mod)
    except ModuleNotFoundError as e:  # an optional part not present in this install
        if e.name is None or not mod.startswith(e.name):
            raise
        return None


def _import_providers():
    for mod in _PROVIDERS:
        _import_optional(mod)
    for key, mod in _KNOWN.items():
        if key not in _REGISTRY:
            module = _import_optional(mod)
            cls = getattr(module, key, None) if module is not None else None
            if cls is not None:
                register(cls, name=key)


def registered_classes():
    """A dict of every registered class name -> class (importing fastrnn's providers first)."""
    _import_providers()
    return dict(_REGISTRY)


def _name_of(obj):
    cls = type(obj)
    key = getattr(cls, "_fastrnn_name", None)
    if key is None or _REGISTRY.get(key) is not cls:
        _import_providers()
        key = getattr(cls, "_fastrnn_name", None)
    if key is None or _REGISTRY.get(key) is not cls:
        raise TypeError(
            f"obj must be an instance of a registered fastrnn class (one of "
            f"{sorted(_REGISTRY)}), got {cls.__module__}.{cls.__qualname__}"
        )
    return key


def save(path, obj):
    """Write ``obj`` (a registered fastrnn object) to ``path`` as one ``.npz`` file.

    Parameters
    ----------
    path : str or os.PathLike
        Destination, used as given (no ``.npz`` suffix is added).  Its directory must exist.
    obj
        Any object of a registered class (``TimeRNN``, ``TimeLSTM``, ``TimeGRU``, the cells,
        and the model classes that register themselves).

    Notes
    -----
    Everything is checked before anything is written; the file is written to a temporary file in
    the same directory and moved into place with ``os.replace``, so a crash or an error never
    leaves a half-written file at ``path`` (an existing file there stays intact until the new one
    is complete).
    """
    path = os.fspath(path)
    name = _name_of(obj)
    config = obj.get_config()
    params = obj.params
    if not isinstance(config, dict):
        raise TypeError(f"{name}.get_config() must return a dict, got {type(config).__name__}")
    if not isinstance(params, (list, tuple)):
        raise TypeError(f"{name}.params must be a list of arrays, got {type(params).__name__}")
    arrays = {}
    specs = []
    for i, p in enumerate(params):
        if not isinstance(p, np.ndarray):
            raise TypeError(f"{name}.params[{i}] must be a numpy array, got {type(p).__name__}")
        if p.dtype.kind not in _ALLOWED_KINDS or p.dtype.fields is not None:
            raise TypeError(
                f"{name}.params[{i}] has dtype {p.dtype}; only numeric arrays can be saved"
            )
        key = f"param_{i}"
        spec = {"name": key, "shape": list(p.shape), "dtype": p.dtype.str}
        j = _transpose_source(params, i)
        if j is None:
            arrays[key] = p
        else:
            spec["transpose_of"] = j
        specs.append(spec)
    header = {
        "format": "fastrnn",
        "format_version": 2 if any("transpose_of" in s for s in specs) else 1,
        "class": name,
        "config": config,
        "arrays": specs,
    }
    try:
        text = json.dumps(header, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise TypeError(f"{name}.get_config() is not JSON-serializable: {e}") from None
    arrays[_HEADER] = np.frombuffer(text.encode("utf-8"), np.uint8)

    atomic_write(path, lambda f: np.savez(f, **arrays))


def _transpose_source(params, i):
    """The index of an earlier parameter whose transpose params[i] is (the same memory), or None."""
    p = params[i]
    if p.ndim != 2 or p.base is None:
        return None
    for j in range(i):
        q = params[j]
        if (
            q.ndim == 2
            and q.dtype == p.dtype
            and p.shape == q.shape[::-1]
            and p.strides == q.strides[::-1]
            and p.__array_interface__["data"][0] == q.__array_interface__["data"][0]
        ):
            return j
    return None


# ---- atomic writes: the one home of "a crash leaves the old file or the new one, never half" --


def _destination(path):
    """(path, its directory), after checking that a file can be put there (errors name path)."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"cannot save to {path!r}: directory {directory!r} does not exist")
    if os.path.isdir(path):
        raise IsADirectoryError(f"cannot save to {path!r}: it is a directory, expected a file path")
    return path, directory


def _give_normal_mode(tmp, mode=0o666):
    """mkstemp / mkdtemp make 0600 / 0700: give what open() / mkdir() would (mode less the
    umask)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, mode & ~umask)


def _unlink_quietly(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _move_into_place(tmp, path, produce):
    """``produce()`` (which fills the temporary file ``tmp``), then ``tmp`` becomes ``path``;
    on any error or interrupt ``tmp`` is removed and ``path`` untouched."""
    try:
        produce()
        _give_normal_mode(tmp)
        os.replace(tmp, path)
    except BaseException:
        _unlink_quietly(tmp)
        raise


def atomic_write(path, write):
    """Call ``write(f)`` on a temporary file in ``path``'s directory, then move it to ``path``.

    The file is flushed and synced before ``os.replace``, so ``path`` holds either its old
    content or the complete new one, never a half-written file; on any error (or interrupt) the
    temporary file is removed and ``path`` is untouched.  The new file gets the mode a plain
    ``open(path, "w")`` would (0666 less the umask).  A missing directory or a ``path`` that is
    a directory is an error naming ``path``, raised before ``write`` runs."""
    path, directory = _destination(path)
    fd, tmp = tempfile.mkstemp(
        dir=directory, prefix="." + os.path.basename(path) + ".", suffix=".tmp"
    )

    def produce():
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())

    _move_into_place(tmp, path, produce)


def atomic_write_to(path, write_to):
    """``atomic_write`` for writers that take a file name rather than a file (matplotlib's
    ``savefig``, Keras's ``save``): ``write_to(tmp)`` gets a temporary path in the same
    directory that ends like ``path`` (the extension selects their format)."""
    path, directory = _destination(path)
    root, ext = os.path.splitext(os.path.basename(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{root}.", suffix=f".tmp{ext}")
    os.close(fd)
    _move_into_place(tmp, path, lambda: write_to(tmp))


def atomic_write_json(path, obj):
    """``obj`` as indented JSON (no NaN: strict JSON), atomically."""
    text = json.dumps(obj, indent=1, allow_nan=False) + "\n"
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def atomic_directory(path, fill):
    """Make the directory ``path`` by ``fill(tmp)`` into a new temporary directory beside it,
    then move it into place: files that belong together (a model and its vocabulary) are
    never seen half old, half new.  An existing ``path`` (a directory) is moved aside first
    and removed once the new one is in place; if ``fill`` fails, ``path`` is untouched."""
    path = os.fspath(path).rstrip(os.sep) or os.sep
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise FileNotFoundError(f"cannot save to {path!r}: directory {parent!r} does not exist")
    if os.path.exists(path) and not os.path.isdir(path):
        raise FileExistsError(f"cannot save to {path!r}: it is a file, expected a directory")
    name = os.path.basename(os.path.abspath(path))
    tmp = tempfile.mkdtemp(dir=parent, prefix=f".{name}.", suffix=".tmp")
    try:
        fill(tmp)
        _give_normal_mode(tmp, 0o777)
        old = None
        if os.path.exists(path):
            old = tempfile.mkdtemp(dir=parent, prefix=f".{name}.", suffix=".old")
            os.rmdir(old)
            os.rename(path, old)
        try:
            os.rename(tmp, path)
        except BaseException:
            if old is not None:
                os.rename(old, path)  # put the old one back
            raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _fail(path, message):
    raise FileFormatError(f"{path}: {message}")


def _read_header(path, npz):
    if _HEADER not in npz.files:
        _fail(path, f"not a fastrnn file (no {_HEADER!r} member)")
    raw = npz[_HEADER]
    if raw.dtype != np.uint8 or raw.ndim != 1:
        _fail(path, "header member is not a uint8 byte string")
    try:
        header = json.loads(raw.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        _fail(path, f"header is not valid JSON ({e})")
    if not isinstance(header, dict) or header.get("format") != "fastrnn":
        _fail(path, "header is not a fastrnn header")
    version = header.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        _fail(path, f"bad format_version {version!r}")
    if version > FORMAT_VERSION:
        _fail(
            path,
            f"format_version {version} is newer than this fastrnn reads "
            f"({FORMAT_VERSION}); upgrade fastrnn",
        )
    if not isinstance(header.get("class"), str):
        _fail(path, "header has no class name")
    if not isinstance(header.get("config"), dict):
        _fail(path, "header has no config object")
    specs = header.get("arrays")
    if not isinstance(specs, list):
        _fail(path, "header has no array list")
    for i, spec in enumerate(specs):
        if (
            not isinstance(spec, dict)
            or spec.get("name") != f"param_{i}"
            or not isinstance(spec.get("shape"), list)
            or not all(
                isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in spec["shape"]
            )
            or not isinstance(spec.get("dtype"), str)
        ):
            _fail(path, f"header entry {i} of the array list is malformed: {spec!r}")
        if "transpose_of" in spec:
            j = spec["transpose_of"]
            if (
                version < 2
                or not isinstance(j, int)
                or isinstance(j, bool)
                or not 0 <= j < i
                or "transpose_of" in specs[j]
                or spec["shape"] != specs[j]["shape"][::-1]
                or spec["dtype"] != specs[j]["dtype"]
            ):
                _fail(
                    path,
                    f"header entry {i} is not the transpose of an earlier stored array: {spec!r}",
                )
    return header


def load(path):
    """Read an object written by ``save``.

    Parameters
    ----------
    path : str or os.PathLike
        A file written by ``save``.

    Returns
    -------
    object
        A new object of the saved class, its ``params`` the saved arrays (exact values, dtypes
        and shapes).

    Raises
    ------
    FileFormatError
        (a ValueError) naming ``path`` when the file is truncated or tampered with: not a zip
        archive, a corrupt member, a missing or bad JSON header, an unknown class, a missing or
        extra array, an array whose shape or dtype differs from the header, an object array, or
        arrays that do not fit the class's config.  Nothing in the file is ever executed
        (``allow_pickle=False``).
    """
    path = os.fspath(path)
    try:
        npz = np.load(path, allow_pickle=False)
    except (FileNotFoundError, IsADirectoryError, PermissionError):
        raise
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
        _fail(path, f"not a readable .npz archive ({type(e).__name__}: {e})")
    if not isinstance(npz, np.lib.npyio.NpzFile):
        _fail(path, "holds a single array, not a fastrnn .npz archive")
    try:
        with npz:
            header = _read_header(path, npz)
            specs = header["arrays"]
            expected = {s["name"] for s in specs if "transpose_of" not in s} | {_HEADER}
            present = set(npz.files)
            if present - expected:
                _fail(path, f"unexpected arrays {sorted(present - expected)} not in the header")
            if expected - present:
                _fail(path, f"missing arrays {sorted(expected - present)}")
            params = []
            for spec in specs:
                if "transpose_of" in spec:
                    params.append(params[spec["transpose_of"]].T)
                    continue
                arr = npz[spec["name"]]
                if arr.dtype.kind not in _ALLOWED_KINDS or arr.dtype.fields is not None:
                    _fail(path, f"array {spec['name']} has non-numeric dtype {arr.dtype}")
                if list(arr.shape) != spec["shape"] or arr.dtype.str != spec["dtype"]:
                    _fail(
                        path,
                        f"array {spec['name']} is {arr.dtype.str} {list(arr.shape)}, "
                        f"the header says {spec['dtype']} {spec['shape']}",
                    )
                params.append(arr)
    except FileFormatError:
        raise
    except (ValueError, OSError, EOFError, KeyError, zipfile.BadZipFile) as e:
        # corrupt members (CRC errors, truncated data) and object arrays (allow_pickle=False)
        _fail(path, f"corrupt archive ({type(e).__name__}: {e})")
    name = header["class"]
    cls = _REGISTRY.get(name)
    if cls is None:
        _import_providers()
        cls = _REGISTRY.get(name)
    if cls is None:
        _fail(path, f"unknown class {name!r} (known: {sorted(_REGISTRY)})")
    try:
        return cls.from_config(header["config"], params)
    except (ValueError, TypeError, KeyError) as e:
        raise FileFormatError(f"{path}: the saved {name} does not fit its config: {e}") from e
