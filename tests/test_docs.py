"""The README and docs/: every training, evaluation and planning command they show composes as written, the README
stays short, and no page points outside the repository."""

from __future__ import annotations

import re
import shlex

import pytest
from hydra import compose, initialize_config_dir

from .conftest import CONF, ROOT

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
ENTRIES = {"src/train.py": "train", "src/evaluate.py": "evaluate", "nft.plan": "train"}


def shown_commands() -> list[tuple[str, str, list[str]]]:
    """(page, config name, overrides) of each `python src/train.py|src/evaluate.py|-m nft.plan ...` in a code block."""
    commands = []
    for page in PAGES:
        blocks = re.findall(r"```(?:bash)?\n(.*?)```", page.read_text(), flags=re.S)
        for block in blocks:
            for line in block.replace("\\\n", " ").splitlines():
                if not line.startswith("python "):
                    continue
                words = shlex.split(line.split(" #", 1)[0])
                entry = next((w for w in words if w in ENTRIES), None)
                if not words or words[0] != "python" or entry is None:
                    continue
                overrides = [w for w in words[words.index(entry) + 1 :] if "=" in w and not w.startswith("-")]
                overrides = [re.sub(r"<[a-z]+>", "x", w) for w in overrides]  # runs/<date>/<time>: the user's own
                # A sweep composes as its first job.
                overrides = [re.sub(r"=([^,\[]+),.*", r"=\1", w) if "," in w and "[" not in w else w for w in overrides]
                commands.append((page.name, ENTRIES[entry], overrides))
    return commands


COMMANDS = shown_commands()


def test_the_pages_show_commands():
    assert len(COMMANDS) >= 15  # the pattern above still finds them


@pytest.mark.parametrize(("page", "config", "overrides"), COMMANDS, ids=[" ".join(c[2]) or c[1] for c in COMMANDS])
def test_every_command_shown_composes(page, config, overrides):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        compose(config, overrides=overrides)


def test_the_readme_is_short_and_every_page_stays_in_the_repository():
    assert len((ROOT / "README.md").read_text().splitlines()) <= 250
    for page in PAGES:
        text = page.read_text()
        assert "shared/" not in text and not re.search(r"\bissue \d", text), page.name
        for target in re.findall(r"\]\(((?!https?:)[^)#]+)", text):  # relative links resolve
            assert (page.parent / target).exists(), f"{page.name}: {target}"
