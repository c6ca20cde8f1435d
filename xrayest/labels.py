"""Label tables in: the CSVs public chest X-ray sets ship, as paths, labels and patient groups.

Two layouts cover the public sets:

- one column of findings joined by a separator, as NIH ChestX-ray14 (``Image Index``,
  ``Finding Labels="Effusion|Infiltration"``, ``Patient ID``): ``label_column=..., sep="|"``
  gives a 0/1 indicator matrix over every finding named in the table (``none_label`` such as
  "No Finding" is an all-zero row); without ``sep`` the column is one class per image;
- one column per finding, as CheXpert (``Path`` plus 14 columns holding 1, 0, -1 for uncertain, or
  blank for not mentioned): ``label_columns=[...]``.  Blank is 0 (not mentioned); -1 becomes 0
  (``uncertain="zeros"``), 1 (``"ones"``) or stays -1 (``"ignore"``: the multi-label loss of
  :class:`~xrayest.XrayCNNClassifier` leaves those entries out).

A ``patient_column`` gives ``groups`` for patient-level splits
(``GridSearchCV(..., cv=StratifiedGroupKFold(5)).fit(X, y, groups=groups)``, or ``fit(X, y,
groups=groups)`` with ``validation_split``): no patient on both sides.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["LabelTable", "load_label_table", "read_table", "UNCERTAIN"]

UNCERTAIN = {"zeros": 0, "ones": 1, "ignore": -1}
_ENCODINGS = ("utf-8-sig", "cp1252")  # UTF-8 with or without BOM, else Excel's "CSV" on Western systems


@dataclass
class LabelTable:
    """What :func:`load_label_table` read.

    Attributes
    ----------
    paths : ndarray of str
        One image path per row (joined to ``root``).
    y : ndarray
        ``(n,)`` labels (one class per image), or an ``(n, k)`` int indicator matrix (multi-label;
        -1 marks an uncertain entry kept out of the loss with ``uncertain="ignore"``).
    labels : list of str
        The classes (single-label, sorted) or the finding of each column of ``y`` (multi-label).
    groups : ndarray or None
        Patient ID of each row, when the table has a patient column.
    """

    paths: np.ndarray
    y: np.ndarray
    labels: list
    groups: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.paths)

    def to_frame(self):
        """The table as a pandas DataFrame: ``path``, ``label`` (or one column per finding), ``patient``.

        Examples
        --------
        >>> t = LabelTable(np.array(["a.png", "b.png"]), np.array([[1, 0], [0, 1]]), ["Edema", "Effusion"])
        >>> t.to_frame().columns.tolist()
        ['path', 'Edema', 'Effusion']
        """
        import pandas as pd

        frame = pd.DataFrame({"path": self.paths})
        if self.y.ndim == 2:
            for j, name in enumerate(self.labels):
                frame[name] = self.y[:, j]
        else:
            frame["label"] = self.y
        if self.groups is not None:
            frame["patient"] = self.groups
        return frame


def read_table(path):
    """A CSV label table as a pandas DataFrame of strings (blank cells ``""``).

    ``.gz``, ``.bz2``, ``.xz`` and single-file ``.zip`` tables are decompressed; text is UTF-8 (with
    or without BOM), else Windows-1252 (a table saved from Excel).  A file that cannot be read, or a
    row with more or fewer fields than the header (its values would land in the wrong columns), is a
    ``ValueError`` naming the file and the row.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "labels.csv"
    >>> _ = path.write_text("path,label\\na.png,normal\\nb.png,\\n")
    >>> read_table(path).to_dict("list")
    {'path': ['a.png', 'b.png'], 'label': ['normal', '']}
    """
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"label table not found: {path}")
    for encoding in _ENCODINGS:
        try:
            _refuse_ragged_rows(path, _field_counts(path, encoding))
            return pd.read_csv(path, dtype=str, keep_default_na=False, encoding=encoding, compression="infer",
                               index_col=False)
        except UnicodeDecodeError:
            continue
        except pd.errors.EmptyDataError:
            raise ValueError(f"label table {path} is empty: no header row") from None
        except _RaggedTable:
            raise
        except (ValueError, OSError, EOFError, csv.Error) as exc:  # not gzip, cut short, a NUL byte ...
            raise ValueError(f"label table {path} cannot be read: {exc}") from exc
    raise ValueError(f"label table {path} is neither UTF-8 nor Windows-1252 text; save it as UTF-8 CSV")


class _RaggedTable(ValueError):
    """A row with another number of fields than the header."""


def _refuse_ragged_rows(path: Path, counts: list[int]) -> None:
    """Each record as long as the header (pandas would pad a short row with blanks, silently)."""
    if not counts or not counts[0]:
        return
    for number, count in enumerate(counts[1:], start=2):  # row 1 is the header; 0 is a blank line
        if count and count != counts[0]:
            raise _RaggedTable(f"label table {path} row {number} has {count} fields but the header has "
                               f"{counts[0]}: its values would land in the wrong columns")


def _field_counts(path: Path, encoding: str) -> list[int]:
    """Fields per CSV record (0 for a blank line), by the csv module's C reader, decompressed as pandas does."""
    import bz2
    import gzip
    import io
    import lzma
    import zipfile

    suffix = path.suffix.lower()
    if suffix == ".zip":
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            if len(names) != 1:
                raise ValueError(f"a zipped table holds one file; this one holds {len(names)}")
            with archive.open(names[0]) as raw:
                return [len(record) for record in csv.reader(io.TextIOWrapper(raw, encoding=encoding, newline=""))]
    opener = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}.get(suffix, open)
    with opener(path, "rt", encoding=encoding, newline="") as handle:
        return [len(record) for record in csv.reader(handle)]


def _frame(table):
    """``table`` as a DataFrame: a CSV path (:func:`read_table`), a pandas DataFrame or a list of dicts."""
    import pandas as pd

    if isinstance(table, (str, Path)):
        return read_table(table)
    if isinstance(table, pd.DataFrame):
        return table.rename(columns=str)
    if isinstance(table, (list, tuple)) and all(isinstance(r, dict) for r in table):
        return pd.DataFrame(list(table)).rename(columns=str)
    raise TypeError(f"table must be a CSV path, a pandas DataFrame or a list of dicts; got {type(table).__name__}")


def _text(column) -> np.ndarray:
    """A column as stripped strings, object dtype (missing cells, None or NaN, are ``""``)."""
    import pandas as pd

    series = pd.Series(column, dtype=object)
    return series.where(series.notna(), "").astype(str).str.strip().to_numpy(dtype=object)


def _inside(path: str, root) -> bool:
    return os.path.normpath(os.path.abspath(path)).startswith(os.path.normpath(os.path.abspath(root)) + os.sep)


def _refuse_conflicting_repeats(paths, y) -> None:
    """One image listed twice with different labels is an error naming both rows."""
    import pandas as pd

    keys = pd.Series([os.path.normpath(p) for p in paths])
    first = {}
    for i in np.flatnonzero(keys.duplicated(keep=False).to_numpy()):
        j = first.setdefault(keys[i], i)
        if j != i and not np.array_equal(np.asarray(y[j]), np.asarray(y[i])):
            raise ValueError(f"label table rows {j + 2} and {i + 2} both list {paths[i]} with different labels "
                             f"({np.asarray(y[j]).tolist()!r} and {np.asarray(y[i]).tolist()!r})")


_FINDING_CELLS = {"1": 1, "1.0": 1, "0": 0, "0.0": 0, "-1": -1, "-1.0": -1, "": 0}


def _finding_values(column, name) -> np.ndarray:
    """A CheXpert-style column: 1, 0, -1 or blank (0); anything else is an error naming the row."""
    import pandas as pd

    series = pd.Series(column).reset_index(drop=True)
    if pd.api.types.is_numeric_dtype(series):  # a DataFrame read by pandas: floats, NaN for blank
        numbers = series.fillna(0.0).to_numpy(float)
    else:  # strings: the usual spellings looked up, the rest stripped and parsed
        numbers = series.map(_FINDING_CELLS).to_numpy(float, copy=True)
        rest = np.flatnonzero(np.isnan(numbers))
        if len(rest):
            text = _text(series.iloc[rest])
            numbers[rest] = pd.to_numeric(pd.Series(np.where(text == "", "0", text)), errors="coerce").to_numpy(float)
    bad = np.flatnonzero(~np.isin(numbers, (1.0, 0.0, -1.0)))
    if len(bad):
        raise ValueError(f"label table row {bad[0] + 2}, column {name!r}: {series.iloc[bad[0]]!r} "
                         "is not 1, 0, -1 or blank")
    return numbers.astype(np.int64)


def _joined_paths(names, root, path_column) -> list[str]:
    """Image paths: relative ones joined to ``root`` and kept inside it."""
    empty = np.flatnonzero(names == "")
    if len(empty):
        raise ValueError(f"label table row {empty[0] + 2}: column {path_column!r} is empty")
    if root is None:
        return list(names)
    relative = ~np.array([os.path.isabs(n) for n in names], dtype=bool)
    for i in np.flatnonzero(relative & (np.char.find(names.astype(str), "..") >= 0)):  # only these can climb out
        if ".." in Path(names[i]).parts and not _inside(os.path.join(root, names[i]), root):
            raise ValueError(f"label table row {i + 2}: path {names[i]!r} leads outside the table's root {root}; "
                             "relative paths must stay inside it (write an absolute path to read a file "
                             "elsewhere)")
    prefix = os.path.join(str(root), "")
    return [prefix + n if rel else n for n, rel in zip(names, relative)]


def _indicators(values, sep, none_label, column):
    """Findings joined by ``sep`` as an indicator matrix over every finding named, and their names."""
    findings = [[n for n in (s.strip() for s in value.split(sep)) if n and n != none_label] for value in values]
    labels = sorted({n for names in findings for n in names})
    if not labels:
        raise ValueError(f"column {column!r} names no finding (every row is blank or {none_label!r})")
    index = {name: j for j, name in enumerate(labels)}
    y = np.zeros((len(values), len(labels)), np.int64)
    for i, names in enumerate(findings):
        y[i, [index[n] for n in names]] = 1
    return y, labels


def load_label_table(table, path_column, *, label_column=None, label_columns=None, sep=None, none_label=None,
                     uncertain="zeros", patient_column=None, root=None, check_files=True) -> LabelTable:
    """Read image paths, labels and patient groups from a label table.

    Parameters
    ----------
    table : path, pandas.DataFrame or list of dict
        A CSV file with a header row (read by :func:`read_table`: compressed, UTF-8 or Windows-1252), or
        the rows themselves.
    path_column : str
        Column of image paths or file names (relative ones are joined to ``root``).
    label_column : str, optional
        One column of labels: a class per image, or findings joined by ``sep`` (multi-label).
    label_columns : sequence of str, optional
        One column per finding holding 1, 0, -1 (uncertain) or blank (multi-label).
    sep : str, optional
        Separator of findings in ``label_column`` (NIH: ``"|"``); makes ``y`` multi-label.
    none_label : str, optional
        With ``sep``: the value meaning "no finding" (NIH: ``"No Finding"``), an all-zero row.
    uncertain : {"zeros", "ones", "ignore"}, default="zeros"
        What -1 in ``label_columns`` becomes: 0, 1, or -1 kept (masked from the loss).
    patient_column : str, optional
        Patient identifiers, returned as ``groups``.
    root : path, optional
        Folder relative paths are read from (default: the table's folder for a CSV, else as is).
    check_files : bool, default=True
        Refuse the table when files it names are missing (listing the first of them).

    Returns
    -------
    LabelTable
        ``paths``, ``y``, ``labels`` and ``groups``.

    Examples
    --------
    >>> rows = [{"Image Index": "a.png", "Finding Labels": "Effusion|Infiltration", "Patient ID": "7"},
    ...         {"Image Index": "b.png", "Finding Labels": "No Finding", "Patient ID": "7"},
    ...         {"Image Index": "c.png", "Finding Labels": "Effusion", "Patient ID": "9"}]
    >>> t = load_label_table(rows, "Image Index", label_column="Finding Labels", sep="|",
    ...                      none_label="No Finding", patient_column="Patient ID", check_files=False)
    >>> t.labels, t.y.tolist(), t.groups.tolist()
    (['Effusion', 'Infiltration'], [[1, 1], [0, 0], [1, 0]], ['7', '7', '9'])
    """
    if (label_column is None) == (label_columns is None):
        raise ValueError("give exactly one of label_column (one column of labels) and label_columns (one column "
                         "per finding)")
    if uncertain not in UNCERTAIN:
        raise ValueError(f"uncertain must be one of {sorted(UNCERTAIN)}; got {uncertain!r}")
    if label_columns is not None and (isinstance(label_columns, str) or len(label_columns) == 0):
        raise ValueError(f"label_columns must be a non-empty list of column names; got {label_columns!r}")
    frame = _frame(table)
    if not len(frame):
        raise ValueError("the label table has no rows")
    columns = list(frame.columns)
    wanted = [path_column, *([label_column] if label_column is not None else list(label_columns)),
              *([patient_column] if patient_column is not None else [])]
    missing = [c for c in wanted if c not in columns]
    if missing:
        raise ValueError(f"label table has no column(s) {missing}; its columns: {columns}")

    if root is None:
        root = Path(table).parent if isinstance(table, (str, Path)) else None
    paths = _joined_paths(_text(frame[path_column]), root, path_column)
    if check_files:
        absent = [p for p in paths if not os.path.isfile(p)]
        if absent:
            raise FileNotFoundError(f"{len(absent)} file(s) named in the label table are missing, e.g. "
                                    f"{', '.join(absent[:3])}")

    if label_columns is not None:
        y = np.stack([_finding_values(frame[c], c) for c in label_columns], axis=1)
        y[y == -1] = UNCERTAIN[uncertain]
        labels = [str(c) for c in label_columns]
    else:
        values = _text(frame[label_column])
        blank = np.flatnonzero(values == "")
        if len(blank) and sep is not None:  # not "no finding": that is none_label, written out
            hint = f"; write {none_label!r} for an image with no finding" if none_label else ""
            raise ValueError(f"label table row {blank[0] + 2}: column {label_column!r} is blank{hint}")
        if len(blank):
            raise ValueError(f"label table rows {(blank[:5] + 2).tolist()} have no label in column {label_column!r}")
        if sep is not None:
            y, labels = _indicators(values, sep, none_label, label_column)
        else:
            y = values.astype(str)
            labels = sorted(set(y.tolist()))
    _refuse_conflicting_repeats(paths, y)
    groups = None if patient_column is None else _text(frame[patient_column]).astype(str)
    return LabelTable(paths=np.array(paths), y=y, labels=labels, groups=groups)
