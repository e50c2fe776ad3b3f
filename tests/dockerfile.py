"""Reading the Dockerfile and .dockerignore as Docker does, for tests on a machine without a Docker engine.

``parse_dockerfile`` splits the file into stages of instructions (continuation lines joined, comments
dropped); ``build_context`` lists the files .dockerignore lets into the build context.
"""

from __future__ import annotations

import json
import os
import posixpath
import re
import shlex
import shutil
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Instruction:
    keyword: str  # upper case: FROM, RUN, COPY...
    arguments: str  # the rest of the line, continuations joined

    def exec_form(self) -> list[str]:
        """The JSON array of CMD / ENTRYPOINT / RUN in exec form (ValueError for the shell form)."""
        value = json.loads(self.arguments)
        if not (isinstance(value, list) and all(isinstance(item, str) for item in value)):
            raise ValueError(f"{self.keyword} {self.arguments}: not a JSON array of strings")
        return value

    def flags_and_words(self) -> tuple[dict[str, str], list[str]]:
        """``--name=value`` options and the remaining words (COPY --chown=... src dst)."""
        flags, words = {}, []
        for word in shlex.split(self.arguments):
            if word.startswith("--") and not words:
                name, _, value = word[2:].partition("=")
                flags[name] = value
            else:
                words.append(word)
        return flags, words


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def last(self, keyword: str) -> Instruction | None:
        found = self.all(keyword)
        return found[-1] if found else None

    def env(self) -> dict[str, str]:
        """ENV key=value pairs in order (later ones win)."""
        values = {}
        for instruction in self.all("ENV"):
            for word in shlex.split(instruction.arguments):
                key, sep, value = word.partition("=")
                if not sep:
                    raise ValueError(f"ENV {instruction.arguments}: use the key=value form")
                values[key] = value
        return values

    def workdir(self) -> str:
        found = self.last("WORKDIR")
        return found.arguments if found else "/"

    def copies_from_context(self) -> list[tuple[str, str]]:
        """``(source, absolute destination)`` of each COPY that reads the build context (not another stage)."""
        pairs, workdir = [], "/"
        for instruction in self.instructions:
            if instruction.keyword == "WORKDIR":
                workdir = posixpath.join(workdir, instruction.arguments)
            if instruction.keyword != "COPY":
                continue
            flags, words = instruction.flags_and_words()
            if "from" in flags:
                continue
            *sources, destination = words
            directory = destination.endswith("/") or len(sources) > 1 or destination in (".", "./")
            destination = posixpath.normpath(posixpath.join(workdir, destination)) + ("/" if directory else "")
            pairs += [(source, destination) for source in sources]
        return pairs


def copy_from_context(context: Path, files: list[str], source: str, destination: str, root: Path) -> list[Path]:
    """Do what ``COPY source destination`` does with the context's ``files``, under ``root`` instead of /.

    A directory source copies its contents; a file (or each file a glob matches) lands in ``destination``
    when that ends with '/', or becomes it otherwise. Returns the files written.
    """
    source = source.strip("/") if source not in (".", "./") else ""
    regex = _pattern_regex(source)
    written = []
    for relative in files:
        if source and relative.startswith(source + "/"):
            target = root / destination.lstrip("/") / relative[len(source) + 1 :]
        elif not source:
            target = root / destination.lstrip("/") / relative
        elif regex.match(relative):
            name = relative.rsplit("/", 1)[-1]
            target = root / destination.lstrip("/") / name if destination.endswith("/") else root / destination[1:]
        else:
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(context / relative, target)
        written.append(target)
    if not written:
        raise FileNotFoundError(f"COPY {source} {destination}: no file of the build context matches")
    return written


def parse_dockerfile(path: Path) -> list[Stage]:
    lines, pending = [], ""
    for raw in path.read_text().splitlines():
        stripped = raw.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):  # a comment inside a continued instruction
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        lines.append(pending + stripped)
        pending = ""
    stages: list[Stage] = []
    for line in lines:
        keyword, _, arguments = line.partition(" ")
        instruction = Instruction(keyword.upper(), arguments.strip())
        if instruction.keyword == "FROM":
            words = instruction.arguments.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(words[0], name))
        elif stages:
            stages[-1].instructions.append(instruction)
    return stages


def _pattern_regex(pattern: str) -> re.Pattern:
    # Docker's matching: '*' and '?' stay within one path segment, '**' crosses any number of them.
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out + r"\Z")


def build_context(directory: Path, ignore_file: str = ".dockerignore") -> list[str]:
    """Relative paths of the files .dockerignore lets into the build context (the last matching rule wins;
    a rule matching a directory applies to everything under it)."""
    rules, reinclusions = [], []
    for line in (directory / ignore_file).read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        pattern = line.lstrip("!").strip("/")
        rules.append((negated, _pattern_regex(pattern)))
        if negated:
            reinclusions.append([_pattern_regex(segment) for segment in pattern.split("/")])

    def may_reinclude_below(parts: list[str]) -> bool:
        # Whether some '!' rule could match a file under this excluded directory; if none can, the walk
        # skips it (.venv and .git hold tens of thousands of files).
        for segments in reinclusions:
            if len(segments) > len(parts) and all(
                regex.pattern.startswith("(?:.*/)?") or regex.pattern.startswith(".*") or regex.match(part)
                for regex, part in zip(segments, parts)
            ):
                return True
        return False

    def excluded(relative: str) -> bool:
        parts = relative.split("/")
        prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
        verdict = False
        for negated, regex in rules:
            if any(regex.match(prefix) for prefix in prefixes):
                verdict = not negated
        return verdict

    files = []
    for root, dirs, names in os.walk(directory):
        base = Path(root).relative_to(directory).as_posix()
        prefix = "" if base == "." else base + "/"
        dirs[:] = [d for d in dirs if not excluded(prefix + d) or may_reinclude_below((prefix + d).split("/"))]
        files += [prefix + name for name in names if not excluded(prefix + name)]
    return sorted(files)
