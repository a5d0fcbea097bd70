"""Prompt formats: the Llama 3 chat template built by hand, chat templates from GGUF files,
few-shot prompts, label parsing and a multi-turn conversation that keeps its history.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field

from .errors import CourseError

ROLES = ("system", "user", "assistant")

#: Meta's chat template for Llama 3 instruct models (``tokenizer_config.json`` of
#: Meta-Llama-3-8B-Instruct): the reference the course's builder is checked against.
LLAMA3_CHAT_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'"
    "+ message['content'] | trim + '<|eot_id|>' %}"
    "{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}"
    "{{ content }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)
LLAMA3_BOS = "<|begin_of_text|>"
LLAMA3_EOT = "<|eot_id|>"


class PromptFormatError(CourseError, ValueError):
    """A list of messages that no chat template can format."""


def validate_messages(messages: list[dict]) -> list[dict]:
    """Check a conversation: a non-empty list of ``{"role", "content"}`` with known roles.

    A ``system`` message may only come first. Returns the messages unchanged.
    """
    if not isinstance(messages, (list, tuple)) or not messages:
        raise PromptFormatError(
            "La conversación debe ser una lista no vacía de mensajes, por ejemplo "
            '[{"role": "user", "content": "Hola"}].'
        )
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or "role" not in message or "content" not in message:
            raise PromptFormatError(
                f"El mensaje {i} debe ser un diccionario con las claves 'role' y 'content'; "
                f"recibí {message!r}."
            )
        if message["role"] not in ROLES:
            raise PromptFormatError(
                f"El mensaje {i} tiene el rol {message['role']!r}; los roles válidos son "
                f"{', '.join(ROLES)}."
            )
        if not isinstance(message["content"], str):
            raise PromptFormatError(f"El contenido del mensaje {i} debe ser texto (str).")
        if message["role"] == "system" and i != 0:
            raise PromptFormatError(
                f"El mensaje {i} es de sistema: el mensaje de sistema solo puede ir el primero."
            )
    return list(messages)


def llama3_prompt(messages: list[dict], add_generation_prompt: bool = True, bos: bool = True) -> str:
    """The Llama 3 instruct prompt for ``messages``, built by hand.

    Each message becomes ``<|start_header_id|>ROLE<|end_header_id|>\\n\\nCONTENT<|eot_id|>``
    (content stripped of surrounding whitespace, as Meta's template does); the whole prompt starts
    with ``<|begin_of_text|>`` and, to ask for an answer, ends with an open assistant header.
    """
    parts = [LLAMA3_BOS] if bos else []
    for message in validate_messages(messages):
        parts.append(f"<|start_header_id|>{message['role']}<|end_header_id|>\n\n"
                     f"{message['content'].strip()}{LLAMA3_EOT}")
    if add_generation_prompt:
        parts.append("<|start_header_id|>assistant<|end_header_id|>\n\n")
    return "".join(parts)


def render_template(template: str, messages: list[dict], *, bos_token: str = "",
                    eos_token: str = "", add_generation_prompt: bool = True) -> str:
    """Render a Jinja chat template (as stored in a GGUF's ``tokenizer.chat_template``)."""
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    formatter = Jinja2ChatFormatter(template=template, eos_token=eos_token, bos_token=bos_token,
                                    add_generation_prompt=add_generation_prompt)
    return formatter(messages=validate_messages(messages)).prompt


def gguf_chat_template(llm) -> str | None:
    """The chat template stored in the model's GGUF, or ``None`` (base models have none)."""
    return llm.metadata.get("tokenizer.chat_template")


#: Chat formats the course tells apart, by the special tokens their templates write.
TEMPLATE_NAMES = {"llama-3": "Llama 3", "chatml": "ChatML"}
_FAMILY_MARKERS = {"llama-3": "<|start_header_id|>", "chatml": "<|im_start|>"}
#: What each format writes to ask for the assistant's answer (the open assistant turn).
GENERATION_PROMPTS = {
    "llama-3": "<|start_header_id|>assistant<|end_header_id|>\n\n",
    "chatml": "<|im_start|>assistant\n",
}
_SYSTEM_TURN = {
    "llama-3": re.compile(r"<\|start_header_id\|>system<\|end_header_id\|>\n\n(.*?)<\|eot_id\|>", re.S),
    "chatml": re.compile(r"<\|im_start\|>system\n(.*?)<\|im_end\|>", re.S),
}


def template_family(template: str | None) -> str | None:
    """``"llama-3"`` or ``"chatml"`` (llama-cpp-python's ``chat_format`` names) for a chat
    template, by the special tokens it writes; ``None`` for no template or another format."""
    if not template:
        return None
    for family, marker in _FAMILY_MARKERS.items():
        if marker in template:
            return family
    return None


def wrong_chat_format(template: str | None) -> str:
    """A ``chat_format`` that is *not* the template's, to measure what a wrong template costs:
    ChatML for a Llama 3 model, Llama 3 for any other (SmolLM2 uses ChatML)."""
    return "chatml" if template_family(template) == "llama-3" else "llama-3"


def model_template_prompt(llm, messages: list[dict], add_generation_prompt: bool = True) -> str:
    """The text the GGUF's own template makes of ``messages``, rendered with the model's BOS and
    EOS token texts as llama-cpp-python does: tokenized with ``special=True`` and without adding
    BOS, it is the prompt ``create_chat_completion`` sends."""
    template = gguf_chat_template(llm)
    if template is None:
        raise PromptFormatError(
            "Este modelo no trae plantilla de chat en su GGUF (es un modelo base): usa "
            "create_completion con texto normal, o carga un modelo instruido."
        )

    def text(token_id: int) -> str:
        return llm._model.token_get_text(token_id) if token_id != -1 else ""

    return render_template(template, messages, bos_token=text(llm.token_bos()),
                           eos_token=text(llm.token_eos()),
                           add_generation_prompt=add_generation_prompt)


def default_system_prompt(template: str | None) -> str | None:
    """The system message a chat template inserts when the conversation has none, or ``None``.

    SmolLM2's inserts «You are a helpful AI assistant named SmolLM…»; Meta's Llama 3 template
    inserts nothing (Llama 3.1's adds a system turn with its knowledge cut-off date).
    """
    family = template_family(template)
    if family is None:
        return None
    rendered = render_template(template, [{"role": "user", "content": "¿Hola?"}],
                               add_generation_prompt=False)
    match = _SYSTEM_TURN[family].search(rendered)
    return match.group(1).strip() if match else None


def few_shot_prompt(instruction: str, examples: list[tuple[str, str]], query: str,
                    input_label: str = "Texto", output_label: str = "Sentimiento") -> str:
    """A completion-style few-shot prompt; ends right where the model must write the label."""
    blocks = [instruction.strip(), ""]
    for text, label in examples:
        blocks += [f'{input_label}: "{text}"', f"{output_label}: {label}", ""]
    blocks += [f'{input_label}: "{query}"', f"{output_label}:"]
    return "\n".join(blocks)


def _fold(text: str) -> str:
    text = unicodedata.normalize("NFKD", text.lower())
    return "".join(c for c in text if not unicodedata.combining(c))


def parse_label(text: str, labels: list[str]) -> str | None:
    """The first of ``labels`` that appears as a word in ``text`` (case and accents ignored).

    ``parse_label(" **Positivo**.", ["POSITIVO", "NEGATIVO"])`` -> ``"POSITIVO"``; ``None`` if no
    label appears.
    """
    folded = _fold(text)
    best = None
    for label in labels:
        match = re.search(rf"\b{re.escape(_fold(label))}\b", folded)
        if match and (best is None or match.start() < best[0]):
            best = (match.start(), label)
    return best[1] if best else None


@dataclass
class Turn:
    """One exchange of a :class:`Conversation`, with what it cost."""

    user: str
    assistant: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str


@dataclass
class Conversation:
    """A multi-turn chat that sends the whole history on every turn.

    The model has no memory between calls: the conversation *is* the list of messages.
    """

    llm: object
    system: str | None = None
    messages: list[dict] = field(default_factory=list)
    turns: list[Turn] = field(default_factory=list)

    def __post_init__(self):
        if self.system and not self.messages:
            self.messages.append({"role": "system", "content": self.system})

    def ask(self, content: str, **kwargs) -> str:
        """Send ``content`` with the history; store and return the answer."""
        kwargs.setdefault("temperature", 0)
        kwargs.setdefault("max_tokens", 128)
        request = self.messages + [{"role": "user", "content": content}]
        out = self.llm.create_chat_completion(messages=validate_messages(request), **kwargs)
        answer = out["choices"][0]["message"]["content"] or ""
        self.messages = request + [{"role": "assistant", "content": answer}]
        self.turns.append(Turn(content, answer, out["usage"]["prompt_tokens"],
                               out["usage"]["completion_tokens"], out["choices"][0]["finish_reason"]))
        return answer


# --------------------------------------------------------------------------- one question, one reply

@dataclass(frozen=True)
class Reply:
    """What one chat call returned: the text, why it stopped and what it cost in tokens."""

    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int


def response_text(response_or_choice: dict) -> str:
    """The generated text of a ``create_completion`` or ``create_chat_completion`` answer.

    Accepts the whole response or one of its ``choices``: completions keep the text in
    ``choice["text"]``, chat completions in ``choice["message"]["content"]`` (``None`` becomes "").
    """
    choice = response_or_choice
    if "choices" in choice:
        choice = choice["choices"][0]
    if "text" in choice:
        return choice["text"] or ""
    if "message" in choice:
        return choice["message"].get("content") or ""
    raise ValueError("No reconozco esta respuesta: esperaba la de create_completion o la de "
                     "create_chat_completion (o uno de sus 'choices').")


def ask(llm, content: str, *, system: str | None = None, **params) -> Reply:
    """Send one user message (after an optional ``system`` message) with the model's chat
    template and return the :class:`Reply`.

    ``params`` go unchanged to ``create_chat_completion`` (no defaults of its own: without
    ``temperature`` it samples at the library's 0.2).
    """
    messages = [{"role": "system", "content": system}] if system else []
    messages.append({"role": "user", "content": content})
    out = llm.create_chat_completion(messages=validate_messages(messages), **params)
    return Reply(response_text(out), out["choices"][0]["finish_reason"],
                 out["usage"]["prompt_tokens"], out["usage"]["completion_tokens"])


def mentions(text: str, answers: str | list[str]) -> bool:
    """True if any of ``answers`` appears in ``text`` as whole words (case and accents ignored).

    ``mentions("It has 14 legs", ["four", "4"])`` is False: "4" inside "14" is not the word 4,
    as it would be for a substring test or ``re.search("four|4", ...)``.
    """
    if isinstance(answers, str):
        answers = [answers]
    folded = _fold(text)
    return any(re.search(rf"(?<!\w){re.escape(_fold(a))}(?!\w)", folded) for a in answers)


# --------------------------------------------------------------------------- BOS and control tokens

def adds_bos(llm) -> bool:
    """True if ``llm.tokenize(..., add_bos=True)`` prepends a BOS token for this model.

    Llama 3 GGUFs ask for it (``tokenizer.ggml.add_bos_token = true``); SmolLM2's does not.
    """
    probe = b"Hola"
    return (len(llm.tokenize(probe, add_bos=True, special=True))
            > len(llm.tokenize(probe, add_bos=False, special=True)))


def prompt_ids(llm, text: str) -> list[int]:
    """Token ids of a complete prompt text, as the model must read it: markers as control tokens
    and one BOS at most.

    A prompt built with its BOS text (``llama3_prompt(...)``, a rendered chat template) already
    has it: the tokenizer must not add another (``add_bos=False``); a plain text gets the BOS
    the model asks for.
    """
    bos = llm.token_bos()
    ids = llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)
    if bos != -1 and adds_bos(llm) and (not ids or ids[0] != bos):
        ids = [bos] + ids
    return ids


def _is_control(llm, token_id: int) -> bool:
    # llama.cpp renders control tokens as text only when asked for special tokens
    return (llm.detokenize([token_id], special=False) == b""
            and llm.detokenize([token_id], special=True) != b"")


def control_tokens(llm, text: str) -> list[int]:
    """The control tokens (``<|eot_id|>``, ``<|im_end|>``...) that ``text`` becomes when it is
    tokenized as ``create_completion`` and ``create_chat_completion`` do (``special=True``)."""
    ids = llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)
    return [i for i in ids if _is_control(llm, i)]


def strip_control_tokens(llm, text: str) -> str:
    """``text`` without the markers that would become control tokens, so that what a user types
    cannot close a turn or open a new one. Repeated until none is left (removing one marker must
    not create another: ``<|eo<|eot_id|>t_id|>``)."""
    while True:
        found = control_tokens(llm, text)
        if not found:
            return text
        for token_id in dict.fromkeys(found):
            text = text.replace(llm.detokenize([token_id], special=True).decode("utf-8", "replace"), "")


# --------------------------------------------------------------------------- small experiments

def first_reply_token(llm, question: str, *, cut: bool = False) -> str:
    """The first token (greedy) the model writes after its chat template for one ``question``.

    With ``cut=True`` the prompt ends right at the assistant header: the newline(s) the template
    writes after it are removed, as in a hand-written template that forgets them.
    """
    text = model_template_prompt(llm, [{"role": "user", "content": question}])
    if cut:
        text = text.rstrip("\n")
    out = llm.create_completion(prompt_ids(llm, text), max_tokens=1, temperature=0)
    return response_text(out)


def score_answers(llm, questions: list[tuple[str, list[str]]], *, suffix: str = "",
                  **params) -> list[tuple[str, bool]]:
    """Ask each ``(question, answers)`` with the model's chat template (see :func:`ask`) and
    return ``(reply text, right)`` per question; right means one of ``answers`` is in the reply
    as whole words (:func:`mentions`)."""
    scored = []
    for question, answers in questions:
        text = ask(llm, question + suffix, **params).text
        scored.append((text, mentions(text, answers)))
    return scored


def few_shot_labels(llm, instruction: str, examples: list[tuple[str, str]], texts: list[str],
                    labels: list[str], *, max_tokens: int = 4) -> list[str | None]:
    """Classify each of ``texts`` with a completion-style :func:`few_shot_prompt` (greedy, up to
    the end of the line) and return the label parsed from each reply (``None``: no label)."""
    predictions = []
    for text in texts:
        out = llm(few_shot_prompt(instruction, examples, text), max_tokens=max_tokens,
                  temperature=0, stop=["\n"])
        predictions.append(parse_label(response_text(out), labels))
    return predictions


def recall(llm, fact: str, question: str, *, system: str | None = None,
           max_tokens: int = 20) -> tuple[str, str]:
    """Ask ``question`` (greedy) after telling the model ``fact`` in an earlier turn of a
    :class:`Conversation` with ``system``, and alone: the question as the only message, without
    ``system`` either. Returns ``(with history, without history)``."""
    conversation = Conversation(llm, system=system)
    conversation.ask(fact, max_tokens=30)
    with_history = conversation.ask(question, max_tokens=max_tokens)
    alone = ask(llm, question, max_tokens=max_tokens, temperature=0).text
    return with_history, alone


def plot_context_growth(turns: list[Turn], n_ctx: int, ax=None):
    """Stacked bars per turn (prompt = history, then the reply) against the ``n_ctx`` line.

    Returns the matplotlib ``Axes``.
    """
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(6.5, 3.2))
    x = range(1, len(turns) + 1)
    prompt = [t.prompt_tokens for t in turns]
    ax.bar(x, prompt, label="prompt (historial)", color="tab:blue")
    ax.bar(x, [t.completion_tokens for t in turns], bottom=prompt, label="respuesta",
           color="tab:orange")
    ax.axhline(n_ctx, color="tab:red", ls="--", label=f"n_ctx = {n_ctx}")
    ax.set_xlabel("turno")
    ax.set_ylabel("tokens")
    ax.set_title("El historial crece hasta llenar la ventana de contexto")
    ax.legend(fontsize=8, loc="upper left")
    return ax


def ends_generation(llm, token_id: int) -> bool:
    """True if llama.cpp stops generating when the model writes ``token_id`` (an
    end-of-generation token: ``<|eot_id|>`` and ``<|end_of_text|>`` in Llama 3, ``<|im_end|>``
    in ChatML models). No ``stop=`` string is needed for those."""
    import llama_cpp

    return bool(llama_cpp.llama_vocab_is_eog(llm._model.vocab, token_id))
