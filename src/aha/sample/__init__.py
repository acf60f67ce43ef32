"""Rejection sampling (`aha sample CONFIG`): verified, readable traces from a model, as an SFT dataset.

R1 (section 2.3.3): from the RL checkpoint, sample k responses per prompt, keep only the correct ones, and
filter out "chain-of-thought with mixed languages, long paragraphs, and code blocks". Here, per completion,
in this order (the first failing check is the reason counted in stats.json):

    truncated   hit max_new_tokens                                  (filters.drop_truncated)
    wrong       verifier reward < min_reward, or not applicable     (verifier: the task's accuracy reward)
    format      format reward != 1                                  (filters.require_format)
    readability language_consistency(reasoning, lang) < min_language (reasoning without words passes),
                a paragraph longer than max_paragraph_chars, a ``` code fence (filters.*)
then per prompt: drop duplicates (whitespace-normalised text) and keep up to m (the first, or the shortest).

Rows written to OUT/data.jsonl: the task row's fields + {prompt, completion} (loadable by `aha sft`) + provenance
{model, step, reward, format, language, prompt_index, sample, task, temperature}. Any Engine works: the local
model, or a teacher behind an OpenAI-compatible server (engine=openai; its requests are cached in
OUT/requests.jsonl). Output is resumable: prompts are processed in chunks, and a chunk's rows and then its
entry in OUT/progress.jsonl are appended and fsynced; a restarted run drops rows of unfinished chunks (and a
torn last line; any other undecodable row is a one-line error naming file:line) and continues with the next
one, so nothing is duplicated, stats.json counts the rows really there and, with the same seed, the file
equals an uninterrupted run's.

    config.py   SampleConfig (+ its filters and OpenAI sections)
    filters.py  the pure per-prompt selection: readability(), select()
    engine.py   the sampled model: a local engine, or a teacher behind an OpenAI-compatible server
    io.py       the resumable output (OUT/data.jsonl + OUT/progress.jsonl)
    run.py      sample(cfg): the loop over chunks of prompts
"""

from .config import FilterConfig, OpenAIConfig, SampleConfig
from .filters import readability, select
from .io import ResumableWriter
from .run import sample

__all__ = [
    "SampleConfig",
    "FilterConfig",
    "OpenAIConfig",
    "sample",
    "readability",
    "select",
    "ResumableWriter",
]
