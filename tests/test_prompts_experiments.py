"""The chapter 03 experiment helpers of course_utils.prompts, on the bundled model (fast)."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

import course_utils as cu  # noqa: E402
from course_utils import prompts as P  # noqa: E402


@pytest.fixture(scope="module")
def bundled():
    llm = cu.load_llm(cu.bundled_model_path(), n_ctx=512)
    yield llm
    llm.close()


def test_first_reply_token_is_the_greedy_first_token(bundled):
    question = "What is 2 + 2?"
    for cut in (False, True):
        text = P.model_template_prompt(bundled, [{"role": "user", "content": question}])
        if cut:
            text = text.rstrip("\n")
        out = bundled.create_completion(P.prompt_ids(bundled, text), max_tokens=1, temperature=0)
        assert P.first_reply_token(bundled, question, cut=cut) == out["choices"][0]["text"]
    # the cut prompt really lacks the template's final newline
    full = P.model_template_prompt(bundled, [{"role": "user", "content": question}])
    assert full.endswith("\n") and not full.rstrip("\n").endswith("\n")


def test_score_answers_uses_the_chat_template_and_whole_words(bundled):
    questions = [("What is 2 + 2?", ["four", "4"]), ("What is 2 + 2?", ["fourteen", "14"])]
    scored = P.score_answers(bundled, questions, suffix=" Answer briefly.", max_tokens=8,
                             temperature=0)
    reply = P.ask(bundled, "What is 2 + 2? Answer briefly.", max_tokens=8, temperature=0).text
    assert [text for text, _ in scored] == [reply, reply]
    assert [right for _, right in scored] == [P.mentions(reply, a) for _, a in questions]


def test_few_shot_labels_parse_each_reply(bundled):
    examples = [("Me encantó", "Positivo"), ("Horrible", "Negativo")]
    texts = ["Muy bueno", "Muy malo"]
    labels = ["POSITIVO", "NEGATIVO"]
    got = P.few_shot_labels(bundled, "Clasifica el sentimiento:", examples, texts, labels)
    for text, label in zip(texts, got):
        out = bundled(P.few_shot_prompt("Clasifica el sentimiento:", examples, text),
                      max_tokens=4, temperature=0, stop=["\n"])
        assert label == P.parse_label(out["choices"][0]["text"], labels)


def test_recall_asks_with_and_without_history(bundled):
    with_history, alone = P.recall(bundled, "My name is Ana.", "What is my name?",
                                   system="You are a helpful assistant.", max_tokens=8)
    chat = P.Conversation(bundled, system="You are a helpful assistant.")
    chat.ask("My name is Ana.", max_tokens=30)
    assert with_history == chat.ask("What is my name?", max_tokens=8)
    out = bundled.create_chat_completion(
        messages=[{"role": "user", "content": "What is my name?"}], max_tokens=8, temperature=0)
    assert alone == out["choices"][0]["message"]["content"]


def test_plot_context_growth_stacks_prompt_and_reply():
    turns = [P.Turn("a", "b", 10, 5, "stop"), P.Turn("c", "d", 30, 7, "length")]
    ax = P.plot_context_growth(turns, n_ctx=64)
    heights = [p.get_height() for p in ax.patches]
    bottoms = [p.get_y() for p in ax.patches]
    assert heights == [10, 30, 5, 7] and bottoms == [0, 0, 10, 30]
    assert list(ax.get_lines()[0].get_ydata()) == [64, 64]
    plt.close("all")


def test_ends_generation_knows_each_formats_end_tokens(bundled, tmp_path):
    im_end = bundled.tokenize(b"<|im_end|>", add_bos=False, special=True)
    assert len(im_end) == 1 and P.ends_generation(bundled, im_end[0])
    hello = bundled.tokenize(b"hello", add_bos=False, special=True)
    assert not P.ends_generation(bundled, hello[0])
    standin = cu.load_llm(str(cu.standin.standin_path("tied", folder=tmp_path)), n_ctx=256)
    try:
        assert P.ends_generation(standin, 128009) and P.ends_generation(standin, 128001)
        assert not P.ends_generation(standin, 128000)  # <|begin_of_text|>
    finally:
        standin.close()
