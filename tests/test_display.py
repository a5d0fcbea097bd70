from course_utils.display import wrap


def test_wrap_keeps_line_breaks_and_width():
    text = "uno dos tres " * 20 + "\n\nfin"
    out = wrap(text, width=30)
    assert all(len(line) <= 30 for line in out.splitlines())
    assert out.endswith("\n\nfin")
    assert " ".join(out.split()) == " ".join(text.split())


def test_wrap_indent():
    assert wrap("a b c", width=5, indent="  ") == "  a b\n  c"
