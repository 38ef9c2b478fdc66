"""JSON / JSONL reading and writing: atomic, deterministic, with located errors.

Every pipeline output goes through here so that a killed stage never leaves a
file that looks finished and equal inputs give byte-identical files.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import shutil
import tempfile
import zlib
from pathlib import Path
from typing import Any, Iterable, Iterator


class DataError(ValueError):
    """Bad input, located: names the file, the line (1-based) and the field."""

    def __init__(self, path, message: str, line: int | None = None, field: str | None = None):
        self.path, self.line, self.field = str(path), line, field
        where = self.path + (f", line {line}" if line is not None else "")
        what = f"field {field!r}: " if field else ""
        super().__init__(f"{where}: {what}{message}")


def _is_gz(path) -> bool:
    return str(path).endswith(".gz")


@contextlib.contextmanager
def atomic_path(path, suffix: str | None = None, *, directory: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only on success.

    The temp path lives in the same directory so the final rename is atomic. With
    `directory=True` it is an empty folder to fill (save_pretrained, save_to_disk, ...);
    an existing folder at `path` is replaced whole. On any exception the temp path is
    removed and `path` is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{path.name}."
    if directory:
        tmp = Path(tempfile.mkdtemp(prefix=prefix, suffix=suffix or ".tmpdir", dir=path.parent))
    else:
        fd, name = tempfile.mkstemp(prefix=prefix, suffix=suffix or ".tmp", dir=path.parent)
        os.close(fd)
        tmp = Path(name)
    try:
        yield tmp
        # mkstemp/mkdtemp create 0600/0700; give the result the usual umask-based mode.
        umask = os.umask(0)
        os.umask(umask)
        if tmp.is_file():
            os.chmod(tmp, 0o666 & ~umask)
        elif tmp.is_dir():
            os.chmod(tmp, 0o777 & ~umask)
        if tmp.is_dir() and (path.exists() or path.is_symlink()):
            _swap_in(tmp, path)
        else:
            os.replace(tmp, path)
    except BaseException:
        _remove(tmp)
        raise


def _swap_in(tmp: Path, path: Path) -> None:
    """Replace `path` (a folder or file) by the folder `tmp`: rename can't overwrite a
    non-empty folder, so the old one is moved aside first and deleted last."""
    old = tmp.with_name(tmp.name + ".old")
    os.replace(path, old)
    try:
        os.replace(tmp, path)
    except BaseException:
        os.replace(old, path)
        raise
    _remove(old)


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    else:
        p.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_open(path, mode: str = "w"):
    """Open a temp file for writing (text or binary; gzip when the name ends in .gz)."""
    with atomic_path(path) as tmp, _open_write(tmp, path, mode) as fh:
        yield fh


@contextlib.contextmanager
def _open_write(tmp: Path, path, mode: str):
    """Write `tmp` in the format `path`'s name asks for (gzip when it ends in .gz)."""
    if _is_gz(path):
        # mtime=0 and no file name in the header: gzip output stays byte-identical.
        raw = open(tmp, "wb")
        gz = gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0)
        try:
            if "b" in mode:
                yield gz
            else:
                with _text(gz) as fh:
                    yield fh
        finally:
            gz.close()
            raw.close()
    else:
        kw = {} if "b" in mode else {"encoding": "utf-8", "newline": "\n"}
        with open(tmp, mode, **kw) as fh:
            yield fh


@contextlib.contextmanager
def _text(binary):
    import io

    fh = io.TextIOWrapper(binary, encoding="utf-8", newline="\n")
    try:
        yield fh
    finally:
        fh.flush()
        fh.detach()


def open_text(path):
    """Open a text file for reading, transparently gunzipping `.gz`. A folder, a missing or an
    unreadable file raises DataError (one line for the stage), not a raw OSError."""
    with _opening(path):
        if _is_gz(path):
            return gzip.open(path, "rt", encoding="utf-8")
        return open(path, encoding="utf-8")


def open_binary(path):
    """Open a file for reading bytes, gunzipping `.gz`; errors as in `open_text`."""
    with _opening(path):
        return gzip.open(path, "rb") if _is_gz(path) else open(path, "rb")


@contextlib.contextmanager
def _opening(path):
    if str(path) in ("", "."):  # Path("") is "."
        raise DataError(repr(str(path)), "empty path, expected a file")
    try:
        yield
    except IsADirectoryError:
        raise DataError(path, "is a directory, expected a file") from None
    except FileNotFoundError:
        raise DataError(path, "file not found") from None
    except OSError as e:
        raise DataError(path, f"cannot read: {e.strerror or e}") from None


def dumps(obj: Any, indent: int | None = None) -> str:
    """Deterministic JSON: sorted keys, UTF-8 kept, no NaN."""
    return json.dumps(obj, sort_keys=True, ensure_ascii=False, indent=indent, allow_nan=False)


def write_json(path, obj: Any, indent: int | None = 2) -> Path:
    with atomic_open(path) as fh:
        _dump_json(fh, obj, indent)
    return Path(path)


def write_jsonl(path, records: Iterable[Any]) -> int:
    """Write one JSON object per line; returns the number of records written."""
    with atomic_open(path) as fh:
        return _dump_jsonl(fh, records)


def _dump_json(fh, obj: Any, indent: int | None) -> None:
    fh.write(dumps(obj, indent=indent))
    fh.write("\n")


def _dump_jsonl(fh, records: Iterable[Any]) -> int:
    n = 0
    for rec in records:
        fh.write(dumps(rec))
        fh.write("\n")
        n += 1
    return n


class Outputs:
    """A stage's outputs, each staged as a temp file beside its target; `outputs()` renames
    them all only when its block ends without an error."""

    def __init__(self, stack: contextlib.ExitStack):
        self._stack = stack

    def path(self, path, suffix: str | None = None, *, directory: bool = False) -> Path:
        """A temp path to fill for `path`: a file, or with `directory=True` an empty folder."""
        return self._stack.enter_context(atomic_path(path, suffix, directory=directory))

    @contextlib.contextmanager
    def open(self, path, mode: str = "w"):
        with _open_write(self.path(path), path, mode) as fh:
            yield fh

    def write_json(self, path, obj: Any, indent: int | None = 2) -> Path:
        with self.open(path) as fh:
            _dump_json(fh, obj, indent)
        return Path(path)

    def write_jsonl(self, path, records: Iterable[Any]) -> int:
        with self.open(path) as fh:
            return _dump_jsonl(fh, records)


@contextlib.contextmanager
def outputs() -> Iterator[Outputs]:
    """Stage several outputs and rename them together at the end, so a failure anywhere
    in the block (bad input found late, a crash while writing the third file) leaves none
    of them looking finished:

        with outputs() as out:
            out.write_jsonl(pairs_path, pairs)
            out.write_json(metrics_path, metrics)
    """
    with contextlib.ExitStack() as stack:
        yield Outputs(stack)


# Reading a truncated or corrupt .gz fails with these (EOFError would reach Click as "Aborted!").
_GZIP_ERRORS = (EOFError, gzip.BadGzipFile, zlib.error)


class _NonFinite(ValueError):
    pass


def _no_constant(name: str):
    # Python's json reads NaN / Infinity, which JSON does not have; our writers never emit
    # them, so in an input they are a bad value that would flow on as a float.
    raise _NonFinite(f"{name} is not a JSON value (non-finite numbers are not allowed)")


def _loads(text: str, path, line: int | None):
    try:
        return json.loads(text, parse_constant=_no_constant)
    except json.JSONDecodeError as e:
        raise DataError(path, f"malformed JSON: {e.msg} (column {e.colno})",
                        line=line if line is not None else e.lineno) from None
    except _NonFinite as e:
        raise DataError(path, str(e), line=line) from None


def read_json(path) -> Any:
    try:
        with open_text(path) as fh:
            text = fh.read()
    except _GZIP_ERRORS as e:
        raise DataError(path, f"truncated or corrupt gzip ({e})") from None
    except UnicodeDecodeError as e:
        raise first_undecodable_line(path) or DataError(path, f"not UTF-8 text ({e.reason})") from None
    return _loads(text, path, None)


def iter_lines(path) -> Iterator[tuple[int, str]]:
    """(line_number, text) of a UTF-8 text file (.gz transparently), lines ending in "\n"
    ("\r\n" read as "\n"); a truncated or corrupt gzip or non-UTF-8 bytes raise DataError
    naming the line. Lines are split as bytes and decoded one by one: a text-mode decoder
    reads ahead in blocks and fails lines before the bad byte's own."""
    lineno = 0
    try:
        with open_binary(path) as fh:
            for lineno, raw in enumerate(fh, start=1):
                yield lineno, decode_line(raw, path, lineno)
    except _GZIP_ERRORS as e:
        raise DataError(path, f"truncated or corrupt gzip after {lineno} complete lines ({e})",
                        line=lineno + 1) from None


def decode_line(raw: bytes, path, lineno: int, encoding: str = "utf-8") -> str:
    """One line's bytes as text; undecodable bytes -> DataError at that line and column."""
    try:
        text = raw.decode(encoding)
    except UnicodeDecodeError as e:
        raise DataError(path, f"not {encoding.upper()} text ({e.reason} at column {e.start + 1})",
                        line=lineno) from None
    return text[:-2] + "\n" if text.endswith("\r\n") else text


def first_undecodable_line(path, encoding: str = "utf-8") -> DataError | None:
    """The located error of the first line of `path` that does not decode, or None (for
    readers such as pandas that report only a byte offset)."""
    with open_binary(path) as fh:
        for lineno, raw in enumerate(fh, start=1):
            try:
                decode_line(raw, path, lineno, encoding)
            except DataError as e:
                return e
    return None


def iter_jsonl(path, required: Iterable[str] = ()) -> Iterator[tuple[int, dict]]:
    """Yield (line_number, record) for each non-blank line.

    A line that is not a JSON object, or that lacks a `required` field, raises
    DataError naming file, line and field.
    """
    required = tuple(required)
    for lineno, line in iter_lines(path):
        if not line.strip():
            continue
        rec = _loads(line, path, lineno)
        if not isinstance(rec, dict):
            raise DataError(path, f"expected a JSON object, got {type(rec).__name__}", line=lineno)
        for field in required:
            if field not in rec:
                raise DataError(path, "missing", line=lineno, field=field)
        yield lineno, rec


def read_jsonl(path, required: Iterable[str] = ()) -> list[dict]:
    return [rec for _, rec in iter_jsonl(path, required)]
