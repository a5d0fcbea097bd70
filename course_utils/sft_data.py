"""Data for supervised fine-tuning: create, validate and split JSONL files.

Two formats, as in the course notes:

* **instruction** (one JSON object per line): ``{"instruction", "input", "output"}``;
* **conversational**: ``{"messages": [{"role": ..., "content": ...}, ...]}``.

``validate_jsonl`` reports *every* problem with its line number and never modifies the file.
``split_dataset`` is reproducible (fixed seed) and keeps the class balance.
"""

from __future__ import annotations

import json
import os
import random
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from .errors import CourseError

INSTRUCTION_KEYS = ("instruction", "input", "output")
ROLES = ("system", "user", "assistant")


class DataFormatError(CourseError, ValueError):
    """A dataset that cannot be used as it is."""


@dataclass(frozen=True)
class Problem:
    line: int
    kind: str  #: "json", "object", "missing", "empty", "duplicate", "messages"
    message: str

    def __str__(self) -> str:
        return f"línea {self.line}: {self.message}"


@dataclass
class ValidationReport:
    path: Path
    n_lines: int
    n_valid: int
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def counts(self) -> dict[str, int]:
        return dict(Counter(p.kind for p in self.problems))

    def __str__(self) -> str:
        head = (f"{self.path.name}: {self.n_lines} líneas, {self.n_valid} válidas, "
                f"{len(self.problems)} problemas")
        return "\n".join([head] + [f"  - {p}" for p in self.problems])


def _check_messages(data: dict) -> str | None:
    messages = data.get("messages")
    if not isinstance(messages, list) or not messages:
        return "'messages' debe ser una lista no vacía"
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
            return f"el mensaje {i} necesita 'role' ({', '.join(ROLES)}) y 'content' (texto)"
    if messages[-1]["role"] != "assistant" or not messages[-1]["content"].strip():
        return "el último mensaje debe ser del asistente y no estar vacío"
    return None


def validate_jsonl(path: str | os.PathLike, fmt: str = "instruction") -> ValidationReport:
    """Check a JSONL file line by line; the file is only read.

    ``fmt`` is ``"instruction"`` or ``"messages"``. Reports invalid JSON, lines that are not
    objects, missing keys, empty outputs and duplicates (same instruction and input, or same
    conversation), each with its line number.
    """
    if fmt not in ("instruction", "messages"):
        raise ValueError("fmt debe ser 'instruction' o 'messages'.")
    path = Path(path)
    if not path.is_file():
        raise DataFormatError(f"No encuentro el archivo de datos '{path}'.")
    problems: list[Problem] = []
    first_seen: dict[str, int] = {}
    n_lines = n_valid = 0
    with path.open(encoding="utf-8") as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            n_lines += 1
            try:
                data = json.loads(line)
            except json.JSONDecodeError as exc:
                problems.append(Problem(number, "json", f"JSON inválido ({exc.msg})"))
                continue
            if not isinstance(data, dict):
                problems.append(Problem(number, "object", "cada línea debe ser un objeto JSON {...}"))
                continue
            if fmt == "instruction":
                missing = [k for k in INSTRUCTION_KEYS if k not in data]
                if missing:
                    problems.append(Problem(number, "missing", f"faltan las claves {', '.join(missing)}"))
                    continue
                if not str(data["output"]).strip():
                    problems.append(Problem(number, "empty", "'output' está vacío"))
                    continue
                key = json.dumps([data["instruction"].strip(), data["input"].strip()], ensure_ascii=False)
            else:
                error = _check_messages(data)
                if error:
                    problems.append(Problem(number, "messages", error))
                    continue
                key = json.dumps([(m["role"], m["content"].strip()) for m in data["messages"][:-1]],
                                 ensure_ascii=False)
            if key in first_seen:
                problems.append(Problem(number, "duplicate", f"duplicado de la línea {first_seen[key]}"))
                continue
            first_seen[key] = number
            n_valid += 1
    return ValidationReport(path, n_lines, n_valid, problems)


def read_jsonl(path: str | os.PathLike, fmt: str = "instruction") -> list[dict]:
    """Load a JSONL file, refusing it (with every problem listed) if it does not validate."""
    report = validate_jsonl(path, fmt)
    if not report.ok:
        raise DataFormatError(f"El archivo no es válido; corrige estas líneas:\n{report}")
    with Path(path).open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def write_jsonl(rows: list[dict], path: str | os.PathLike) -> Path:
    """Write rows as UTF-8 JSONL (one object per line, accents kept as they are)."""
    path = Path(path)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def to_messages(row: dict, system: str | None = None) -> dict:
    """Instruction format -> conversational format."""
    user = row["instruction"].strip()
    if row.get("input", "").strip():
        user += "\n\n" + row["input"].strip()
    messages = [{"role": "system", "content": system}] if system else []
    messages += [{"role": "user", "content": user}, {"role": "assistant", "content": row["output"]}]
    return {"messages": messages}


def split_dataset(rows: list[dict], test_fraction: float = 0.2, seed: int = 0,
                  stratify: str | None = "output") -> tuple[list[dict], list[dict]]:
    """Reproducible train/test split that keeps each class's share (``stratify`` key)."""
    if not 0 < test_fraction < 1:
        raise ValueError("test_fraction debe estar entre 0 y 1.")
    groups: dict = defaultdict(list)
    for row in rows:
        groups[row.get(stratify) if stratify else None].append(row)
    rng = random.Random(seed)
    train, test = [], []
    for key in sorted(groups, key=str):
        items = groups[key][:]
        rng.shuffle(items)
        n_test = round(len(items) * test_fraction)
        test += items[:n_test]
        train += items[n_test:]
    rng.shuffle(train)
    rng.shuffle(test)
    return train, test


#: The labels and system prompt of the course's sentiment task (chapters 06 and 08).
SENTIMENT_LABELS = ["POSITIVO", "NEGATIVO", "NEUTRAL"]
SENTIMENT_SYSTEM = "Eres un clasificador de reseñas."


def _packaged(name: str) -> list[dict]:
    """A JSONL file shipped in ``course_utils/data`` (works from a wheel too)."""
    ref = resources.files("course_utils").joinpath(f"data/{name}")
    with resources.as_file(ref) as path:
        return read_jsonl(path)


def sentiment_dataset() -> list[dict]:
    """The course's Spanish sentiment dataset (POSITIVO / NEGATIVO / NEUTRAL)."""
    return _packaged("sentimiento.jsonl")


def natural_reviews() -> list[dict]:
    """504 hand-written Spanish reviews (``data/resenas_naturales.jsonl``), balanced by label.

    Unlike :func:`sentiment_dataset`'s templates they vary in length, register and regional
    Spanish, with emojis, typos, ratings, irony and mixed opinions, across many products and
    services. ``template`` names a group of ~12 reviews written together (``G01``...``G42``):
    split by group, never by review, so that no group sits on both sides.
    """
    return _packaged("resenas_naturales.jsonl")


def natural_test_set(n_groups: int = 5, seed: int = 0) -> list[dict]:
    """The reviews of ``n_groups`` whole groups of :func:`natural_reviews`, chosen with ``seed``.

    A test in styles that the template data never shows (chapter 06: how far a model trained on
    templates generalizes). With the defaults: 60 reviews, 20 of each label.
    """
    rows = natural_reviews()
    groups = sorted({r["template"] for r in rows})
    if not 1 <= n_groups <= len(groups):
        raise DataFormatError(f"n_groups={n_groups}: hay {len(groups)} grupos de reseñas naturales.")
    random.Random(seed).shuffle(groups)
    chosen = set(groups[:n_groups])
    return [r for r in rows if r["template"] in chosen]


def natural_train_val(n_val_groups: int = 3, seed: int = 1, test_groups: int = 5,
                      test_seed: int = 0) -> tuple[list[dict], list[dict]]:
    """``(train, validation)``: the natural reviews outside
    ``natural_test_set(test_groups, test_seed)``, by group.

    ``n_val_groups`` whole groups (chosen with ``seed``) validate; the rest trains. With the
    defaults: 408 reviews to train and 36 to validate, none of them from a test group.
    """
    test_groups = {r["template"] for r in natural_test_set(test_groups, test_seed)}
    rest = [r for r in natural_reviews() if r["template"] not in test_groups]
    groups = sorted({r["template"] for r in rest})
    if not 1 <= n_val_groups < len(groups):
        raise DataFormatError(f"n_val_groups={n_val_groups}: quedan {len(groups)} grupos fuera "
                              "de la prueba.")
    random.Random(seed).shuffle(groups)
    val_groups = set(groups[:n_val_groups])
    return ([r for r in rest if r["template"] not in val_groups],
            [r for r in rest if r["template"] in val_groups])


def class_balance(rows: list[dict], key: str = "output") -> dict[str, int]:
    return dict(sorted(Counter(r[key] for r in rows).items()))


def held_out_split(rows: list[dict], per_class: int = 2, val_fraction: float = 0.1,
                   seed: int = 0) -> tuple[list[dict], list[dict], list[dict], set[str]]:
    """``(train, val, test, held-out templates)`` for the sentiment dataset.

    The test set is every handwritten review (template ``"manual"``) plus ``per_class`` whole
    templates of each class that never appear in training, so the test measures understanding,
    not memory of the templates. The rest is split by :func:`split_dataset`.
    """
    templates = sorted({r["template"] for r in rows if r["template"] != "manual"})
    rng = random.Random(seed)
    held_out = {t for prefix in ("POS", "NEG", "NEU")
                for t in rng.sample([t for t in templates if t.startswith(prefix)], per_class)}
    test = [r for r in rows if r["template"] == "manual" or r["template"] in held_out]
    rest = [r for r in rows if r["template"] != "manual" and r["template"] not in held_out]
    train, val = split_dataset(rest, test_fraction=val_fraction, seed=seed)
    return train, val, test, held_out
