"""``classes.jsonl``: the per-class evidence of each epoch, one JSON object per line, beside ``metrics.jsonl``.

A row is ``{"epoch": e, **gwa.ClassEvidence.to_dict()}``: per given label the count, the alignment's moments,
the negative share, and the (given label -> predicted class) counts of the negatively aligned samples (C x C).
Written whole and atomically each epoch (a few KB for tens of classes), like ``metrics.jsonl``; read back with
validation: a row that does not parse into a :class:`gwa.ClassEvidence`, names an epoch ``metrics.jsonl`` does
not hold, or repeats an epoch is left out and named in ``Run.problems``.
"""

from __future__ import annotations

import json
from pathlib import Path

from gwa.rundir._atomic import jsonable, write_atomic
from gwa.rundir._safety import read_regular

CLASSES_FILE = "classes.jsonl"


def write_class_rows(path: Path, rows: list[dict]) -> None:
    text = "".join(json.dumps(jsonable(r)) + "\n" for r in rows)
    write_atomic(Path(path) / CLASSES_FILE, lambda fh: fh.write(text.encode()))


def check_class_row(row) -> dict:
    """``row`` as written by :func:`class_row`, validated (epoch, and the evidence through the core's parser).

    Raises:
        ValueError: naming what is wrong ("Expected X; got Y").
    """
    from gwa import ClassEvidence

    if not isinstance(row, dict):
        raise ValueError(f"Expected a JSON object; got {type(row).__name__}.")
    epoch = row.get("epoch")
    if not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < 1:
        raise ValueError(f"Expected an integer 'epoch' >= 1; got {epoch!r}.")
    ClassEvidence.from_dict({k: v for k, v in row.items() if k != "epoch"})
    return row


def class_row(epoch: int, evidence) -> dict:
    """The line of ``classes.jsonl`` for one epoch's :class:`gwa.ClassEvidence`."""
    return {"epoch": int(epoch), **evidence.to_dict()}


def read_class_rows(path, epochs: list[int]) -> tuple[list[dict], list[str]]:
    """The valid rows of ``RUN/classes.jsonl`` (of epochs in ``epochs``, increasing) and the problems found."""
    file = Path(path) / CLASSES_FILE
    rows: list[dict] = []
    problems: list[str] = []
    if not file.exists():
        return rows, problems
    known = set(epochs)
    text = read_regular(file).decode("utf-8", errors="replace")  # no links, no special files, capped
    for number, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            row = check_class_row(json.loads(line))
        except ValueError as exc:  # json.JSONDecodeError is a ValueError
            problems.append(f"{CLASSES_FILE} line {number}: {exc}")
            continue
        if row["epoch"] not in known:
            problems.append(
                f"{CLASSES_FILE} line {number}: epoch {row['epoch']}, which metrics.jsonl does not hold."
            )
        elif rows and row["epoch"] <= rows[-1]["epoch"]:
            problems.append(
                f"{CLASSES_FILE} line {number}: expected an epoch after {rows[-1]['epoch']}; got {row['epoch']}."
            )
        else:
            rows.append(row)
    return rows, problems
