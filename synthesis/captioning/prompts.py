"""Versioned per-family prompts, loaded from files, and the chat messages built from them.

A prompt file is ``prompts/<name>.<version>.txt``: ``# name:`` and ``# version:``
header lines (they must agree with the file name), then ``=== system``, ``=== user``
and ``=== retry`` sections. Placeholders ``{base_text}``, ``{facts_json}``,
``{problems}`` and ``{previous}`` are substituted literally (no ``str.format``, so
braces in facts are harmless). A changed prompt gets a new version file; the version
and the file's hash are part of the caption cache key, so an edited prompt never serves
stale captions.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from pathlib import Path
from typing import Any

PROMPTS_DIR = Path(__file__).with_name("prompts")
#: which prompt each caption family uses
FAMILY_PROMPTS: dict[str, str] = {
    "retinalogos": "retinalogos",
    "unimed": "unimed",
    "ophora": "ophora",
    "medq_uni": "medq_uni",
    "imed": "generic",
    "generic": "generic",
}
Message = dict[str, str]


@dataclasses.dataclass(frozen=True)
class PromptTemplate:
    name: str
    version: str
    system: str
    user: str
    retry: str
    sha256: str

    @property
    def prompt_id(self) -> str:
        """``name.version``, recorded in provenance."""
        return f"{self.name}.{self.version}"


class PromptError(ValueError):
    """A prompt file that is missing or malformed; the message names the file."""


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", version)) or (0,)


def parse_prompt_file(path: Path) -> PromptTemplate:
    text = path.read_text(encoding="utf-8")
    header = dict(re.findall(r"^#\s*(name|version):\s*(\S+)\s*$", text, flags=re.MULTILINE))
    file_name, _, file_version = path.name.removesuffix(".txt").rpartition(".")
    if header.get("name") != file_name or header.get("version") != file_version:
        raise PromptError(
            f"{path}: header name/version {header} do not match the file name "
            f"(expected name {file_name!r}, version {file_version!r})"
        )
    sections: dict[str, list[str]] = {}
    current: str | None = None
    for line in text.splitlines():
        if m := re.match(r"^===\s*(\w+)\s*$", line):
            current = m.group(1)
            sections[current] = []
        elif current is not None:
            sections[current].append(line)
    missing = {"system", "user", "retry"} - set(sections)
    if missing:
        raise PromptError(f"{path}: missing sections {sorted(missing)}; expected '=== system', '=== user', '=== retry'")
    return PromptTemplate(
        name=file_name,
        version=file_version,
        system="\n".join(sections["system"]).strip(),
        user="\n".join(sections["user"]).strip(),
        retry="\n".join(sections["retry"]).strip(),
        sha256=hashlib.sha256(text.encode("utf-8")).hexdigest(),
    )


def load_prompt(family: str, version: str | None = None, prompts_dir: str | Path | None = None) -> PromptTemplate:
    """The prompt of ``family`` (newest version unless ``version`` is given)."""
    name = FAMILY_PROMPTS.get(family, family)
    folder = Path(prompts_dir) if prompts_dir else PROMPTS_DIR
    if version:
        path = folder / f"{name}.{version}.txt"
        if not path.exists():
            raise PromptError(f"no prompt file {path} for family {family!r}")
        return parse_prompt_file(path)
    candidates = sorted(folder.glob(f"{name}.v*.txt"), key=lambda p: _version_key(p.name))
    if not candidates:
        raise PromptError(f"no prompt files {name}.v*.txt in {folder} for family {family!r}")
    return parse_prompt_file(candidates[-1])


def _fill(template: str, **values: str) -> str:
    for key, value in values.items():
        template = template.replace("{" + key + "}", value)
    return template


def facts_for_prompt(facts: dict[str, Any]) -> str:
    """The facts as compact JSON, without empty keys (shorter prompts)."""
    kept = {k: v for k, v in facts.items() if v not in (None, [], {}, "")}
    return json.dumps(kept, ensure_ascii=False, sort_keys=True)


def build_messages(prompt: PromptTemplate, facts: dict[str, Any], base_text: str) -> list[Message]:
    """First attempt: system + user turn."""
    user = _fill(prompt.user, base_text=base_text, facts_json=facts_for_prompt(facts))
    return [{"role": "system", "content": prompt.system}, {"role": "user", "content": user}]


def build_retry_messages(
    prompt: PromptTemplate, facts: dict[str, Any], base_text: str, previous: str, problems: list[str]
) -> list[Message]:
    """Second attempt: the first turn, the rejected answer, and why it was rejected."""
    retry = _fill(prompt.retry, problems="; ".join(problems), previous=previous)
    return [
        *build_messages(prompt, facts, base_text),
        {"role": "assistant", "content": previous},
        {"role": "user", "content": retry},
    ]
