"""Many prompts through one llama-cpp-python model, done right.

llama-cpp-python has **no** ``generate(prompts, batch_size=...)`` (the course notes show one; it
does not exist). A ``Llama`` object runs one sequence at a time. What does help:

* **load once, loop**: loading costs far more than a short answer;
* **shared prefix first**: ``Llama`` keeps the KV cache of the previous call and skips the
  tokens a new prompt shares with it. Prompts that start with the same instructions/examples
  (put the varying part *last*) only pay for their new tokens;
* true parallel decoding of several sequences (continuous batching) lives in llama.cpp's own
  ``llama-server --parallel N``, not in the Python package.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass
class BatchRun:
    """What :func:`complete_many` did: the answers and what they cost."""

    answers: list[str]
    seconds: float
    prompt_tokens: int  #: as billed in ``usage``: every prompt's full length
    completion_tokens: int
    latencies: list[float] = field(default_factory=list)
    #: tokens the model actually ran through ``Llama.eval`` (prompts and answers): a reused
    #: prefix is not run again, so this is what prefix reuse saves, counted rather than timed
    evaluated_tokens: int = 0

    @property
    def prompts_per_second(self) -> float:
        return len(self.answers) / self.seconds


def _answer(llm, prompt, **kwargs) -> tuple[str, dict]:
    if isinstance(prompt, str) or (prompt and isinstance(prompt[0], int)):  # text or token ids
        out = llm.create_completion(prompt, **kwargs)
        return out["choices"][0]["text"], out["usage"]
    out = llm.create_chat_completion(messages=prompt, **kwargs)
    return out["choices"][0]["message"]["content"] or "", out["usage"]


def complete_many(llm, prompts: list, *, reuse_prefix: bool = True, progress: bool = True,
                  desc: str = "prompts", **kwargs) -> BatchRun:
    """Answer every prompt (a string, or a list of chat messages) with one loaded model.

    The run starts from an empty KV cache; ``reuse_prefix=False`` also clears it before each
    prompt, to measure what the automatic prefix reuse saves. A prompt may also be a list of token ids (no BOS is added). ``kwargs`` go to the completion call (``temperature=0`` and
    ``max_tokens=32`` unless given).
    """
    kwargs.setdefault("temperature", 0)
    kwargs.setdefault("max_tokens", 32)
    iterator = prompts
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(prompts, desc=desc, leave=False)
    answers, latencies = [], []
    n_prompt = n_completion = 0
    evaluated = [0]
    own_eval = vars(llm).get("eval")  # None unless someone already wrapped this instance
    original_eval = llm.eval

    def counting_eval(tokens):
        evaluated[0] += len(tokens)
        return original_eval(tokens)

    llm.eval = counting_eval  # the instance's own attribute, removed below
    llm.reset()  # every run starts from an empty KV cache: runs are comparable
    start = time.perf_counter()
    try:
        for prompt in iterator:
            if not reuse_prefix:
                llm.reset()
            t0 = time.perf_counter()
            text, usage = _answer(llm, prompt, **kwargs)
            latencies.append(time.perf_counter() - t0)
            answers.append(text)
            n_prompt += usage["prompt_tokens"]
            n_completion += usage["completion_tokens"]
    finally:
        if own_eval is None:
            del llm.eval
        else:
            llm.eval = own_eval
    return BatchRun(answers, time.perf_counter() - start, n_prompt, n_completion, latencies,
                    evaluated[0])


def common_prefix_length(sequences: list[list[int]]) -> int:
    """Length of the longest prefix all token sequences share."""
    if not sequences:
        return 0
    n = 0
    for column in zip(*sequences):
        if any(token != column[0] for token in column[1:]):
            break
        n += 1
    return n
