"""Crash-safe results files shared by the CLIs.

* JSON lines (``append_jsonl`` / ``read_jsonl``): each record is one complete line written by a
  single ``os.write`` to a file opened with ``O_APPEND``, then flushed and fsynced, so a killed
  process leaves the whole line or nothing; should a torn last line ever appear, the reader
  skips it (and any other line that does not parse).
* Whole files (``write_json_atomic`` / ``write_text_atomic`` / ``atomic_path`` for writers that
  take a path): written to a temporary file in
  the target's folder, fsynced, then ``os.replace``-d over the target, so readers see the old or
  the new file, never a partial one.

JSON is always strict: non-finite floats (NaN, ±inf, also inside lists and dicts) are written
as ``null``, never as the bare ``NaN``/``Infinity`` tokens other JSON readers reject.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

__all__ = ["append_jsonl", "append_jsonl_many", "atomic_path", "json_safe", "read_jsonl",
           "save_figure", "write_json_atomic", "write_text_atomic"]


def json_safe(value: Any) -> Any:
    """A copy of ``value`` in which non-finite floats (at any depth of dicts, lists and tuples)
    are ``None``; everything else is left for ``json`` to encode."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def _line(record: Any) -> bytes:
    return (json.dumps(json_safe(record), allow_nan=False, separators=(",", ":")) + "\n").encode()


def append_jsonl_many(path: str | Path, records: Iterable[Any]) -> None:
    """Append ``records`` to ``path``, one line each (one ``write`` per line), then fsync once.

    Creates the parent folders. Each line is complete or absent after a crash; with several
    records a crash may keep a prefix of them.
    """
    lines = [_line(r) for r in records]  # encode first: a bad record writes nothing
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        for data in lines:
            written = os.write(fd, data)
            if written != len(data):  # pragma: no cover - regular files write fully
                raise OSError(f"short write to {path}: {written} of {len(data)} bytes")
        os.fsync(fd)
    finally:
        os.close(fd)


def append_jsonl(path: str | Path, record: Any) -> None:
    """Append one record to the JSON-lines file ``path`` as one full line (``O_APPEND``, a
    single ``write``, then flush + fsync). NaN/inf are written as ``null``."""
    append_jsonl_many(path, [record])


def read_jsonl(path: str | Path) -> list[Any]:
    """The records of a JSON-lines file (``[]`` when it does not exist).

    A torn last line (no trailing newline, as a crash mid-write could leave) and any line that
    does not parse are skipped.
    """
    path = Path(path)
    if not path.exists():
        return []
    out = []
    with path.open("rb") as fh:
        for raw in fh:
            if not raw.endswith(b"\n"):
                continue  # torn final line
            try:
                out.append(json.loads(raw))
            except (json.JSONDecodeError, UnicodeDecodeError):
                continue
    return out


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success fsync it and ``os.replace`` it over
    ``path`` (on error remove it). For writers that take a path (``torch.save``,
    ``np.savez``, ``savefig``); ``suffix`` keeps an extension such writers insist on."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=f".tmp{suffix}")
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save_figure(fig: Any, path: str | Path, **kwargs: Any) -> Path:
    """``fig.savefig`` atomically (format from ``path``'s suffix); returns ``path``."""
    path = Path(path)
    with atomic_path(path, suffix=path.suffix) as tmp:
        fig.savefig(tmp, **kwargs)
    return path


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Replace ``path`` by ``text`` (UTF-8) atomically (see :func:`atomic_path`); creates the
    parent folders; returns ``path``."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json_atomic(path: str | Path, obj: Any, indent: int | None = None) -> Path:
    """Replace ``path`` by the strict JSON of ``obj`` atomically (see :func:`write_text_atomic`);
    NaN/inf are written as ``null``. Returns ``path``."""
    text = json.dumps(json_safe(obj), allow_nan=False, indent=indent)
    return write_text_atomic(path, text + "\n")
