"""Claims about *behaviour* that were checked on the bundled model only, gated visibly.

A chapter computes facts *about the model* (architecture, tokens, sizes) from whatever model is
loaded: those are always asserted. Claims about *behaviour* ("the instruct model answers in one
word", "the fine-tune beats the base model") need a trained model; the course checks them on the
bundled SmolLM2. With another model (``COURSE_MODEL``: a real Llama 3.x, or the tests' random
stand-in) the check still runs and its result is printed, but it does not stop the notebook:
the page says which model the claim was checked on. Never a silent skip.
"""

from __future__ import annotations

from . import catalog

#: The words the pages use for a gated claim.
CHECKED_ON_BUNDLED = "comprobado con el modelo incluido"


def _choice(model_or_choice):
    return getattr(model_or_choice, "course_choice", model_or_choice)


def is_bundled(model_or_choice) -> bool:
    """True when ``model_or_choice`` (a loaded model or a ``ModelChoice``) is the bundled model."""
    choice = _choice(model_or_choice)
    return getattr(choice, "spec", None) is catalog.DEFAULT_MODEL


def model_label(model_or_choice) -> str:
    """A short name for the model that was loaded (for tables, plots and messages)."""
    choice = _choice(model_or_choice)
    if is_bundled(choice):
        return "SmolLM2-135M"
    metadata = getattr(model_or_choice, "metadata", None)  # a loaded llama_cpp.Llama
    if isinstance(metadata, dict) and metadata.get("general.name"):
        return str(metadata["general.name"])
    path = getattr(choice, "path", None)
    if path is not None:
        try:
            from .architecture import read_gguf_index  # fast: no vocabulary parsing

            name = read_gguf_index(path).fields.get("general.name")
            if name:
                return str(name)
        except Exception:  # a label is cosmetic: fall back to the file name
            pass
        return path.name
    return str(getattr(choice, "name", None) or "tu modelo")


def behaviour(claim: str, holds: bool, model_or_choice) -> bool:
    """Assert a behavioural ``claim`` on the bundled model; report it visibly on any other.

    Returns ``holds``. On the bundled model a false claim raises ``AssertionError`` (the chapter
    fails, as a wrong claim should); on another model the line printed says whether it held and
    that the claim was checked on the bundled model.
    """
    if is_bundled(model_or_choice):
        if not holds:
            raise AssertionError(f"No se cumple con el modelo incluido: {claim}")
        print(f"✔ {claim} ({CHECKED_ON_BUNDLED}).")
        return True
    label = model_label(model_or_choice)
    verdict = "también se cumple" if holds else "NO se cumple"
    print(f"ⓘ {claim}: con {label} {verdict}. Este punto está {CHECKED_ON_BUNDLED} (SmolLM2-135M); "
          "con otro modelo el resultado es informativo, no una prueba.")
    return holds
