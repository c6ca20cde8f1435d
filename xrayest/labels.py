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

__all__ = ["LabelTable", "load_label_table", "UNCERTAIN"]

UNCERTAIN = {"zeros": 0, "ones": 1, "ignore": -1}


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


def _rows(table) -> tuple[list[str], list[dict]]:
    """Column names and rows (dicts of str) of a CSV path, a pandas DataFrame or a list of dicts."""
    if isinstance(table, (str, Path)):
        path = Path(table)
        if not path.is_file():
            raise FileNotFoundError(f"label table not found: {path}")
        return _read_csv(path)
    if hasattr(table, "to_dict") and hasattr(table, "columns"):  # a pandas DataFrame, without importing pandas
        rows = table.to_dict("records")
        return [str(c) for c in table.columns], [{str(k): v for k, v in row.items()} for row in rows]
    if isinstance(table, (list, tuple)) and all(isinstance(r, dict) for r in table):
        columns = list(dict.fromkeys(k for r in table for k in r))
        return columns, list(table)
    raise TypeError(f"table must be a CSV path, a pandas DataFrame or a list of dicts; got {type(table).__name__}")


def _read_csv(path: Path) -> tuple[list[str], list[dict]]:
    """A CSV file's header and rows: ``.gz`` decompressed; UTF-8 (with or without BOM), else Windows-1252
    (Excel's "CSV" on Western systems); a row with more or fewer fields than the header is an error."""
    import gzip

    opener = gzip.open if path.suffix == ".gz" else open
    for encoding in ("utf-8-sig", "cp1252"):
        try:
            with opener(path, "rt", newline="", encoding=encoding) as f:
                reader = csv.DictReader(f)
                rows = list(reader)
                columns = list(reader.fieldnames or [])  # read inside: an empty file reads its header here
            break
        except UnicodeDecodeError:
            continue
        except (OSError, EOFError, csv.Error) as exc:  # a .gz that is not gzip or cut short; a NUL byte
            raise ValueError(f"label table {path} cannot be read: {exc}") from exc
    else:
        raise ValueError(f"label table {path} is neither UTF-8 nor Windows-1252 text; save it as UTF-8 CSV")
    for number, row in enumerate(rows, start=2):  # row 1 is the header
        if None in row or any(value is None for value in row.values()):
            count = len(columns) + len(row.get(None) or []) - sum(value is None for value in row.values())
            raise ValueError(f"label table {path} row {number} has {count} fields but the header has "
                             f"{len(columns)}: its values would land in the wrong columns")
    return columns, rows


def _blank(value) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value)) or str(value).strip() == ""


def _inside(path: Path, root: Path) -> bool:
    return os.path.normpath(os.path.abspath(path)).startswith(os.path.normpath(os.path.abspath(root)) + os.sep)


def _refuse_conflicting_repeats(paths, y) -> None:
    """One image listed twice with different labels is an error naming both rows."""
    first = {}
    for i, path in enumerate(paths):
        key = os.path.normpath(path)
        if key in first:
            j = first[key]
            if not np.array_equal(np.asarray(y[j]), np.asarray(y[i])):
                raise ValueError(f"label table rows {j + 2} and {i + 2} both list {path} with different labels "
                                 f"({np.asarray(y[j]).tolist()!r} and {np.asarray(y[i]).tolist()!r})")
        else:
            first[key] = i


def _finding_value(value, column, row_number) -> int:
    """A CheXpert-style cell: 1, 0, -1 or blank (0)."""
    if _blank(value):
        return 0
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = None
    if number not in (1.0, 0.0, -1.0):
        raise ValueError(f"label table row {row_number}, column {column!r}: {value!r} is not 1, 0, -1 or blank")
    return int(number)


def load_label_table(table, path_column, *, label_column=None, label_columns=None, sep=None, none_label=None,
                     uncertain="zeros", patient_column=None, root=None, check_files=True) -> LabelTable:
    """Read image paths, labels and patient groups from a label table.

    Parameters
    ----------
    table : path, pandas.DataFrame or list of dict
        A CSV file (header row) or the rows themselves.
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
    columns, rows = _rows(table)
    if not rows:
        raise ValueError("the label table has no rows")
    wanted = [path_column, *([label_column] if label_column is not None else list(label_columns)),
              *([patient_column] if patient_column is not None else [])]
    missing = [c for c in wanted if c not in columns]
    if missing:
        raise ValueError(f"label table has no column(s) {missing}; its columns: {columns}")

    if root is None:
        root = Path(table).parent if isinstance(table, (str, Path)) else None
    paths = []
    for i, row in enumerate(rows, start=2):  # row 1 is the header
        value = row[path_column]
        if _blank(value):
            raise ValueError(f"label table row {i}: column {path_column!r} is empty")
        path = Path(str(value).strip())
        if not path.is_absolute() and root is not None:
            if ".." in path.parts and not _inside(Path(root) / path, Path(root)):
                raise ValueError(f"label table row {i}: path {str(value).strip()!r} leads outside the table's root "
                                 f"{root}; relative paths must stay inside it (write an absolute path to read a "
                                 "file elsewhere)")
            path = Path(root) / path
        paths.append(str(path))
    if check_files:
        absent = [p for p in paths if not Path(p).is_file()]
        if absent:
            raise FileNotFoundError(f"{len(absent)} file(s) named in the label table are missing, e.g. "
                                    f"{', '.join(absent[:3])}")

    if label_columns is not None:
        y = np.array([[_finding_value(row[c], c, i) for c in label_columns] for i, row in enumerate(rows, start=2)],
                     dtype=np.int64)
        y[y == -1] = UNCERTAIN[uncertain]
        labels = [str(c) for c in label_columns]
    elif sep is not None:
        findings = []
        for i, row in enumerate(rows, start=2):
            value = row[label_column]
            if _blank(value):  # not "no finding": that is none_label, written out
                hint = f"; write {none_label!r} for an image with no finding" if none_label else ""
                raise ValueError(f"label table row {i}: column {label_column!r} is blank{hint}")
            names = [s.strip() for s in str(value).split(sep) if s.strip()]
            findings.append([n for n in names if n != none_label])
        labels = sorted({n for names in findings for n in names})
        if not labels:
            raise ValueError(f"column {label_column!r} names no finding (every row is blank or {none_label!r})")
        index = {name: j for j, name in enumerate(labels)}
        y = np.zeros((len(rows), len(labels)), np.int64)
        for i, names in enumerate(findings):
            y[i, [index[n] for n in names]] = 1
    else:
        values = [row[label_column] for row in rows]
        blank = [i for i, v in enumerate(values, start=2) if _blank(v)]
        if blank:
            raise ValueError(f"label table rows {blank[:5]} have no label in column {label_column!r}")
        y = np.array([str(v).strip() for v in values])
        labels = sorted(set(y.tolist()))
    _refuse_conflicting_repeats(paths, y)
    groups = None
    if patient_column is not None:
        groups = np.array([str(row[patient_column]).strip() for row in rows])
    return LabelTable(paths=np.array(paths), y=y, labels=labels, groups=groups)
