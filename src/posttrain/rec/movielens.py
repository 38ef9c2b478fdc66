"""MovieLens loaders: any supported source -> one ratings table with "Title (Year)" titles.

Sources (`load(source)`):
- `ml-100k`: the packaged RecBole atomic files `ml-100k.inter` / `ml-100k.item`
  (tab-separated, typed headers such as `user_id:token`); the offline default.
- a directory in the ml-latest format: `ratings.csv` + `movies.csv`.
- a directory with ml-100k's original `u.data` / `u.item`.
- a directory with ml-1m's `ratings.dat` / `movies.dat` (`::`-separated).
- a directory with RecBole atomic files `*.inter` / `*.item`.
- `ml-latest-small`, `ml-1m`, `ml-25m` or a GroupLens zip URL: downloaded (online only)
  into `cache_dir`, unpacked, then read as above.

Every loader validates as it reads: a missing column, a non-numeric or non-finite
rating or timestamp, a fractional timestamp (MovieLens counts whole seconds), a rating
outside the MovieLens star scale (`alpaca.RATING_SCALE`), a rating of a movie the movies
file does not know, or an empty file raises `DataError` naming the file, the line and the
field. A row with the wrong number of fields (another separator, a missing or an extra
column) is reported as such ("expected 4 fields, got 1; is the separator ','?"), not as the
bad value it shifts into another field, and undecodable bytes name their own line.

Duplicates: MovieLens keeps one rating per user and movie (rating again overwrites),
so a second row of the same (user, movie) is a re-rating: the latest one (by timestamp,
then file order) is kept and the others dropped and counted in
`df.attrs["duplicate_ratings_dropped"]`. Kept, an older rating of the candidate would sit
in the candidate's own history and leak its label.
"""

from __future__ import annotations

import contextlib
import csv
import io
import logging
import re
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

from posttrain.core import assets
from posttrain.rec.alpaca import RATING_SCALE
from posttrain.core.io import DataError, atomic_path, first_undecodable_line

log = logging.getLogger(__name__)

COLUMNS = ["user_id", "item_id", "rating", "timestamp", "title"]

GROUPLENS = "https://files.grouplens.org/datasets/movielens/"
GROUPLENS_URLS = {
    "ml-latest-small": GROUPLENS + "ml-latest-small.zip",
    "ml-1m": GROUPLENS + "ml-1m.zip",
    "ml-25m": GROUPLENS + "ml-25m.zip",
    "ml-100k-grouplens": GROUPLENS + "ml-100k.zip",
}

_YEAR_SUFFIX = re.compile(r"\(\s*\d{4}(?:\s*[-–]\s*\d{0,4})?\s*\)\s*$")


def format_title(title: str, year=None) -> str:
    """"Title (Year)"; a title that already ends in a year keeps it; no year -> title alone."""
    title = " ".join(str(title).split())
    if _YEAR_SUFFIX.search(title):
        return title
    year = "" if year is None or (isinstance(year, float) and pd.isna(year)) else str(year).strip()
    if year.endswith(".0"):  # typed "float" year columns
        year = year[:-2]
    return f"{title} ({year})" if re.fullmatch(r"\d{4}", year) else title


# --- table reading with located errors ---------------------------------------------------

def _read_table(path: Path, *, sep: str, header: bool, names=None, encoding="utf-8") -> pd.DataFrame:
    """All cells as strings; a ragged or unreadable file -> DataError with the line. The
    table's shape (separator, encoding, fields per row) goes to `df.attrs["shape"]` for
    `_shape_first`."""
    if path.is_dir():
        raise DataError(path, "is a directory, expected a file")
    if not path.is_file():
        raise DataError(path, "file not found")
    if path.stat().st_size == 0:
        raise DataError(path, "empty file")
    kw = dict(sep=sep, dtype=str, keep_default_na=False, encoding=encoding)
    if len(sep) > 1:
        kw["engine"] = "python"  # multi-char separators (ml-1m `::`)
    else:
        kw["quoting"] = 0 if sep == "," else 3  # csv quoting for CSV only
    if header:
        kw["header"] = 0
    else:
        kw["header"], kw["names"] = None, names
    try:
        df = pd.read_csv(path, **kw)
    except pd.errors.EmptyDataError:
        raise DataError(path, "empty file") from None
    except UnicodeDecodeError as e:  # pandas names a byte offset in a buffer, not the line
        raise first_undecodable_line(path, encoding) or DataError(path, f"not {encoding} text ({e.reason})") from None
    except (pd.errors.ParserError, ValueError) as e:
        m = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", str(e))
        if m:  # a row with more fields than the first: the file's shape, not a value
            raise _shape_error(path, int(m.group(2)), int(m.group(1)), int(m.group(3)), sep) from None
        m = re.search(r"line (\d+)", str(e))
        raise DataError(path, f"unreadable: {str(e).strip()}", line=int(m.group(1)) if m else None) from None
    if df.empty:
        raise DataError(path, "empty file: a header but no rows", line=2 if header else 1)
    if not isinstance(df.index, pd.RangeIndex):
        # pandas took a first data row with one field more than the header for "index + row"
        raise _first_bad_shape(path, sep, encoding, len(df.columns), header)
    df.attrs["shape"] = (sep, encoding, len(df.columns), header)
    df.columns = [str(c).strip() for c in df.columns]
    # The first data row is line 2 under a header, line 1 otherwise.
    df.index = pd.RangeIndex(2 if header else 1, 2 + len(df) if header else 1 + len(df))
    return df


def _fields(text: str, sep: str) -> int:
    if sep == ",":  # quoted CSV (titles hold commas)
        return len(next(csv.reader([text]), []))
    return len(text.split(sep))


def _shape_error(path: Path, line: int, expected: int, got: int, sep: str) -> DataError:
    return DataError(path, f"expected {expected} fields, got {got}; is the separator {sep!r}?", line=line)


def _first_bad_shape(path: Path, sep: str, encoding: str, expected: int, header: bool) -> DataError:
    with open(path, "rb") as f:
        for line, raw in enumerate(f, start=1):
            text = raw.decode(encoding, "replace").rstrip("\r\n")
            if (line > 1 or not header) and text.strip() and _fields(text, sep) != expected:
                return _shape_error(path, line, expected, _fields(text, sep), sep)
    return DataError(path, "rows do not match the header")


def _line_shape(path: Path, line: int, shape) -> DataError | None:
    """The shape error of file line `line` if its field count is not the table's, else None."""
    sep, encoding, expected, _ = shape
    with open(path, "rb") as f:
        for i, raw in enumerate(f, start=1):
            if i == line:
                got = _fields(raw.decode(encoding, "replace").rstrip("\r\n"), sep)
                return _shape_error(path, line, expected, got, sep) if got != expected else None
    return None


@contextlib.contextmanager
def _shape_first(df: pd.DataFrame, path: Path):
    """A bad value on a row with the wrong number of fields is reported as the row's shape
    (a wrong separator or a missing or extra column shifts values into other fields: "not a
    finite number: ''" would point at the wrong cause)."""
    try:
        yield
    except DataError as e:
        shape = df.attrs.get("shape")
        if shape is None or e.line is None or e.path != str(path) or (shape[3] and e.line == 1):
            raise
        err = _line_shape(path, e.line, shape)
        if err is None:
            raise
        raise err from None


def _require(df: pd.DataFrame, path: Path, cols) -> None:
    cols = list(cols)
    shape = df.attrs.get("shape")
    if shape and shape[3] and len(df.columns) == 1 < len(cols):
        # the whole header in one field: the file uses another separator
        raise DataError(path, f"expected at least {len(cols)} fields, got {len(df.columns)}; "
                              f"is the separator {shape[0]!r}?", line=1)
    for col in cols:
        if col not in df.columns:
            raise DataError(path, f"missing column (header has: {', '.join(df.columns)})", line=1, field=col)
    # Short rows come back as NaN although everything else is a string.
    for col in cols:
        bad = df[col].isna()
        if bad.any():
            raise DataError(path, "missing value (short row)", line=int(bad.idxmax()), field=col)


def _numeric(df: pd.DataFrame, path: Path, col: str, out: str | None = None) -> pd.Series:
    vals = pd.to_numeric(df[col].str.strip(), errors="coerce")
    bad = ~np.isfinite(vals.to_numpy(dtype=np.float64))  # unparsable -> NaN; "inf", "nan" too
    if bad.any():
        line = int(vals.index[bad.argmax()])
        raise DataError(path, f"not a finite number: {df.at[line, col]!r}", line=line, field=out or col)
    return vals


def _in_scale(ratings: pd.Series, path: Path, field: str) -> None:
    lo, hi = RATING_SCALE
    bad = (ratings < lo) | (ratings > hi)
    if bad.any():
        line = int(bad.idxmax())
        raise DataError(path, f"rating {ratings[line]:g} outside the MovieLens scale {lo:g}-{hi:g}",
                        line=line, field=field)


def drop_duplicate_ratings(df: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """One rating per (user, movie): the latest (timestamp, then file line) wins."""
    order = df.sort_values(["timestamp", "line"], kind="stable")
    dup = order.duplicated(["user_id", "item_id"], keep="last")
    keep = order.index[~dup]
    return df.loc[df.index.isin(keep)].reset_index(drop=True), int(dup.sum())


def _assemble(ratings_path: Path, r: pd.DataFrame, cols: dict, titles: dict[str, str], movie_col: str) -> pd.DataFrame:
    """Validated ratings (string ids, float rating, int timestamp) joined with titles."""
    ts = _numeric(r, ratings_path, cols["timestamp"])
    frac = ts != np.floor(ts)
    if frac.any():  # astype(int64) would cut 964982703.9 silently
        line = int(ts.index[frac.argmax()])
        raise DataError(ratings_path, f"not a whole number of seconds: {r.at[line, cols['timestamp']]!r}",
                        line=line, field=cols["timestamp"])
    out = pd.DataFrame({
        "user_id": r[cols["user"]].str.strip(),
        "item_id": r[cols["item"]].str.strip(),
        "rating": _numeric(r, ratings_path, cols["rating"]).astype(float),
        "timestamp": ts.astype("int64"),
    }, index=r.index)
    _in_scale(out["rating"], ratings_path, cols["rating"])
    for key in ("user", "item"):
        empty = out[f"{key}_id"] == ""
        if empty.any():
            raise DataError(ratings_path, "empty id", line=int(empty.idxmax()), field=cols[key])
    title = out["item_id"].map(titles)
    unknown = title.isna()
    if unknown.any():
        line = int(unknown.idxmax())
        raise DataError(ratings_path, f"rating of unknown movie {out.at[line, 'item_id']!r} "
                                      f"(not in the movies file)", line=line, field=movie_col)
    out["title"] = title
    out["line"] = out.index.astype("int64")
    out, dropped = drop_duplicate_ratings(out.reset_index(drop=True))
    out.attrs["duplicate_ratings_dropped"] = dropped
    if dropped:
        log.warning("%s: %d duplicate (user, movie) ratings dropped, the latest kept", ratings_path, dropped)
    return out


def _titles(df: pd.DataFrame, path: Path, id_col: str, title_col: str, year_col: str | None = None) -> dict[str, str]:
    ids = df[id_col].str.strip()
    dup = ids.duplicated()
    if dup.any():
        line = int(dup.idxmax())
        raise DataError(path, f"duplicate movie id {ids[line]!r}", line=line, field=id_col)
    years = df[year_col] if year_col else [None] * len(df)
    return {i: format_title(t, y) for i, t, y in zip(ids, df[title_col], years)}


# --- the formats ------------------------------------------------------------------------

def load_ml_latest(folder) -> pd.DataFrame:
    """`ratings.csv` (userId, movieId, rating, timestamp) + `movies.csv` (movieId, title, ...)."""
    folder = Path(folder)
    mpath, rpath = folder / "movies.csv", folder / "ratings.csv"
    m = _read_table(mpath, sep=",", header=True)
    with _shape_first(m, mpath):
        _require(m, mpath, ["movieId", "title"])
        titles = _titles(m, mpath, "movieId", "title")
    r = _read_table(rpath, sep=",", header=True)
    cols = {"user": "userId", "item": "movieId", "rating": "rating", "timestamp": "timestamp"}
    with _shape_first(r, rpath):
        _require(r, rpath, cols.values())
        return _assemble(rpath, r, cols, titles, "movieId")


def load_ml100k_raw(folder) -> pd.DataFrame:
    """ml-100k's original files: `u.data` (tab, no header) and `u.item` (pipe, latin-1)."""
    folder = Path(folder)
    ipath, dpath = folder / "u.item", folder / "u.data"
    item = _read_table(ipath, sep="|", header=False, encoding="latin-1", names=None)
    if item.shape[1] < 3:
        raise DataError(ipath, f"expected '|'-separated rows (id|title|date|...), got {item.shape[1]} field(s)",
                        line=1, field="title")
    item = item.rename(columns={item.columns[0]: "movie_id", item.columns[1]: "title"})
    with _shape_first(item, ipath):
        titles = _titles(item, ipath, "movie_id", "title")
    return _headerless_ratings(dpath, "\t", titles)


def load_ml1m(folder) -> pd.DataFrame:
    """ml-1m: `ratings.dat` (UserID::MovieID::Rating::Timestamp) + `movies.dat` (latin-1)."""
    folder = Path(folder)
    mpath, rpath = folder / "movies.dat", folder / "ratings.dat"
    m = _read_table(mpath, sep="::", header=False, names=["movie_id", "title", "genres"], encoding="latin-1")
    with _shape_first(m, mpath):
        _require(m, mpath, ["movie_id", "title"])
        titles = _titles(m, mpath, "movie_id", "title")
    return _headerless_ratings(rpath, "::", titles)


def _headerless_ratings(path: Path, sep: str, titles: dict[str, str]) -> pd.DataFrame:
    """GroupLens' header-less ratings files (ml-100k u.data, ml-1m ratings.dat):
    user, item, rating, timestamp."""
    names = ["user_id", "item_id", "rating", "timestamp"]
    r = _read_table(path, sep=sep, header=False, names=names)
    cols = {"user": "user_id", "item": "item_id", "rating": "rating", "timestamp": "timestamp"}
    with _shape_first(r, path):
        _require(r, path, names)
        return _assemble(path, r, cols, titles, "item_id")


def _strip_types(df: pd.DataFrame) -> pd.DataFrame:
    # RecBole headers carry types: `user_id:token`, `rating:float`.
    return df.rename(columns={c: c.split(":", 1)[0] for c in df.columns})


def load_recbole(folder, name: str | None = None) -> pd.DataFrame:
    """RecBole atomic files `<name>.inter` (user_id, item_id, rating, timestamp) and
    `<name>.item` (item_id, movie_title, release_year)."""
    folder = Path(folder)
    if name is None:
        inters = sorted(folder.glob("*.inter"))
        if not inters:
            raise DataError(folder, "no *.inter file")
        name = inters[0].stem
    ipath, rpath = folder / f"{name}.item", folder / f"{name}.inter"
    item = _strip_types(_read_table(ipath, sep="\t", header=True))
    with _shape_first(item, ipath):
        _require(item, ipath, ["item_id", "movie_title"])
        year_col = "release_year" if "release_year" in item.columns else None
        titles = _titles(item, ipath, "item_id", "movie_title", year_col)
    r = _strip_types(_read_table(rpath, sep="\t", header=True))
    cols = {"user": "user_id", "item": "item_id", "rating": "rating", "timestamp": "timestamp"}
    with _shape_first(r, rpath):
        _require(r, rpath, cols.values())
        return _assemble(rpath, r, cols, titles, "item_id")


def detect_format(folder: Path) -> str:
    folder = Path(folder)
    if (folder / "ratings.csv").exists() or (folder / "movies.csv").exists():
        return "ml-latest"
    if (folder / "u.data").exists() or (folder / "u.item").exists():
        return "ml-100k-raw"
    if (folder / "ratings.dat").exists():
        return "ml-1m"
    if any(folder.glob("*.inter")):
        return "recbole"
    raise DataError(folder, "not a MovieLens folder: expected ratings.csv+movies.csv, u.data+u.item, "
                            "ratings.dat+movies.dat or *.inter+*.item")


LOADERS = {"ml-latest": load_ml_latest, "ml-100k-raw": load_ml100k_raw, "ml-1m": load_ml1m,
           "recbole": load_recbole}


def download(url: str, cache_dir) -> Path:
    """Fetch and unpack a GroupLens zip once; returns the folder holding the data files."""
    cache_dir = Path(cache_dir)
    stem = Path(url.rstrip("/").rsplit("/", 1)[-1]).stem
    target = cache_dir / stem
    if not target.is_dir():
        log.info("downloading %s", url)
        with urllib.request.urlopen(url, timeout=60) as resp:  # online only; offline default never gets here
            blob = resp.read()
        with atomic_path(target, directory=True) as tmp:
            zipfile.ZipFile(io.BytesIO(blob)).extractall(tmp)
    # Zips hold one top-level folder (ml-latest-small/...).
    subdirs = [p for p in target.iterdir() if p.is_dir()]
    return subdirs[0] if len(subdirs) == 1 and not any(target.glob("*.*")) else target


def load(source: str, cache_dir="data/rec/download") -> pd.DataFrame:
    """Ratings with columns user_id, item_id (str), rating (float), timestamp (int),
    title ("Title (Year)"), line (line number in the ratings file)."""
    source = str(source)
    if source in GROUPLENS_URLS or source.startswith(("http://", "https://")):
        folder = download(GROUPLENS_URLS.get(source, source), cache_dir)
    else:
        folder = assets.resolve(source)
        if not isinstance(folder, Path):
            raise DataError(source, "unknown MovieLens source: not an asset name (ml-100k), a folder, "
                                    f"a GroupLens name ({', '.join(GROUPLENS_URLS)}) or a URL")
    if folder.is_file():
        folder = folder.parent
    df = LOADERS[detect_format(folder)](folder)
    log.info("%s: %d ratings, %d users, %d movies", source, len(df), df.user_id.nunique(), df.item_id.nunique())
    return df
