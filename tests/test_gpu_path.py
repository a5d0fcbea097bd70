"""The Colab/CUDA path without a GPU: mixed precision chosen from simulated hardware, Unsloth's
training call checked with stand-in modules, the GPU install set, and the pip-resolver check
(its logic; the real resolution needs PyPI and runs in .ci/run)."""

from __future__ import annotations

import ast
import importlib.util
import json
import re
import sys
import types
from dataclasses import replace
from pathlib import Path

import pytest

from course_utils import colab, hardware
from course_utils import finetune as F
from course_utils.hardware import GIB, GpuInfo

from .conftest import APPLE_M2, COLAB_T4, CPU_8GB

ROOT = Path(__file__).resolve().parent.parent
CH06 = "06_fine_tuning_lora.ipynb"
T4 = replace(COLAB_T4.gpu, compute_capability=(7, 5))
A100 = GpuInfo(name="NVIDIA A100-SXM4-40GB", vram_total=40 * GIB, compute_capability=(8, 0))
FP16 = {"bf16": False, "fp16": True}
BF16 = {"bf16": True, "fp16": False}
FP32 = {"bf16": False, "fp16": False}


# --------------------------------------------------------------------------- mixed precision


@pytest.mark.parametrize("hw, expected", [
    ((7, 5), FP16),                              # T4: emulated bf16 only -> float16
    ((8, 0), BF16),                              # A100
    ((8, 9), BF16),                              # L4
    ((9, 0), BF16),                              # H100
    ((6, 0), FP16),                              # P100
    (T4, FP16),
    (A100, BF16),
    (COLAB_T4.with_changes(gpu=T4), FP16),
    (COLAB_T4.with_changes(gpu=A100), BF16),
    (COLAB_T4, FP16),                            # GPU of unknown capability: float16, never bf16
    (CPU_8GB, FP32),                             # no CUDA: neither
    (APPLE_M2, FP32),
    (None, FP32),
])
def test_mixed_precision_by_hardware(hw, expected):
    assert F.mixed_precision(hw) == expected


def test_unsloth_can_veto_bfloat16_but_not_impose_it():
    assert F.mixed_precision(A100, bf16_supported=False) == FP16
    assert F.mixed_precision(A100, bf16_supported=True) == BF16
    assert F.mixed_precision(T4, bf16_supported=True) == FP16  # as torch says on a T4: no


ROW = {"instruction": "Clasifica la reseña.", "input": "Me encantó.", "output": "POSITIVO"}


def _fake_training_stack(monkeypatch, hw, unsloth_bf16: bool) -> dict:
    """Stand-ins for unsloth and trl (not installed here) that record what they are given; the
    tokenizer is the real Llama 3 one (the stand-in's)."""
    from course_utils import standin

    seen: dict = {}
    tokenizer = F.load_tokenizer_from_gguf(standin.standin_path("tied"))

    class FastLanguageModel:
        @staticmethod
        def from_pretrained(**kwargs):
            seen["from_pretrained"] = kwargs
            return "model", tokenizer

        @staticmethod
        def get_peft_model(model, **kwargs):
            return model

    class SFTConfig:
        def __init__(self, **kwargs):
            seen["SFTConfig"] = kwargs

    class SFTTrainer:
        def __init__(self, **kwargs):
            self.state = types.SimpleNamespace(log_history=[{"step": 2, "loss": 1.5}])

        def train(self):
            return None

    unsloth = types.ModuleType("unsloth")
    unsloth.FastLanguageModel = FastLanguageModel
    unsloth.is_bfloat16_supported = lambda: unsloth_bf16
    trl = types.ModuleType("trl")
    trl.SFTConfig, trl.SFTTrainer = SFTConfig, SFTTrainer
    monkeypatch.setitem(sys.modules, "unsloth", unsloth)
    monkeypatch.setitem(sys.modules, "trl", trl)
    monkeypatch.setattr(F, "detect_hardware", lambda *a, **k: hw)
    monkeypatch.setattr(F, "_conversations", lambda rows, system: rows)

    import torch

    def emulated_bf16(*args, **kwargs):
        raise AssertionError("torch.cuda.is_bf16_supported() counts emulated bf16: do not ask it")

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", emulated_bf16)
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda *a, **k: 0)
    return seen


@pytest.mark.parametrize("gpu, unsloth_bf16, dtype_name, expected", [
    (T4, True, "float16", FP16),      # the Colab T4 crash: model and trainer now agree on fp16
    (A100, True, "bfloat16", BF16),
    (A100, False, "float16", FP16),   # Unsloth says no bf16: it wins
])
def test_unsloth_model_dtype_and_trainer_flags_agree(monkeypatch, tmp_path, gpu, unsloth_bf16,
                                                     dtype_name, expected):
    import torch

    seen = _fake_training_stack(monkeypatch, COLAB_T4.with_changes(gpu=gpu), unsloth_bf16)
    _, _, result = F.train_lora_unsloth([ROW], F.LoraConfig(), tmp_path)
    assert seen["from_pretrained"]["dtype"] is getattr(torch, dtype_name)
    config = seen["SFTConfig"]
    assert {"bf16": config["bf16"], "fp16": config["fp16"]} == expected
    assert result.losses == [(2, 1.5)]


def test_unsloth_refuses_examples_longer_than_max_length(monkeypatch, tmp_path):
    """TRL would cut them and silently drop those left without an answer token."""
    seen = _fake_training_stack(monkeypatch, COLAB_T4.with_changes(gpu=A100), True)
    long_row = {**ROW, "input": "Muy bueno. " * 60}
    with pytest.raises(F.FineTuneError, match="max_length=96"):
        F.train_lora_unsloth([ROW, long_row], F.LoraConfig(), tmp_path)
    assert "SFTConfig" not in seen  # stopped before training
    config = F.LoraConfig(max_length=400)
    F.train_lora_unsloth([ROW, long_row], config, tmp_path)
    assert seen["from_pretrained"]["max_seq_length"] == seen["SFTConfig"]["max_length"] == 400


# --------------------------------------------------------------------------- hardware


def test_gpu_from_torch_reads_the_compute_capability(monkeypatch):
    cuda = types.SimpleNamespace(
        is_available=lambda: True,
        get_device_properties=lambda i: types.SimpleNamespace(name="Tesla T4", total_memory=15 * GIB),
        mem_get_info=lambda i: (14 * GIB, 15 * GIB),
        get_device_capability=lambda i: (7, 5),
    )
    monkeypatch.setitem(sys.modules, "torch", types.SimpleNamespace(cuda=cuda))
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object())
    gpu = hardware._gpu_from_torch()
    assert gpu == GpuInfo(name="Tesla T4", vram_total=15 * GIB, vram_free=14 * GIB,
                          compute_capability=(7, 5))
    assert F.mixed_precision(gpu) == FP16


def test_compute_capability_is_optional():
    assert GpuInfo(name="x", vram_total=1).compute_capability is None


# --------------------------------------------------------------------------- the install set


def test_gpu_set_is_the_chapter_set_plus_requirements_gpu_and_never_torch():
    cpu = colab.colab_requirements(CH06)
    gpu = colab.colab_requirements(CH06, gpu=True)
    extra = colab.pins(filename="requirements-gpu.txt")
    assert gpu[:len(cpu)] == cpu and gpu[len(cpu):] == [extra[n] for n in ("unsloth", "unsloth_zoo",
                                                                           "bitsandbytes")]
    for name in ("trl", "datasets", "transformers", "peft", "accelerate"):
        assert colab.pins()[name] in gpu
    assert not [r for r in gpu if re.match(r"torch\b", r)]
    assert colab.colab_requirements("01_que_es_llama3.ipynb", gpu=True) == \
        colab.colab_requirements("01_que_es_llama3.ipynb")


def test_chapter06_gpu_cell_trains_on_natural_reviews_and_scores_them(monkeypatch, tmp_path,
                                                                     capsys):
    """Chapter 06's Unsloth cell run on the CPU: Unsloth's training replaced by the Llama 3
    stand-in with LoRA, everything else (data, scoring, printing) as the cell does it."""
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model

    import course_utils as cu
    from course_utils import sft_data, standin

    cells = json.loads((ROOT / "notebooks" / CH06).read_text(encoding="utf-8"))["cells"]
    source = "".join(next(c for c in cells if c.get("id") == "6c6dac8a")["source"])
    model, tokenizer = F.load_torch_from_gguf(standin.standin_path("tied"))
    peft_model = get_peft_model(model, PeftLoraConfig(r=4, target_modules=["q_proj"]))
    seen = {}

    def fake_unsloth(rows, config, output_dir):
        seen.update(rows=rows, config=config)
        # what the real one refuses (and Unsloth would cut when scoring): nothing longer than
        # max_length, neither to train nor to score (Llama 3.2's template adds ~25 tokens more)
        for part in (rows, natural, test):
            longest = max(len(e.ids) for e in F.encode_examples(tokenizer, part, config.system))
            assert longest + 30 <= config.max_length
        return peft_model, tokenizer, F.TrainResult(losses=[(1, 0.5)], seconds=1.0,
                                                    peak_rss_gb=1.0)

    monkeypatch.setattr(F, "train_lora_unsloth", fake_unsloth)
    train, _, test, _ = sft_data.held_out_split(sft_data.sentiment_dataset(), per_class=2, seed=0)
    natural = sft_data.natural_test_set()
    # the chapter's own show() (defined in the baseline cell, among evaluations we skip here)
    baseline = "".join(next(c for c in cells if c.get("id") == "64dab22b")["source"])
    show_def = next(node for node in ast.parse(baseline).body
                    if isinstance(node, ast.FunctionDef) and node.name == "show")
    shown: dict = {}
    exec(compile(ast.Module([show_def], []), CH06, "exec"), shown)
    namespace = dict(backend="unsloth", cu=cu, sft_data=sft_data, LoraConfig=F.LoraConfig,
                     work=tmp_path, train=train, test=test[:3], natural=natural[:3],
                     LABELS=sft_data.SENTIMENT_LABELS, SYSTEM=sft_data.SENTIMENT_SYSTEM,
                     show=shown["show"],
                     nat_tuned={"accuracy": 0.58, "NEUTRAL": {"f1": 0.46}})
    exec(compile(source, CH06, "exec"), namespace)
    out = capsys.readouterr().out
    trained_on = {r["input"] for r in seen["rows"]}
    natural_train, natural_val = sft_data.natural_train_val()
    assert {r["input"] for r in natural_train + train} == trained_on
    assert not trained_on & {r["input"] for r in natural + test + natural_val}
    assert seen["config"].epochs == 2 and seen["config"].system == sft_data.SENTIMENT_SYSTEM
    assert "Unsloth, naturales" in out and "Unsloth, prueba" in out and "F1 de NEUTRAL" in out
    assert set(namespace["gpu_reports"]) == {"naturales", "prueba"}


def test_install_cell_imports_unsloth_right_after_installing_it_on_cuda():
    source = colab.install_cell_source(notebook=CH06)
    lines = [line.strip() for line in source.splitlines()]
    install = next(i for i, line in enumerate(lines) if "unsloth==" in line)
    assert lines[install].startswith("%pip install")
    assert "import unsloth" in lines[install + 1:]
    assert not [line for line in lines if re.match(r"(import|from) (transformers|trl|peft)\b", line)]
    assert source.index("torch.cuda.is_available()") < source.index("import unsloth")


def test_every_unsloth_install_a_notebook_shows_is_pinned():
    gpu = colab.pins(filename="requirements-gpu.txt")
    unpinned = []
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        for cell in json.loads(path.read_text(encoding="utf-8"))["cells"]:
            for line in "".join(cell["source"]).splitlines():
                if "pip install" in line and "unsloth" in line.lower():
                    wanted = [gpu["unsloth"], gpu["unsloth_zoo"]]
                    if not all(w in line for w in wanted) and "requirements-gpu.txt" not in line:
                        unpinned.append(f"{path.name}: {line.strip()}")
    assert not unpinned, unpinned


# --------------------------------------------------------------------------- the resolver check


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("check_gpu_pins", ROOT / "scripts" / "check_gpu_pins.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_script_resolves_the_install_cell_set_with_colabs_torch(script):
    sets = script.gpu_sets()
    assert list(sets) == sorted(colab.GPU_PACKAGES)
    reqs = sets[CH06]
    assert reqs[:-1] == colab.colab_requirements(CH06, gpu=True)
    assert reqs[-1] == f"course-utils @ {ROOT.as_uri()}"
    assert script.torch_constraint() == colab.pins()["torch"]
    assert script.torch_constraint(version="2.12.0") == "torch==2.12.0"
    cmd = script.pip_command(reqs, Path("c.txt"), Path("r.json"))
    assert cmd[1:4] == ["-m", "pip", "install"]
    for flag in ("--dry-run", "--ignore-installed", "--report", "--constraint"):
        assert flag in cmd
    assert not [a for a in cmd if re.match(r"torch\b", a)]  # torch only as a constraint


def test_script_overrides_pins(script):
    reqs = script.gpu_sets(overrides={"trl": "trl==1.16.0", "Unsloth_Zoo": "unsloth_zoo==1.0"})[CH06]
    assert "trl==1.16.0" in reqs and colab.pins()["trl"] not in reqs
    assert "unsloth_zoo==1.0" in reqs and reqs.count("unsloth_zoo==1.0") == 1


def _runner(returncode: int, stdout: str = "", install: list | None = None):
    def run(cmd, **kwargs):
        report = Path(cmd[cmd.index("--report") + 1])
        if install is not None:
            report.write_text(json.dumps({"install": install}), encoding="utf-8")
        return types.SimpleNamespace(returncode=returncode, stdout=stdout, stderr="")
    return run


def test_a_conflict_fails_with_pips_explanation(script):
    stdout = ("Collecting trl==1.16.0\n"
              "ERROR: Cannot install trl==1.16.0 and unsloth==2026.10.7 because these package "
              "versions have conflicting dependencies.\n\n"
              "The conflict is caused by:\n    The user requested trl==1.16.0\n"
              "    unsloth 2026.10.7 depends on trl!=0.19.0, <=1.15.0 and >=0.18.2\n\n"
              "To fix this you could try to:\n1. loosen the range\n")
    ok, message = script.check(CH06, ["trl==1.16.0"], "torch==2.13.0", runner=_runner(1, stdout))
    assert not ok
    assert "depends on trl!=0.19.0, <=1.15.0" in message and "Cannot install" in message
    assert "Collecting" not in message and "loosen" not in message


def test_a_resolution_that_moves_a_pin_fails(script):
    install = [{"metadata": {"name": "trl", "version": "1.15.0"}},
               {"metadata": {"name": "torch", "version": "2.13.0+cu126"}}]
    ok, message = script.check(CH06, ["trl==1.16.0"], "torch==2.13.0", runner=_runner(0, install=install))
    assert not ok and "trl==1.16.0: pip eligió 1.15.0" in message


def test_a_clean_resolution_passes(script):
    install = [{"metadata": {"name": "trl", "version": "1.15.0"}},
               {"metadata": {"name": "Unsloth_Zoo", "version": "2026.10.7"}},
               {"metadata": {"name": "llama_cpp_python", "version": "0.3.36"}}]
    reqs = ["trl==1.15.0", "unsloth_zoo==2026.10.7", "llama-cpp-python[server]==0.3.36",
            "course-utils @ file:///x"]
    ok, message = script.check(CH06, reqs, "torch==2.13.0", runner=_runner(0, install=install))
    assert ok, message
    assert "trl 1.15.0" in message and "unsloth-zoo 2026.10.7" in message
