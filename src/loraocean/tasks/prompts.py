"""Prompt rendering: one template for every task.

The user turn is the instruction, a blank line, then the input (either part omitted when empty).
- `chat` template (used when the tokenizer has a chat template): the user turn goes through the
  tokenizer's chat template with the generation prompt appended; the answer follows directly.
- `plain` template (no chat template): ``{user turn}\\nAnswer:`` and the answer follows after one
  space.
The choice of template is recorded with every artifact (see `template_name`).
"""

from __future__ import annotations

from dataclasses import dataclass

from loraocean.tasks.example import Example


@dataclass(frozen=True)
class Rendered:
    prompt: str        # context given to the model
    target: str        # reference continuation (without end-of-turn)
    choices: list[str] | None  # continuations of each choice (choice tasks)
    template: str      # "chat" or "plain"


def template_name(tokenizer, template: str = "auto") -> str:
    if template != "auto":
        return template
    return "chat" if getattr(tokenizer, "chat_template", None) else "plain"


def user_turn(example: Example) -> str:
    parts = [p.strip("\n") for p in (example.instruction, example.input) if p and p.strip()]
    return "\n\n".join(parts)


def render(example: Example, tokenizer, template: str = "auto") -> Rendered:
    name = template_name(tokenizer, template)
    turn = user_turn(example)
    if name == "chat":
        prompt = tokenizer.apply_chat_template(
            [{"role": "user", "content": turn}], tokenize=False, add_generation_prompt=True
        )
        sep = ""
    elif name == "plain":
        prompt = f"{turn}\nAnswer:"
        sep = " "
    else:
        raise ValueError(f"unknown template {template!r}; use auto, chat or plain")
    choices = [sep + c for c in example.choices] if example.choices is not None else None
    return Rendered(prompt=prompt, target=sep + example.target, choices=choices, template=name)


def end_of_answer(tokenizer) -> str:
    """Text appended after the answer when training, so the model learns to stop."""
    return tokenizer.eos_token or ""
