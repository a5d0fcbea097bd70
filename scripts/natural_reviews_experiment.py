"""Chapter 06's side experiment: which training data generalizes to natural reviews?

Chapter 06 trains on template reviews (one epoch, LoRA on the upper half of the layers, under a
minute on 2 cores) and then measures how far that generalizes to natural reviews written in other
styles. This script trains the same way on other data and for longer, and prints the accuracy by
the most likely label (as chapter 06's section 6) on three test sets:

* ``natural``: the 60 natural reviews of ``sft_data.natural_test_set()`` (5 whole groups);
* ``templates``: chapter 06's 87 test reviews (held-out templates + the 24 hand-written ones);
* ``manual``: those 24 hand-written reviews alone.

``--data`` chooses the training data: ``templates`` (chapter 06's 240), ``natural`` (the 408
natural reviews of 34 other groups; 3 more groups, 36 reviews, validate) or ``mix`` (both).
No test review, group or template is ever trained on. Examples (2 CPU cores, SmolLM2-135M;
training time, then ~2 more minutes to score the three test sets):

    python scripts/natural_reviews_experiment.py --data templates        # chapter 06: ~45 s
    python scripts/natural_reviews_experiment.py --data natural --epochs 3 --lr 1e-3 \
        --first-layer 0                                                  # ~8 min
    python scripts/natural_reviews_experiment.py --data templates --epochs 3 --lr 1e-3 \
        --first-layer 0                                                  # ~2½ min

Chapter 06's box quotes the output of these and three more runs. The label is scored in torch on
the trained model (:func:`course_utils.finetune.most_likely_labels`: ``log P(label | prompt)``,
the label's tokens summed), the quantity chapter 06 reads with llama.cpp from the exported GGUF.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def datasets(kind: str) -> tuple[list[dict], list[dict]]:
    """``(train, validation)`` rows for ``kind`` (``templates``, ``natural`` or ``mix``)."""
    from course_utils import sft_data

    train_t, val_t, _, _ = sft_data.held_out_split(sft_data.sentiment_dataset(), per_class=2,
                                                   seed=0)
    nat_train, nat_val = sft_data.natural_train_val()
    return {"templates": (train_t, val_t), "natural": (nat_train, nat_val),
            "mix": (nat_train + train_t, nat_val + val_t)}[kind]


def test_sets() -> dict[str, list[dict]]:
    from course_utils import sft_data

    _, _, test, _ = sft_data.held_out_split(sft_data.sentiment_dataset(), per_class=2, seed=0)
    return {"natural": sft_data.natural_test_set(), "templates": test,
            "manual": [r for r in test if r["template"] == "manual"]}


def main(argv: list[str] | None = None) -> dict[str, dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", choices=("templates", "natural", "mix"), default="templates")
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--first-layer", type=int, default=None,
                        help="first layer with LoRA (default: half the layers, as chapter 06)")
    parser.add_argument("--model", default=None, help="a GGUF file (default: the bundled model)")
    parser.add_argument("--limit", type=int, default=None,
                        help="only this many training, validation and test rows (quick checks)")
    args = parser.parse_args(argv)

    import course_utils as cu
    from course_utils import sft_data
    from course_utils.finetune import (LoraConfig, load_torch_from_gguf, most_likely_labels,
                                       train_lora_loop)

    labels, system = sft_data.SENTIMENT_LABELS, sft_data.SENTIMENT_SYSTEM
    train, val = datasets(args.data)
    tests = test_sets()
    if args.limit:
        train, val = train[:args.limit], val[:args.limit]
        tests = {name: rows[:args.limit] for name, rows in tests.items()}
    model, tokenizer = load_torch_from_gguf(args.model or cu.models.bundled_model_path())
    first = model.config.num_hidden_layers // 2 if args.first_layer is None else args.first_layer
    config = LoraConfig(r=16, alpha=32, learning_rate=args.lr, epochs=args.epochs, batch_size=8,
                        system=system, first_layer=first)
    print(f"datos {args.data}: entrenamiento {len(train)}, validación {len(val)} | {args.epochs} "
          f"épocas, lr {args.lr}, LoRA desde la capa {first}", flush=True)
    peft_model, result = train_lora_loop(model, tokenizer, train, val, config)
    print(f"entrenamiento: {result.seconds:.0f} s, {result.tokens_per_second:.0f} tokens/s, "
          f"pérdida de validación {[round(v, 3) for _, v in result.eval_losses]}", flush=True)
    reports = {}
    start = time.perf_counter()
    for name, rows in tests.items():
        preds = most_likely_labels(peft_model, tokenizer, rows, labels, system, progress=True,
                                   desc=name)
        report = cu.metrics.classification_report([r["output"] for r in rows], preds, labels)
        lo, hi = report["accuracy_ci"]
        print(f"prueba {name:<9} n={len(rows):<3} exactitud {report['accuracy']:.0%} "
              f"(IC 95 % {lo:.0%}–{hi:.0%}) | F1 " +
              " ".join(f"{label} {report[label]['f1']:.2f}" for label in labels), flush=True)
        reports[name] = report
    print(f"evaluación: {time.perf_counter() - start:.0f} s")
    return reports


if __name__ == "__main__":
    main()
