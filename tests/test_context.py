"""Context management by tokens (chapter 07)."""

import pytest

import course_utils as cu
from course_utils.context import TrimmedConversation, chat_token_counter, fit_messages
from course_utils.errors import ContextWindowError


def words(messages):
    """A fake tokenizer: one token per word, plus 2 per message."""
    return sum(len(m["content"].split()) + 2 for m in messages)


SYSTEM = {"role": "system", "content": "eres útil"}


def chat(n_turns, words_per_message=5):
    messages = [SYSTEM]
    for i in range(n_turns):
        messages.append({"role": "user", "content": " ".join([f"p{i}"] * words_per_message)})
        messages.append({"role": "assistant", "content": " ".join([f"r{i}"] * words_per_message)})
    messages.append({"role": "user", "content": "última pregunta"})
    return messages


def test_nothing_dropped_when_it_fits():
    messages = chat(2)
    kept, dropped = fit_messages(messages, words, budget=1000)
    assert kept == messages and dropped == 0


def test_drops_oldest_whole_turns_and_keeps_system_and_last_question():
    messages = chat(5)  # 4 + 5*2*7 + 4 = 78 tokens
    kept, dropped = fit_messages(messages, words, budget=40)
    assert words(kept) <= 40
    assert kept[0] == SYSTEM and kept[-1] == messages[-1]
    assert dropped % 2 == 0 and kept == [SYSTEM] + messages[1 + dropped:]
    assert kept[1]["role"] == "user"  # never starts with an orphan answer
    # as few as possible: one more turn would not fit
    assert words([SYSTEM] + messages[1 + dropped - 2:]) > 40


def test_without_system_message():
    messages = chat(3)[1:]
    kept, dropped = fit_messages(messages, words, budget=20)
    assert kept == messages[dropped:] and words(kept) <= 20 and kept[0]["role"] == "user"


def test_input_is_not_modified():
    messages = chat(4)
    copy = [dict(m) for m in messages]
    fit_messages(messages, words, budget=20)
    assert messages == copy


def test_clear_error_when_even_the_last_question_does_not_fit():
    messages = chat(2)
    messages[-1] = {"role": "user", "content": "muy " * 50}
    with pytest.raises(ContextWindowError, match="max_tokens"):
        fit_messages(messages, words, budget=30)


@pytest.fixture(scope="module")
def llm():
    return cu.load_llm(n_ctx=256)


def test_token_counter_matches_what_llama_cpp_bills(llm):
    count = chat_token_counter(llm)
    messages = [SYSTEM, {"role": "user", "content": "¿Cuántas patas tiene una araña? 🕷️"}]
    out = llm.create_chat_completion(messages=messages, max_tokens=1, temperature=0)
    assert count(messages) == out["usage"]["prompt_tokens"]


def test_trimmed_conversation_never_overflows(llm):
    conversation = TrimmedConversation(llm, system="Responde en una frase.", max_tokens=48)
    for i in range(6):
        conversation.ask(f"Cuéntame un dato sobre el número {i} y sobre el anterior.")
    assert all(p + 48 <= llm.n_ctx() for p in conversation.prompt_counts)
    assert sum(conversation.dropped) > 0  # 256 tokens do not hold six turns
    assert conversation.messages[0]["role"] == "system"
    assert [t.prompt_tokens for t in conversation.turns] == conversation.prompt_counts


def test_base_model_has_no_chat_format():
    class Base:
        chat_format = None

    with pytest.raises(ValueError, match="formato de chat"):
        chat_token_counter(Base())


def test_token_counter_matches_what_llama_cpp_bills_on_the_llama3_standin(tmp_path):
    """Llama 3 adds <|begin_of_text|> when tokenizing; its llama-3 formatter leaves it out."""
    from course_utils import standin

    llama3 = cu.load_llm(str(standin.standin_path("tied", folder=tmp_path)), n_ctx=256)
    assert llama3.chat_format == "llama-3"
    count = chat_token_counter(llama3)
    messages = [SYSTEM, {"role": "user", "content": "¿Cuántas patas tiene una araña? 🕷️"}]
    out = llama3.create_chat_completion(messages=messages, max_tokens=1, temperature=0)
    assert count(messages) == out["usage"]["prompt_tokens"]
