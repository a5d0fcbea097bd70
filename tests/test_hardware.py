import os

import pytest

from course_utils import hardware
from course_utils.hardware import GIB, HardwareInfo, detect_hardware

from .conftest import APPLE_M2, COLAB_T4, CPU_8GB


def test_detect_hardware_is_a_record_of_this_machine(no_network, clean_env):
    hw = detect_hardware()
    assert isinstance(hw, HardwareInfo)
    assert 1 <= hw.cpu_physical <= hw.cpu_logical <= (os.cpu_count() or 1)
    assert 0 < hw.ram_available <= hw.ram_total
    assert hw.online is None  # the network is not touched unless asked
    assert hw.accelerator in {"cpu", "cuda", "metal"}


def test_offline_variable_means_offline_without_probing(no_network, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert detect_hardware().online is False
    assert detect_hardware(check_online_now=True).online is False  # no probe, no AssertionError


def test_check_online_false_when_connection_fails(monkeypatch, clean_env):
    def refuse(*args, **kwargs):
        raise OSError("no route")

    monkeypatch.setattr(hardware.socket, "create_connection", refuse)
    assert hardware.check_online(timeout=0.1) is False


def test_physical_cores_is_capped_by_affinity(monkeypatch):
    monkeypatch.setattr(hardware.psutil, "cpu_count", lambda logical=True: 8 if not logical else 16)
    monkeypatch.setattr(hardware.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert hardware.physical_cores() == 2


def test_physical_cores_when_psutil_cannot_tell(monkeypatch):
    monkeypatch.setattr(hardware.psutil, "cpu_count", lambda logical=True: None)
    assert hardware.physical_cores() >= 1


@pytest.mark.parametrize(
    "hw, accelerator, memory",
    [(CPU_8GB, "cpu", 6 * GIB), (COLAB_T4, "cuda", int(14.7 * GIB)), (APPLE_M2, "metal", 10 * GIB)],
)
def test_accelerator_and_model_memory(hw, accelerator, memory):
    assert hw.accelerator == accelerator
    assert hw.model_memory == memory


def test_summary_is_spanish_and_complete():
    text = COLAB_T4.summary()
    for expected in ("núcleos físicos", "GiB disponibles", "Tesla T4", "Google Colab:   sí", "cuda"):
        assert expected in text
    assert "no comprobada" in CPU_8GB.with_changes(online=None).summary()


def test_gpu_detection_without_torch_or_nvidia_smi(monkeypatch):
    monkeypatch.setattr(hardware.importlib.util, "find_spec", lambda name: None)
    monkeypatch.setattr(hardware.shutil, "which", lambda name: None)
    assert hardware.detect_gpu() is None


def test_gpu_detection_parses_nvidia_smi(monkeypatch):
    class Done:
        stdout = "Tesla T4, 15360, 15000\n"

    monkeypatch.setattr(hardware.importlib.util, "find_spec", lambda name: None)
    monkeypatch.setattr(hardware.shutil, "which", lambda name: "/usr/bin/nvidia-smi")
    monkeypatch.setattr(hardware.subprocess, "run", lambda *a, **k: Done())
    gpu = hardware.detect_gpu()
    assert gpu.name == "Tesla T4" and gpu.vram_total == 15 * GIB
