"""Filling a Flax parameter tree from a released checkpoint's named tensors, by rule.

A converter gives one rule: a Flax parameter path to the released tensor's name and the
function that lays it out as Flax does (a transposed kernel, a reshaped projection). Every
parameter must be found with the right shape and every released tensor used, or the error
lists each one that is missing, mis-shaped or left over, with the file it came from: nothing
is dropped or zero-filled silently. Tensors are read one at a time as their parameter is filled
(`Tensors`), so loading a checkpoint holds its parameters and one tensor, not the file besides.
"""

from __future__ import annotations

import functools
import json
import pathlib
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

# A released tensor and the shape its Flax parameter has, to that parameter's value.
Transform = Callable[[np.ndarray, tuple[int, ...]], np.ndarray]
Rule = Callable[[tuple[str, ...]], tuple[str, Transform]]


class WeightsMismatchError(ValueError):
    """Released weights that do not fit the architecture they are loaded into."""


def read_json(path: pathlib.Path) -> dict:
    """A JSON file's object; an error naming the file if it is not valid JSON."""
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON: {error}") from None


class Tensors(Mapping[str, np.ndarray]):
    """A checkpoint's tensors by name, each read when it is looked up and not kept (`readers`:
    name to a function returning the NumPy array). Names are known without reading anything."""

    def __init__(self, readers: Mapping[str, Callable[[], np.ndarray]]):
        self.readers = dict(readers)

    @classmethod
    def of(cls, arrays: Mapping[str, Any], convert: Callable[[Any], np.ndarray]) -> "Tensors":
        """Arrays already in memory, each made a NumPy array by `convert` when read (a PyTorch state dict's)."""
        return cls({name: functools.partial(convert, array) for name, array in arrays.items()})

    def __getitem__(self, name: str) -> np.ndarray:
        return self.readers[name]()

    def __contains__(self, name: object) -> bool:
        return name in self.readers

    def __iter__(self) -> Iterator[str]:
        return iter(self.readers)

    def __len__(self) -> int:
        return len(self.readers)

    def prefixed(self, prefix: str) -> "Tensors":
        """The same tensors named `prefix + name`."""
        return Tensors({prefix + name: read for name, read in self.readers.items()})


def read_safetensors(directory: pathlib.Path, filenames: Sequence[str]) -> tuple[pathlib.Path, Tensors]:
    """The first of `filenames` in `directory` that exists, and its `Tensors` (the `safetensors`
    NumPy API: no PyTorch). Each read maps the file and unmaps it after, so no part of a file
    stays resident once its tensor is copied out. The error lists what the directory holds, or
    names the file and tensor that cannot be read."""
    from safetensors import SafetensorError, safe_open

    path = next((directory / name for name in filenames if (directory / name).is_file()), None)
    if path is None:
        present = sorted(p.name for p in directory.iterdir()) if directory.is_dir() else []
        raise FileNotFoundError(f"{directory / filenames[0]} not found ({directory} has "
                                f"{', '.join(present) or 'no files'}); the weights must be in safetensors form")
    unreadable = (SafetensorError, TypeError, ValueError)  # a truncated file, a dtype NumPy does not know

    def read(name: str) -> np.ndarray:
        try:
            with safe_open(str(path), framework="numpy") as file:
                return file.get_tensor(name)
        except unreadable as error:
            raise ValueError(f"cannot read {name} from {path}: {error}") from None

    try:
        with safe_open(str(path), framework="numpy") as file:
            names = list(file.keys())
    except unreadable as error:
        raise ValueError(f"cannot read {path}: {error}") from None
    return path, Tensors({name: functools.partial(read, name) for name in names})


def as_is(w: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    del shape
    return w


def reshaped(w: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """`w` in the parameter's shape (a bias `[heads * head_dim]` as `[heads, head_dim]`)."""
    return w.reshape(shape)


def conv_kernel(w: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """A PyTorch convolution weight `[out, in, kh, kw]` as a Flax kernel `[kh, kw, in, out]`."""
    del shape
    return np.transpose(w, (2, 3, 1, 0))


def dense_kernel(w: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """A PyTorch linear weight `[out, in]` as a Flax kernel `[in, out]`, reshaped to the
    parameter's shape (`[embed, heads, head_dim]` for a query projection)."""
    return np.transpose(w).reshape(shape)


def abstract_params(module: nn.Module, *args, **kwargs) -> Any:
    """The shapes and dtypes of `module`'s parameters (`jax.ShapeDtypeStruct`s), computing nothing."""
    variables = jax.eval_shape(lambda: module.init(jax.random.key(0), *args, **kwargs))
    return nn.unbox(variables)["params"]


def fill(abstract: Any, tensors: Mapping[str, np.ndarray], rule: Rule, *, origin: str,
         ignored: Iterable[str] = (), dtype=None) -> Any:
    """The parameter tree shaped like `abstract`, each leaf `transform(tensors[name])` for
    `(name, transform) = rule(path)`, a JAX array of `dtype` (default: the abstract leaf's),
    converted as it is read. `ignored` names released tensors that are not parameters (buffers
    such as position ids). Raises `WeightsMismatchError` naming `origin`."""
    problems, used = [], set()

    def leaf(path, wanted):
        names = tuple(str(getattr(k, "key", k)) for k in path)
        name, transform = rule(names)
        if name not in tensors:
            problems.append(f"{name}: missing (it would fill {'/'.join(names)} {tuple(wanted.shape)})")
            return None
        used.add(name)
        released = np.asarray(tensors[name])
        try:
            value = np.asarray(transform(released, tuple(wanted.shape)))
        except ValueError:  # a reshape that cannot fit
            value = None
        if value is None or value.shape != tuple(wanted.shape):
            problems.append(f"{name}: shape {released.shape} does not fit {'/'.join(names)} {tuple(wanted.shape)}")
            return None
        return jnp.asarray(value, dtype or wanted.dtype)

    params = jax.tree_util.tree_map_with_path(leaf, abstract)
    ignored = set(ignored)
    problems += [f"{name}: shape {tuple(np.shape(tensors[name]))}, not part of the architecture"
                 for name in tensors if name not in used and name not in ignored]
    if problems:
        listed = "\n  ".join(problems[:20]) + ("\n  ..." if len(problems) > 20 else "")
        raise WeightsMismatchError(f"{origin} does not fit the architecture ({len(problems)} tensors):\n  {listed}")
    return params
