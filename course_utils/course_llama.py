"""``CourseLlama``: ``llama_cpp.Llama`` with the course's guard rails.

It *is* a ``llama_cpp.Llama`` (same methods, same answers); what it adds:

* the prompt is checked against the context window before llama.cpp sees it, with an error in
  Spanish that says how to fix it;
* ``course_choice``: which model the ladder picked and why;
* models still open when Python exits are closed first, so llama-cpp-python does not print
  ``Exception ignored in: <function Llama.__del__>`` during interpreter shutdown.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import sys
import weakref

from llama_cpp import Llama

from .errors import ContextWindowError

#: llama.cpp rounds the context window up to a multiple of this; llama-cpp-python 0.3.36 then
#: sizes its token buffer with the *requested* value, so a prompt between the two crashes with
#: "could not broadcast input array". Asking for a multiple of it avoids the mismatch.
N_CTX_PAD = 256

_open_models: "weakref.WeakSet[CourseLlama]" = weakref.WeakSet()


def pad_n_ctx(n_ctx: int) -> int:
    """``n_ctx`` rounded up to the next multiple of :data:`N_CTX_PAD`."""
    if n_ctx <= 0:
        raise ValueError(f"n_ctx debe ser un entero positivo (recibí {n_ctx}).")
    return -(-n_ctx // N_CTX_PAD) * N_CTX_PAD


@contextlib.contextmanager
def quiet_stderr(enabled: bool = True):
    """Silence llama.cpp's messages inside the block.

    llama.cpp prints some messages even with ``verbose=False`` (e.g. Gemma 3's
    ``llama_kv_cache_iswa: using full-size SWA cache``); they would end up in the rendered pages.
    """
    if not enabled:
        yield
        return
    # llama-cpp-python forwards llama.cpp's log to Python's sys.stderr (its log callback), and
    # the C library may also write to file descriptor 2 directly: silence both.
    with open(os.devnull, "w") as devnull, contextlib.redirect_stderr(devnull):
        try:
            sys.__stderr__.flush()
            saved = os.dup(2)
        except (OSError, ValueError, AttributeError):  # no real fd 2 (embedded interpreters)
            yield
            return
        try:
            os.dup2(devnull.fileno(), 2)
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


class CourseLlama(Llama):
    """A ``llama_cpp.Llama`` that explains context-window errors in Spanish."""

    course_choice = None  #: the :class:`course_utils.models.ModelChoice` it was loaded from

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        _open_models.add(self)

    @property
    def keeps_all_logits(self) -> bool:
        """Loaded with ``logits_all=True``: ``eval`` keeps every position's logits in ``scores``."""
        return bool(self._logits_all)

    def count_tokens(self, prompt: str | list[int]) -> int:
        """Tokens the prompt occupies, counted as ``create_completion`` counts them."""
        if isinstance(prompt, str):
            return len(self.tokenize(prompt.encode("utf-8"), add_bos=True, special=True))
        return len(prompt)

    def create_completion(self, prompt, *args, **kwargs):
        n_prompt = self.count_tokens(prompt)
        if n_prompt >= self.n_ctx():
            raise ContextWindowError(
                f"El prompt ocupa {n_prompt} tokens y la ventana de contexto (n_ctx) es de "
                f"{self.n_ctx()}: no cabe, y además hay que dejar sitio para la respuesta. "
                "Acorta el prompt o carga el modelo con más contexto, por ejemplo "
                f"cu.load_llm(n_ctx={pad_n_ctx(n_prompt + 256)}) (más contexto = más memoria)."
            )
        return super().create_completion(prompt, *args, **kwargs)


@atexit.register
def _close_open_models() -> None:
    for llm in list(_open_models):
        try:
            llm.close()
        except Exception:
            pass
