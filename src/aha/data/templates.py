"""Prompt templates: how a row's question becomes the text the policy continues.

- "r1-zero": the DeepSeek-R1-Zero template (R1 paper, Table 1), verbatim, with the question in place of
  {prompt}. It is a raw-text template for base models (no chat template).
- "chat": the tokenizer's chat template with one user turn (and an optional system turn), generation prompt on.
- "plain": "{question}\\n".
  For a chat/instruct model, R1-Zero's instructions go in the system turn: template "chat" with system
  "r1-zero" (R1_ZERO_SYSTEM, the template's instructions without the User/Assistant frame);
  template_notice() is the line commands print when a model with a chat template gets the raw r1-zero text.
- any other string containing "{prompt}": that string with the question substituted (plain replacement, so
  LaTeX braces in the template or question are safe).

`prefill` is appended after the template: the start of the assistant's answer, e.g. "<think>" for R1-Distill
style templates or TinyZero (then score with think_prefilled=True). For "r1-zero" a space separates
"Assistant:" from the prefill.
"""

from __future__ import annotations

R1_ZERO = (
    "A conversation between User and Assistant. The user asks a question, and the Assistant solves it. "
    "The assistant first thinks about the reasoning process in the mind and then provides the user with "
    "the answer. The reasoning process and answer are enclosed within <think> </think> and <answer> "
    "</answer> tags, respectively, i.e., <think> reasoning process here </think> <answer> answer here "
    "</answer>. User: {prompt}. Assistant:"
)

TEMPLATES = {"r1-zero": R1_ZERO, "plain": "{prompt}\n", "chat": None}
R1_ZERO_SYSTEM = R1_ZERO.split(" User:")[0]  # the instructions alone, as a chat model's system turn
SYSTEMS = {"r1-zero": R1_ZERO_SYSTEM}  # named system prompts: task.system=r1-zero


def template_notice(tokenizer, template: str, model: str = "the model") -> str | None:
    """One line for a model that has a chat template but gets the raw r1-zero text (base-model format), else
    None. Instruct models rarely stop or answer in tags under the raw text (issue 20)."""
    if template != "r1-zero" or not getattr(tokenizer, "chat_template", None):
        return None
    return (
        f"note: {model} has a chat template but task.template is r1-zero (raw text, for base models); "
        "for a chat/instruct model set task.template=chat task.system=r1-zero"
    )


def render_prompt(
    question: str,
    template: str = "r1-zero",
    *,
    tokenizer=None,
    system: str | None = None,
    prefill: str = "",
) -> str:
    """The prompt text for `question` under `template` (see module docstring)."""
    system = SYSTEMS.get(system, system)
    if template == "chat":
        if tokenizer is None or not getattr(tokenizer, "chat_template", None):
            from ..config import ConfigError  # a ValueError: a one-line error through the CLI

            what = "this model's tokenizer has none" if tokenizer is not None else "none was given"
            raise ConfigError(
                "",
                f"template 'chat' needs a tokenizer with a chat template ({what}); for a base model "
                "set the template to r1-zero or plain (task.template=, data.template= for SFT)",
            )
        messages = ([{"role": "system", "content": system}] if system else []) + [
            {"role": "user", "content": question}
        ]
        return (
            tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            + prefill
        )
    text = TEMPLATES.get(template, template)
    if "{prompt}" not in text:
        raise ValueError(
            f"unknown template {template!r}; valid: {', '.join(TEMPLATES)} or a string "
            "containing '{prompt}'"
        )
    text = text.replace("{prompt}", question)
    if system:
        text = f"{system}\n{text}"
    if prefill:
        text += (" " if template == "r1-zero" else "") + prefill
    return text
