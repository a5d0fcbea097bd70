"""The OpenAI-compatible local server (chapter 08): loopback only, always stopped."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

import course_utils as cu
from course_utils.errors import ModelNotFoundError
from course_utils.server import LocalServer, ServerError, free_port, server_command


def test_refuses_to_listen_beyond_loopback_unless_asked(tmp_path):
    with pytest.raises(ServerError, match="allow_remote"):
        LocalServer(cu.bundled_model_path(), host="0.0.0.0")


def test_missing_model_is_a_clear_error(tmp_path):
    with pytest.raises(ModelNotFoundError):
        LocalServer(tmp_path / "no-existe.gguf")


def test_command_line():
    cmd = server_command("m.gguf", "127.0.0.1", 8123, n_ctx=512, n_threads=2,
                         chat_format="chatml")
    assert cmd[:3] == [sys.executable, "-m", "llama_cpp.server"]
    joined = " ".join(cmd)
    for part in ("--model m.gguf", "--host 127.0.0.1", "--port 8123", "--n_ctx 512",
                 "--n_threads 2", "--chat_format chatml"):
        assert part in joined


def test_free_port_is_free():
    import socket

    port = free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))


def test_serves_openai_clients_and_stops():
    from openai import OpenAI

    server = LocalServer(cu.bundled_model_path(), n_ctx=512)
    with server:
        assert server.running and server.port_open()
        models = server.get("/models")
        assert models["data"]
        client = OpenAI(base_url=server.base_url, api_key="local")
        out = client.chat.completions.create(
            model="local", messages=[{"role": "user", "content": "Hola"}], max_tokens=4,
            temperature=0)
        assert out.choices[0].message.content is not None
        assert out.usage.completion_tokens >= 1
    assert not server.running and not server.port_open()
    server.stop()  # twice is fine


def test_stopped_even_when_the_block_fails():
    server = LocalServer(cu.bundled_model_path(), n_ctx=256)
    with pytest.raises(RuntimeError, match="falla a propósito"):
        with server:
            raise RuntimeError("falla a propósito")
    assert not server.running and not server.port_open()


def test_a_server_that_dies_at_startup_gives_its_log(tmp_path):
    bad = tmp_path / "roto.gguf"
    bad.write_bytes(b"GGUF" + b"\0" * 64)  # valid magic, nonsense inside
    server = LocalServer(cu.bundled_model_path(), n_ctx=256, startup_timeout=30)
    server.model_path = bad  # skip the path validation to reach llama.cpp itself
    with pytest.raises(ServerError, match="terminó al arrancar"):
        server.start()
    assert not server.running


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG es de Linux")
def test_server_dies_with_a_killed_parent(tmp_path):
    script = textwrap.dedent(f"""
        import json, sys, time
        from course_utils.server import LocalServer
        s = LocalServer({str(cu.bundled_model_path())!r}, n_ctx=256).start()
        print(json.dumps({{"pid": s.process.pid, "port": s.port}}), flush=True)
        time.sleep(120)
    """)
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    info = json.loads(parent.stdout.readline())
    os.kill(parent.pid, signal.SIGKILL)  # no atexit, no finally: only the kernel can help
    parent.wait()
    for _ in range(100):
        try:
            os.kill(info["pid"], 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        os.kill(info["pid"], signal.SIGKILL)
        pytest.fail("the server outlived its parent")
