"""Context management by tokens: a chat that keeps the system prompt and drops old turns.

The model sees at most ``n_ctx`` tokens, prompt *and* answer. Cutting the history by characters
(``conversation[-4096:]``, as the course notes do) is wrong twice: characters are not tokens (the
ratio changes with language, digits, code, emoji) and a slice can cut a message in half or drop
the system prompt. Here the history is measured with the model's own tokenizer and chat format,
and whole turns are dropped, oldest first.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from .errors import ContextWindowError
from .prompts import Conversation, Turn, validate_messages


def chat_formatter(chat_format: str):
    """llama-cpp-python's formatter for a chat format name (``"chatml"``, ``"llama-3"``...)."""
    from llama_cpp import llama_chat_format

    name = "format_" + chat_format.replace("-", "").replace("_", "")
    formatter = getattr(llama_chat_format, name, None)
    if formatter is None:
        raise ValueError(f"No conozco el formato de chat {chat_format!r} de llama-cpp-python.")
    return formatter


def chat_token_counter(llm) -> Callable[[list[dict]], int]:
    """A function ``messages -> tokens`` that counts as ``create_chat_completion`` will.

    It formats the messages with the model's chat format (generation prompt included) and
    tokenizes them with the model's own tokenizer.
    """
    if not getattr(llm, "chat_format", None):
        raise ValueError("Este modelo no tiene formato de chat (¿es un modelo base?).")
    return lambda messages: len(chat_prompt_ids(llm, messages))


def chat_prompt_ids(llm, messages: list[dict]) -> list[int]:
    """The token ids ``create_chat_completion`` feeds the model for ``messages``.

    The model's chat format with the generation prompt, tokenized with special tokens on and,
    as llama-cpp-python's chat handler does, BOS added by the tokenizer unless the formatter
    already wrote it (ChatML models such as SmolLM2 add none; Llama 3 adds
    ``<|begin_of_text|>``, which its llama-3 formatter leaves out of the text).
    """
    if not getattr(llm, "chat_format", None):
        raise ValueError("Este modelo no tiene formato de chat (¿es un modelo base?).")
    if llm.chat_format.startswith("chat_template."):  # the GGUF's own Jinja template
        from llama_cpp import llama_chat_format

        key = ("tokenizer.chat_template" if llm.chat_format == "chat_template.default"
               else "tokenizer." + llm.chat_format)
        text = {i: llm.detokenize([i], special=True).decode("utf-8", "replace") if i >= 0 else ""
                for i in (llm.token_bos(), llm.token_eos())}
        formatter = llama_chat_format.Jinja2ChatFormatter(
            template=llm.metadata[key], eos_token=text[llm.token_eos()],
            bos_token=text[llm.token_bos()], stop_token_ids=[llm.token_eos()])
    else:
        formatter = chat_formatter(llm.chat_format)
    result = formatter(messages=messages)
    add_bos = not getattr(result, "added_special", False)
    return llm.tokenize(result.prompt.encode("utf-8"), add_bos=add_bos, special=True)


def _turn_starts(messages: list[dict], first: int) -> list[int]:
    """Index of each user message after ``first`` (a turn = a user message and what follows)."""
    return [i for i in range(first, len(messages)) if messages[i]["role"] == "user"]


def fit_messages(messages: list[dict], count: Callable[[list[dict]], int],
                 budget: int) -> tuple[list[dict], int]:
    """Drop the oldest whole turns until ``count(messages) <= budget``.

    The system message (if first) and the last turn (the new question) are always kept.
    Returns ``(kept messages, number of messages dropped)``. Raises
    :class:`~course_utils.errors.ContextWindowError` if even those two do not fit.
    """
    messages = list(messages)
    first = 1 if messages and messages[0]["role"] == "system" else 0
    head = messages[:first]
    body = messages[first:]
    dropped = 0
    while count(head + body) > budget:
        starts = _turn_starts(body, 1)  # the next turn after the oldest one
        if not starts:
            needed = count(head + body)
            raise ContextWindowError(
                f"El mensaje del sistema y la última pregunta ya ocupan {needed} tokens y el "
                f"máximo para el prompt es {budget}: no puedo recortar más historial. Acorta "
                "la pregunta o el mensaje del sistema, pide menos max_tokens o carga el modelo "
                "con más n_ctx."
            )
        dropped += starts[0]
        body = body[starts[0]:]
    return head + body, dropped


@dataclass
class TrimmedConversation(Conversation):
    """A :class:`~course_utils.prompts.Conversation` that never overflows ``n_ctx``.

    Before each call it drops the oldest turns so that prompt + ``max_tokens`` fit in the
    model's context window. ``dropped`` records how many messages were removed at each turn.
    """

    max_tokens: int = 128
    dropped: list[int] = field(default_factory=list)
    prompt_counts: list[int] = field(default_factory=list)

    def __post_init__(self):
        super().__post_init__()
        self._count = chat_token_counter(self.llm)

    @property
    def budget(self) -> int:
        """Most tokens the prompt may have: the window minus room for the answer."""
        return self.llm.n_ctx() - self.max_tokens

    def ask(self, content: str, **kwargs) -> str:
        kwargs.setdefault("temperature", 0)
        kwargs["max_tokens"] = self.max_tokens
        request = validate_messages(self.messages + [{"role": "user", "content": content}])
        request, dropped = fit_messages(request, self._count, self.budget)
        self.dropped.append(dropped)
        self.prompt_counts.append(self._count(request))
        out = self.llm.create_chat_completion(messages=request, **kwargs)
        answer = out["choices"][0]["message"]["content"] or ""
        self.messages = request + [{"role": "assistant", "content": answer}]
        self.turns.append(Turn(content, answer, out["usage"]["prompt_tokens"],
                               out["usage"]["completion_tokens"],
                               out["choices"][0]["finish_reason"]))
        return answer
