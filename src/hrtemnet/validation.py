"""Checks made before any work starts: config dataclasses, numbers given as options, output paths.

Configs are checked completely by the naming convention of their fields (docs/conventions.md: units in field names),
so a field added later is covered without a new check:

- every number is finite; `int` fields are whole numbers, `bool` fields true/false, `str` fields text;
- `*_range`: a pair `(low, high)` with `low <= high`; each end obeys the rules of the name without `_range`;
- `*_probability`, `*_fraction`, `*_rate`: between 0 and 1;
- other quantities are >= 0 unless the name says they are signed (`defocus`, `offset`, `shift`, angles in
  `_rad`), and > 0 where zero makes no sense (`POSITIVE_PREFIXES`: sampling, energy, dose, ...);
- `num_*` counts are >= 0, or >= `MINIMUM_COUNTS[name]`;
- nested dataclasses are checked with their path in the message (`optics.cs_A_range`).
"""

from __future__ import annotations

import math
import numbers
import os
import tempfile
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any

from hrtemnet.errors import UserError

UNIT_INTERVAL_SUFFIXES = ("_probability", "_fraction", "_rate")
SIGNED_WORDS = ("defocus", "offset", "shift")
SIGNED_SUFFIXES = ("_rad",)
POSITIVE_PREFIXES = ("sampling", "energy", "dose", "gain_counts", "field_of_view", "oversampling")
MINIMUM_COUNTS = {"num_defocus": 1}


def lists_as_tuples(values: dict) -> dict[str, Any]:
    """Config fields read from JSON (model cards, config files): lists become the tuples the dataclasses hold."""
    return {key: tuple(value) if isinstance(value, list) else value for key, value in values.items()}


def validate_config(config, path: str = ""):
    """Check every field of the dataclass `config` (and of nested ones) by the module's conventions.

    Returns `config`; raises `UserError` naming the first bad field, its value and what it must be."""
    for item in fields(config):
        name = f"{path}.{item.name}" if path else item.name
        value = getattr(config, item.name)
        annotation = item.type if isinstance(item.type, str) else getattr(item.type, "__name__", str(item.type))
        if is_dataclass(value):
            validate_config(value, name)
        elif value is None:
            if "None" not in annotation:
                raise UserError(f"{name} is missing (null); give a value")
        else:
            _check_field(item.name, name, value, annotation)
    return config


def _check_field(field_name: str, name: str, value, annotation: str) -> None:
    if field_name.endswith("_range"):
        if isinstance(value, str | bytes) or not _is_sequence(value) or len(value) != 2:
            raise UserError(f"{name} = {value!r} must be a pair [low, high]")
        low, high = (_number(field_name[: -len("_range")], f"{name}[{i}]", v) for i, v in enumerate(value))
        if low > high:
            raise UserError(f"{name} = [{low:g}, {high:g}] is reversed; give [low, high] with low <= high")
        return
    if annotation.startswith("tuple") or annotation.startswith("list"):
        if isinstance(value, str | bytes) or not _is_sequence(value):
            raise UserError(f"{name} = {value!r} must be a list of numbers")
        for i, v in enumerate(value):
            _number(field_name, f"{name}[{i}]", v)
        return
    base = annotation.split("|")[0].strip()
    if base == "bool":
        if not isinstance(value, bool):
            raise UserError(f"{name} = {value!r} must be true or false")
    elif base == "str":
        if not isinstance(value, str):
            raise UserError(f"{name} = {value!r} must be text")
    elif base == "int":
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise UserError(f"{name} = {value!r} must be a whole number")
        minimum = MINIMUM_COUNTS.get(field_name, 1 if field_name.startswith(POSITIVE_PREFIXES) else 0)
        if value < minimum:
            raise UserError(f"{name} = {value} must be at least {minimum}")
    elif base == "float":
        _number(field_name, name, value)


def _is_sequence(value) -> bool:
    return hasattr(value, "__len__") and hasattr(value, "__getitem__")


def _number(field_name: str, name: str, value) -> float:
    """A finite real number obeying the sign rules of `field_name`."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise UserError(f"{name} = {value!r} must be a number")
    value = float(value)
    if not math.isfinite(value):
        raise UserError(f"{name} = {value} must be a finite number")
    if field_name.endswith(UNIT_INTERVAL_SUFFIXES):
        if not 0.0 <= value <= 1.0:
            raise UserError(f"{name} = {value:g} must lie between 0 and 1")
    elif field_name.startswith(POSITIVE_PREFIXES):
        if not value > 0:
            raise UserError(f"{name} = {value:g} must be positive")
    elif not (any(word in field_name for word in SIGNED_WORDS) or field_name.endswith(SIGNED_SUFFIXES)):
        if value < 0:
            raise UserError(f"{name} = {value:g} must be 0 or more")
    return value


def check_number(value: float | None, name: str, minimum: float | None = 0.0, positive: bool = False,
                 maximum: float | None = None) -> float | None:
    """`value` (an option named `name`, e.g. `--border-A`) if it is finite and in range, else `UserError`.

    None passes (an option not given)."""
    if value is None:
        return None
    text = f"{name} must be a finite number" if minimum is None else \
        f"{name} must be a {'positive' if positive else 'non-negative'} finite number"
    if maximum is not None:
        text += f" up to {maximum:g}"
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) \
            or (minimum is not None and (value < minimum or (positive and value <= minimum))) \
            or (maximum is not None and value > maximum):
        raise UserError(f"{text} (got {value})")
    return value


def writable_folder(path: str | Path, option: str, create: bool = True) -> Path:
    """Create the folder `path` if needed and check a file can be written in it, before any work is done.

    `option` names it in messages (e.g. `--out-dir`). With `create=False` nothing is created: a missing
    folder passes if its nearest existing parent is a folder this process may write in."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(f"{option} {path} is a file, not a folder; give a folder (it is created if missing)")
    if not create and not path.exists():
        parent = path.absolute().parent
        while not parent.exists():
            parent = parent.parent
        if not parent.is_dir():
            raise UserError(f"{option} {path} cannot be created: {parent} is a file; give another folder")
        if not os.access(parent, os.W_OK | os.X_OK):
            raise UserError(f"{option} {path} cannot be created in {parent} (not writable); give another folder")
        return path
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(f"{option} {path} cannot be created ({error.strerror or error}); "
                        "give a folder you can write to") from None
    try:
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as error:
        raise UserError(f"{option} {path} is not writable ({error.strerror or error}); "
                        "give a folder you can write to") from None
    return path


def writable_file(path: str | Path, option: str) -> Path:
    """Check the file `path` can be written (its folder is created if missing), before any work is done."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{option} {path} is a folder; give a file name")
    if path.parent.exists() and not path.parent.is_dir():
        raise UserError(f"{option} {path}: {path.parent} is a file, not a folder")
    writable_folder(path.parent, f"{option} {path}: folder")
    return path
