"""README.md's examples, for the tests that run them as printed (so they cannot rot)."""

from __future__ import annotations

import re

from service.testing import REPO_ROOT

README = REPO_ROOT / "README.md"


def readme_section(title: str) -> str:
    """The text of the ``## title`` section, up to the next ``## `` heading."""
    found = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", README.read_text(), flags=re.S | re.M)
    assert found, f"README.md has no section '## {title}'"
    return found.group(1)


def sh_blocks(title: str) -> list[str]:
    """The ```sh blocks of a section, as printed."""
    return re.findall(r"```sh\n(.*?)```", readme_section(title), flags=re.S)
