"""The course's one GGUF reader and the two views built on it."""

import os

import gguf
import numpy as np
import pytest

import course_utils as cu
from course_utils import memory_guard
from course_utils.architecture import read_gguf_index
from course_utils.gguf_reader import GgufReadError, read_gguf


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path = tmp_path_factory.mktemp("gguf") / "tiny.gguf"
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("tiny")
    w.add_block_count(1)
    w.add_token_list(["<s>", "hola", "␣mundo", "ñ"])
    w.add_token_types([3, 1, 1, 1])
    w.add_bool("tiny.flag", True)
    w.add_array("tiny.nested", [[1, 2], [3]])
    w.add_tensor("token_embd.weight", np.arange(4 * 8, dtype=np.float16).reshape(4, 8))
    w.add_tensor("rope_freqs.weight", np.array([1.0, 2.0, 8.0], dtype=np.float32))
    w.add_tensor("blk.0.attn_q.weight", np.zeros((2, 34), dtype=np.uint8), raw_shape=(2, 34),
                 raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def test_reads_what_gguf_reader_reads(tiny):
    raw, ref = read_gguf(tiny), gguf.GGUFReader(str(tiny))
    assert raw.data_offset == ref.data_offset and raw.file_size == tiny.stat().st_size
    for key, field in ref.fields.items():
        if key.startswith("GGUF."):
            continue
        if key != "tiny.nested":  # gguf's contents() flattens arrays of arrays
            assert raw.fields[key] == field.contents(), key
        assert raw.types[key][0] == field.types[0], key
        assert raw.field_bytes[key] == sum(int(p.nbytes) for p in field.parts), key
    assert raw.fields["tiny.nested"] == [[1, 2], [3]]
    assert raw.types["tokenizer.ggml.tokens"] == (9, 8)  # array of strings
    for mine, theirs in zip(raw.tensors, ref.tensors, strict=True):
        assert (mine.name, mine.dims, mine.type_name) == (
            theirs.name, tuple(int(d) for d in theirs.shape), theirs.tensor_type.name)
        assert (mine.n_elements, mine.n_bytes, mine.offset) == (
            int(theirs.n_elements), int(theirs.n_bytes), int(theirs.data_offset))


def test_both_views_share_one_read(tiny):
    raw = read_gguf(tiny)
    index, header = read_gguf_index(tiny), memory_guard.read_gguf_header(tiny)
    assert index.raw is raw and index.fields is raw.fields and header.fields is raw.fields
    assert read_gguf_index(tiny) is index  # cached per file version
    # the index keeps GGUF's order (row length first); the header numpy's
    assert index.tensor("token_embd.weight").shape == (8, 4)
    assert header.tensors["token_embd.weight"].shape == (4, 8)
    for t in index.tensors:
        h = header.tensors[t.name]
        assert (t.n_elements, t.n_bytes, t.offset) == (h.n_elements, h.n_bytes, h.offset)
    assert np.array_equal(index.read_tensor("rope_freqs.weight"),
                          header.tensor_data("rope_freqs.weight"))


def test_a_rewritten_file_is_read_again(tmp_path):
    path = tmp_path / "m.gguf"
    path.write_bytes(cu.bundled_model_path().read_bytes())
    first = read_gguf(path)
    os.utime(path, ns=(first.file_size, path.stat().st_mtime_ns + 10**9))
    assert read_gguf(path) is not first


def test_tensor_spans_are_read_from_the_offsets(tiny):
    spans = read_gguf(tiny).tensor_spans()
    assert spans == {"token_embd.weight": 64, "rope_freqs.weight": 32,  # 12 bytes + padding
                     "blk.0.attn_q.weight": tiny.stat().st_size - read_gguf(tiny).tensors[2].offset}
    assert spans["blk.0.attn_q.weight"] >= 68


def test_a_file_cut_short_is_a_clear_error_in_both_views(tmp_path):
    bad = tmp_path / "cortado.gguf"
    bad.write_bytes(cu.bundled_model_path().read_bytes()[:5000])
    for reader in (read_gguf, read_gguf_index, memory_guard.read_gguf_header):
        with pytest.raises(GgufReadError, match="incompleto"):
            reader(bad)
    assert issubclass(GgufReadError, cu.CourseError) and issubclass(GgufReadError, ValueError)
