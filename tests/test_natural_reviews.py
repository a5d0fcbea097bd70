"""The hand-written review set ``course_utils/data/resenas_naturales.jsonl`` (chapter 06 v2).

Fast, offline checks that the file is usable (valid, balanced, no duplicates, no leak from the
template dataset, every group usable for a split by group) and that the claim «natural and
varied» stays checkable: lengths, domains, registers, regional Spanish, emojis, missing accents,
ratings, questions, irony and a NEUTRAL class without strong evaluative words.
"""

from __future__ import annotations

import json
import re
import statistics
import unicodedata
from collections import Counter, defaultdict
from importlib import resources
from pathlib import Path

import pytest

from course_utils.sft_data import validate_jsonl

LABELS = ("POSITIVO", "NEGATIVO", "NEUTRAL")
INSTRUCTION = "Clasifica el sentimiento de la reseña como POSITIVO, NEGATIVO o NEUTRAL."
KEYS = {"instruction", "input", "output", "template", "domain", "style"}
ROOT = Path(__file__).resolve().parent.parent

EMOJI = re.compile("[\U0001F300-\U0001FAFF\u2600-\u27BF]")
ACCENTED = re.compile("[áéíóúÁÉÍÓÚ]")
# Words that carry an accent (or a full form) in standard spelling, written the way people type.
UNACCENTED = re.compile(r"\b(facil|llego|todavia|despues|ingles|pesimo|buenisim[oa]|rapido|dia|"
                        r"compania|actualizacion|opcion|jabon|volveriamos|regresariamos|atendio|"
                        r"tardo|abri|cafe|secion|verguenza|perdi|dejo|encanto|reclame|cambie|"
                        r"desinstale|compre|estava|exelente|mas|esta|estan|super|comodos|"
                        r"muchisimo|raton|empezo|cual|q|xq|x|pa)\b")
VOSEO = re.compile(r"\b(vos|tenés|querés|podés|pedís|entendés|contás|manejás|dormís|llamás|"
                   r"terminás|comprás|andá|zafá|tené|tenelo|probalos|fijate|comprátelo|"
                   r"agendalo)\b", re.IGNORECASE)
# Regional vocabulary (Spain, Mexico, Río de la Plata, Colombia, Chile, Peru, Caribbean...).
REGIONAL = re.compile(
    r"\b(celular|celu|computadora|laptop|chévere|bacán|bacano|bacanísimo|padrísimos?|padrisimos|"
    r"chido|re|pasada|mola|flipa|flipé|parce|chamo|asere|cachai|altiro|caleta|raja|fome|penca|"
    r"nomás|neta|chafa|gacho|mamera|boleta|berraca|ladilla|vaina|bravazo|malazo|chompa|depa|"
    r"pileta|remera|campera|heladera|lavarropas|cucha|posta|che|majo|majos|curro|pavos|mogollón|"
    r"cutre|cutrísimo|tío|pispás|móvil|ordenador|tenis|alberca|playera|carro|jala|mojao|pa'|"
    r"to'|lucas|plata|chavos|cabros|momentico|audífonos|parlante|paltas|refri|micro|boiler|"
    r"lonche|pinche|equis|quincho|botado|al toque|al tiro)\b", re.IGNORECASE)
RATING = re.compile(r"[★☆]|\b\d+(,\d)?\s*(/|sobre|de)\s*(5|10)\b|\bestrellas?\b|\bun \d\b",
                    re.IGNORECASE)
# Words a careful annotator would not accept in a NEUTRAL review.
STRONG = re.compile(r"excelente|genial|pésim|horrible|desastre|maravill|vergüenza|estafa|"
                    r"\btimo\b|fatal|buenísim|riquísim|perfect|recomendable|decepci|"
                    r"(?<!ni )\blo recomiendo\b|una pasada|de lujo|basura|nunca más|me encanta\b",
                    re.IGNORECASE)


def _resource(name: str):
    return resources.files("course_utils").joinpath(f"data/{name}")


def _read(name: str) -> list[dict]:
    with resources.as_file(_resource(name)) as path:
        with open(path, encoding="utf-8") as fh:
            return [json.loads(line) for line in fh if line.strip()]


def norm(text: str) -> str:
    """Lowercase, accents and punctuation (emojis included) stripped, spaces collapsed."""
    text = unicodedata.normalize("NFKD", text.lower())
    text = "".join(c for c in text if not unicodedata.combining(c))
    text = re.sub(r"[^\w\s]", " ", text)
    return " ".join(text.split())


def words(row: dict) -> int:
    return len(row["input"].split())


def share(rows, predicate) -> float:
    return sum(1 for r in rows if predicate(r)) / len(rows)


@pytest.fixture(scope="module")
def rows() -> list[dict]:
    return _read("resenas_naturales.jsonl")


def test_file_validates_and_every_row_has_the_fields(rows):
    with resources.as_file(_resource("resenas_naturales.jsonl")) as path:
        report = validate_jsonl(path)
    assert report.ok, str(report)
    assert report.n_valid == len(rows)
    for i, row in enumerate(rows, 1):
        assert set(row) == KEYS, f"línea {i}: {sorted(row)}"
        assert row["instruction"] == INSTRUCTION, f"línea {i}"
        assert row["output"] in LABELS, f"línea {i}: {row['output']}"
        assert row["input"] == row["input"].strip() and row["input"], f"línea {i}"
        assert all(isinstance(row[k], str) and row[k] for k in ("template", "domain", "style"))


def test_size_and_exact_class_balance(rows):
    counts = Counter(r["output"] for r in rows)
    assert len(rows) >= 480
    assert set(counts) == set(LABELS)
    assert len(set(counts.values())) == 1, counts


def test_no_duplicate_inputs_even_after_normalising(rows):
    seen: dict[str, str] = {}
    for row in rows:
        key = norm(row["input"])
        assert key not in seen, f"duplicado: {row['input']!r} ~ {seen[key]!r}"
        seen[key] = row["input"]


def test_no_overlap_with_the_template_dataset(rows):
    old = {norm(r["input"]) for r in _read("sentimiento.jsonl")}
    leaked = [r["input"] for r in rows if norm(r["input"]) in old]
    assert not leaked, leaked


def test_groups_allow_a_leak_free_split_by_group(rows):
    groups: dict[str, Counter] = defaultdict(Counter)
    for row in rows:
        groups[row["template"]][row["output"]] += 1
    assert len(groups) >= 30
    for group, counts in groups.items():
        assert set(counts) == set(LABELS), f"{group}: {dict(counts)}"
        assert max(counts.values()) - min(counts.values()) <= 2, f"{group}: {dict(counts)}"
        assert 9 <= sum(counts.values()) <= 15, f"{group}: {dict(counts)}"


def test_many_domains_each_with_every_label(rows):
    domains: dict[str, Counter] = defaultdict(Counter)
    for row in rows:
        domains[row["domain"]][row["output"]] += 1
    assert len(domains) >= 12, sorted(domains)
    for domain, counts in domains.items():
        assert sum(counts.values()) >= 15, f"{domain}: {dict(counts)}"
        assert set(counts) == set(LABELS), f"{domain}: {dict(counts)}"
    # No domain gives the label away: its majority class stays under 60 % of its rows.
    for domain, counts in domains.items():
        assert max(counts.values()) / sum(counts.values()) < 0.6, f"{domain}: {dict(counts)}"


def test_length_spread(rows):
    lengths = [words(r) for r in rows]
    assert min(lengths) >= 2 and max(lengths) <= 60
    assert share(rows, lambda r: words(r) < 8) >= 0.10
    assert share(rows, lambda r: words(r) > 30) >= 0.10
    assert share(rows, lambda r: 8 <= words(r) <= 35) >= 0.60
    # Length is not a shortcut to the label: every class has short and long reviews and
    # similar mean lengths.
    means = {}
    for label in LABELS:
        cls = [r for r in rows if r["output"] == label]
        assert share(cls, lambda r: words(r) < 8) >= 0.05, label
        assert share(cls, lambda r: words(r) > 30) >= 0.05, label
        means[label] = statistics.mean(words(r) for r in cls)
    assert max(means.values()) / min(means.values()) < 1.3, means


def test_registers_and_regional_spanish(rows):
    assert share(rows, lambda r: bool(REGIONAL.search(r["input"]))) >= 0.15
    assert share(rows, lambda r: bool(VOSEO.search(r["input"]))) >= 0.03
    styles = Counter(r["style"] for r in rows)
    assert len(styles) >= 12, styles
    for needed in ("formal", "corta", "larga", "ironia", "mixta", "erratas", "emoji", "voseo"):
        assert styles[needed] >= 5, (needed, styles[needed])


def test_typing_habits_emojis_missing_accents_and_caps(rows):
    assert share(rows, lambda r: bool(EMOJI.search(r["input"]))) >= 0.05
    unaccented = lambda r: bool(UNACCENTED.search(r["input"])) and not ACCENTED.search(r["input"])
    assert share(rows, unaccented) >= 0.05
    caps = lambda r: r["input"] == r["input"].upper() and sum(c.isalpha() for c in r["input"]) > 10
    assert sum(map(caps, rows)) >= 5
    for label in LABELS:  # none of these habits belongs to one class only
        cls = [r for r in rows if r["output"] == label]
        assert any(EMOJI.search(r["input"]) for r in cls), label
        assert any(unaccented(r) for r in cls), label


def test_ratings_questions_and_irony_appear_in_several_classes(rows):
    for pattern, min_labels in ((RATING, 3), (re.compile(r"\?"), 3)):
        labels = {r["output"] for r in rows if pattern.search(r["input"])}
        assert len(labels) >= min_labels, (pattern.pattern, labels)
    irony = Counter(r["output"] for r in rows if r["style"] == "ironia")
    assert irony["NEGATIVO"] >= 5 and irony["POSITIVO"] >= 5, irony


def test_neutral_reviews_have_no_strong_evaluative_words(rows):
    loud = [r["input"] for r in rows if r["output"] == "NEUTRAL" and STRONG.search(r["input"])]
    assert not loud, loud


def test_jsonl_data_ships_in_a_non_editable_install():
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    import tomllib
    data = tomllib.loads(text)["tool"]["setuptools"]["package-data"]["course_utils"]
    assert "data/*.jsonl" in data and "data/*.json" in data
