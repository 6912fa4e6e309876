"""The run layer every experiment part stores, resumes and reports through.

* :func:`run_id` — 12 hex digits naming a config by the fields that differ from their
  defaults, so adding a field with a default keeps every stored id.
* :class:`RunStore` — an output folder of JSON-lines files (``results.jsonl``, ``curves.jsonl``,
  ...). Used as a context manager it holds an exclusive lock on the folder (a second writer
  gets :class:`StoreBusyError` instead of duplicating work) and removes temp files left by
  interrupted atomic writes. Appends first terminate a torn last line, so a kill mid-write never
  glues the next record to a fragment; readers skip any line that is not a record (torn, not
  JSON, or JSON that is not an object with the key field) with a warning naming file and line.

Conventions every part's records follow: ``run_id``, ``config`` (the config's fields),
``diverged`` (bool) and ``diverged_step``: the 0-based index of the first step (optimizer
update; an epoch where a part trains by epochs) whose loss was non-finite, i.e. the number of
updates applied before it (that update is not applied); the number of steps when the
parameters became non-finite after the last update; ``None`` when the run did not diverge.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import warnings
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from .io import append_jsonl_many

try:  # POSIX; elsewhere the store works without the cross-process lock
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

__all__ = ["LOCK_NAME", "PART_NAME", "RESULTS", "RunStore", "StoreBusyError", "StoreWarning",
           "check_writable", "non_default_fields", "read_part", "run_id"]

RESULTS = "results.jsonl"
LOCK_NAME = ".gradsurrogate.lock"
PART_NAME = ".gradsurrogate-part"


def read_part(out_dir: str | Path) -> str | None:
    """The part (``xor``, ``restore``, ...) that wrote ``out_dir`` (``None`` if unmarked)."""
    try:
        return (Path(out_dir) / PART_NAME).read_text().strip() or None
    except OSError:
        return None


class StoreBusyError(RuntimeError):
    """Another process holds the output folder."""


class StoreWarning(UserWarning):
    """A line of a results file was skipped."""


def non_default_fields(config: Any) -> dict[str, Any]:
    """The fields of dataclass ``config`` whose value differs from a default-constructed one
    (fields without a default always count), as JSON-able values."""
    cls = type(config)
    try:
        defaults = dataclasses.asdict(cls())
    except TypeError:  # some fields have no default
        defaults = {}
    out = {}
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if field.name not in defaults or defaults[field.name] != value:
            out[field.name] = list(value) if isinstance(value, tuple) else value
    return out


def run_id(config: Any) -> str:
    """12 hex digits of the SHA-1 of the canonical JSON of :func:`non_default_fields`."""
    blob = json.dumps(non_default_fields(config), sort_keys=True, default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:12]


def check_writable(out_dir: str | Path) -> Path:
    """Create ``out_dir`` and check a file can be written in it; ``ValueError`` otherwise
    (called before any work, so a bad ``--out`` never costs a training run)."""
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise ValueError(f"output folder {str(out)!r} is not writable "
                         f"({err.strerror or err})") from None
    return out


class RunStore:
    """JSON-lines files of one output folder; ``with RunStore(out) as store:`` to write.

    ``key`` is the field every record carries (``run_id``); the latest record per key wins.
    ``part`` (the command that writes the folder) is recorded in ``.gradsurrogate-part`` so that
    ``gradsurrogate report DIR`` knows which report to write.
    """

    def __init__(self, out_dir: str | Path, key: str = "run_id", part: str | None = None) -> None:
        self.out = Path(out_dir)
        self.key = key
        self.part = part
        self._lock_fd: int | None = None

    # -- lock --------------------------------------------------------------------------
    def __enter__(self) -> RunStore:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    @property
    def locked(self) -> bool:
        return self._lock_fd is not None

    def acquire(self) -> None:
        """Lock the folder for this process (non-blocking) and clean stale temp files."""
        check_writable(self.out)
        path = self.out / LOCK_NAME
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 64).decode(errors="replace").strip() or "?"
                os.close(fd)
                raise StoreBusyError(
                    f"{self.out} is in use by another gradsurrogate process (pid {holder}); "
                    "wait for it to finish (a rerun then resumes) or pass another --out"
                ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._lock_fd = fd
        stored = read_part(self.out)
        if self.part is not None and stored not in (None, self.part):
            self.release()
            raise ValueError(f"{str(self.out)!r} holds {stored} results; `{self.part}` will not "
                             "mix its runs into them: pass another --out")
        self.clean_temp()
        if self.part is not None and stored != self.part:
            (self.out / PART_NAME).write_text(self.part + "\n")

    def release(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing drops the flock
            self._lock_fd = None

    def clean_temp(self) -> list[Path]:
        """Remove temp files of interrupted atomic writes (``.NAME.*.tmp*``) in the folder and
        its subfolders, except subfolders that are stores of their own (they hold a lock file
        and may be written by another process right now)."""
        removed = []
        for root, dirs, files in os.walk(self.out):
            if Path(root) != self.out and LOCK_NAME in files:
                dirs.clear()
                continue
            for name in files:
                if name.startswith(".") and ".tmp" in name:
                    (Path(root) / name).unlink(missing_ok=True)
                    removed.append(Path(root) / name)
        return removed

    # -- write -------------------------------------------------------------------------
    def append(self, records: Iterable[dict[str, Any]], name: str = RESULTS) -> None:
        """Append records (one full line each, fsynced) to ``name``; a torn last line left by
        a kill is terminated first so it stays a separate (skipped) line."""
        if not self.locked:
            raise RuntimeError("RunStore.append needs the folder lock: use `with RunStore(out)`")
        records = list(records)
        for rec in records:
            if not isinstance(rec, dict) or not isinstance(rec.get(self.key), str):
                raise ValueError(f"a record must be a dict with a string {self.key!r}; got "
                                 f"{type(rec).__name__}")
        path = self.out / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists() and path.stat().st_size:
            with path.open("rb+") as fh:
                fh.seek(-1, os.SEEK_END)
                if fh.read(1) != b"\n":
                    fh.write(b"\n")
                    fh.flush()
                    os.fsync(fh.fileno())
        append_jsonl_many(path, records)

    # -- read --------------------------------------------------------------------------
    def lines(self, name: str = RESULTS) -> Iterator[dict[str, Any]]:
        """Every record of ``name`` in file order; non-records are skipped with a
        :class:`StoreWarning` naming the file and the line number."""
        path = self.out / name
        if not path.exists():
            return
        with path.open("rb") as fh:
            for number, raw in enumerate(fh, 1):
                why = None
                if not raw.endswith(b"\n"):
                    why = "torn last line (no newline)"
                elif not raw.strip():
                    continue
                else:
                    try:
                        rec = json.loads(raw)
                    except (json.JSONDecodeError, UnicodeDecodeError):
                        why = "not JSON"
                    else:
                        if not isinstance(rec, dict) or not isinstance(rec.get(self.key), str):
                            why = f"not a record (a JSON object with a string {self.key!r})"
                if why is not None:
                    warnings.warn(f"{path}:{number}: skipped, {why}", StoreWarning,
                                  stacklevel=2)
                    continue
                yield rec

    def records(self, name: str = RESULTS,
                rekey: Callable[[dict[str, Any]], str | None] | None = None
                ) -> dict[str, dict[str, Any]]:
        """The latest record per key. ``rekey(record)`` recomputes a record's key from its
        stored config (so runs stored under an older id scheme resume; the old key is kept as
        ``stored_<key>``); ``None`` drops the record."""
        out: dict[str, dict[str, Any]] = {}
        for rec in self.lines(name):
            key = rec[self.key]
            if rekey is not None:
                new = rekey(rec)
                if new is None:
                    continue
                if new != key:
                    rec = {**rec, self.key: new, f"stored_{self.key}": key}
                key = new
            out[key] = rec
        return out

    def finished(self, name: str = RESULTS,
                 rekey: Callable[[dict[str, Any]], str | None] | None = None) -> set[str]:
        """Keys that already have a record (resume skips them)."""
        return set(self.records(name, rekey))
