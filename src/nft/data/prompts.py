"""Prompt templates: how a problem becomes the token ids the policy continues.

Three styles, chosen in ``conf/prompt/``:
- ``plain``: ``user`` formatted with the problem, no special tokens (the toy model, base models without chat turns);
- ``chatml``: a ChatML conversation written out here (Qwen2.5-Math's format), optional system turn;
- ``chat_template``: the tokenizer's own chat template (``tokenizer.apply_chat_template``).
"""

from __future__ import annotations

from dataclasses import dataclass

STYLES = ("plain", "chatml", "chat_template")


@dataclass(frozen=True)
class PromptTemplate:
    style: str = "plain"
    user: str = "{problem}"
    system: str | None = None

    def __post_init__(self) -> None:
        if self.style not in STYLES:
            raise ValueError(f"prompt.style must be one of {STYLES}, got {self.style!r}")
        if "{problem}" not in self.user:
            raise ValueError(f"prompt.user must contain '{{problem}}', got {self.user!r}")

    def render(self, problem: str, tokenizer=None) -> str:
        """The prompt text for one problem (special tokens written out as text)."""
        user = self.user.replace("{problem}", problem)
        if self.style == "plain":
            return user if self.system is None else f"{self.system}\n{user}"
        if self.style == "chatml":
            system = "" if self.system is None else f"<|im_start|>system\n{self.system}<|im_end|>\n"
            return f"{system}<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n"
        if tokenizer is None or not getattr(tokenizer, "chat_template", None):
            raise ValueError("prompt.style=chat_template needs a tokenizer with a chat template; use chatml or plain")
        messages = ([{"role": "system", "content": self.system}] if self.system is not None else []) + [
            {"role": "user", "content": user}
        ]
        return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    def encode(self, problems: list[str], tokenizer) -> list[list[int]]:
        """Token ids of each rendered prompt; special tokens in the text are parsed, none are added."""
        texts = [self.render(problem, tokenizer) for problem in problems]
        return tokenizer(texts, add_special_tokens=False)["input_ids"]
