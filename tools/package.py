"""Build dist/doubleword-batches.zip: the skill folder as it would be published (standard library only).

What is left out is defined once, in .clawhubignore (the same file ClawHub reads when publishing). The
developer README stays out; the package's README.md is tools/skill_README.md, written for skill users.
The zip is reproducible (sorted names, fixed timestamps and modes), and the build refuses a package whose
text mentions a file it does not contain, a make target, the emulator or the tests.

Usage: python3 tools/package.py [--out PATH]
"""

from __future__ import annotations

import argparse
import fnmatch
import re
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SKILL_NAME = "doubleword-batches"
SKILL_README = Path(__file__).resolve().parent / "skill_README.md"
FIXED_TIME = (1980, 1, 1, 0, 0, 0)  # the earliest time a zip can hold: same bytes on every build
TEXT_SUFFIXES = (".md", ".py", ".txt", ".json")

# Mentions of what the package does not ship (checked in every text file of the package).
_DEV_MENTIONS = re.compile(
    r"\bmake (?:help|install|test|lint|format|demo|serve|bench|soak|package|clean)\b"
    r"|\bemulator\b|\bpytest\b|\bconftest\b",
    re.IGNORECASE,
)
_PATH_MENTION = re.compile(r"(?<![\w./-])((?:scripts|references|tests|bench|demo|emulator|tools)/[\w./-]*\w)")
_MD_LINK = re.compile(r"\]\(([^)\s]+)\)")


def ignore_patterns(root: Path = ROOT) -> list[str]:
    lines = (root / ".clawhubignore").read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def is_ignored(relative: Path, patterns: list[str]) -> bool:
    """gitignore-style matching: `dir/` matches a folder anywhere, `name` a basename anywhere."""
    parts = relative.parts
    for pattern in patterns:
        if pattern.endswith("/"):
            if any(fnmatch.fnmatch(part, pattern[:-1]) for part in parts[:-1]):
                return True
        elif "/" in pattern:
            if fnmatch.fnmatch(relative.as_posix(), pattern.lstrip("/")):
                return True
        elif fnmatch.fnmatch(parts[-1], pattern):
            return True
    return False


def package_files(root: Path = ROOT) -> dict[str, bytes]:
    """Package path -> content, the developer README replaced by the skill users' one."""
    patterns = ignore_patterns(root)
    files: dict[str, bytes] = {}
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if path.is_file() and not is_ignored(relative, patterns):
            files[relative.as_posix()] = path.read_bytes()
    files["README.md"] = SKILL_README.read_bytes()
    return dict(sorted(files.items()))


def dangling_references(files: dict[str, bytes]) -> list[str]:
    """Every mention, in the package's text, of a file it lacks or of what only the repository has."""
    dirs = {str(Path(name).parent.as_posix()) for name in files} | {
        p.as_posix() for name in files for p in Path(name).parents
    }
    problems = []
    for name, data in files.items():
        if not name.endswith(TEXT_SUFFIXES):
            continue
        text = data.decode("utf-8", errors="replace")
        for number, line in enumerate(text.splitlines(), 1):
            where = f"{name}:{number}"
            for match in _DEV_MENTIONS.finditer(line):
                problems.append(f"{where}: mentions {match.group(0)!r}, which the package does not ship")
            for match in _PATH_MENTION.finditer(line):
                path = match.group(1).rstrip("/.")
                if path not in files and path not in dirs:
                    problems.append(f"{where}: refers to {path}, which is not in the package")
            if name.endswith(".md"):
                problems += _link_problems(where, name, line, files)
    return problems


def _link_problems(where: str, name: str, line: str, files: dict[str, bytes]) -> list[str]:
    problems = []
    for target in _MD_LINK.findall(line):
        if "://" in target or target.startswith("mailto:"):
            continue
        path, _, anchor = target.partition("#")
        resolved = (Path(name).parent / path).as_posix() if path else name
        resolved = resolved.removeprefix("./")
        if resolved not in files:
            problems.append(f"{where}: links to {target}, which is not in the package")
        elif anchor and anchor not in _anchors(files[resolved].decode("utf-8", errors="replace")):
            problems.append(f"{where}: links to {target}, but {resolved} has no such heading")
    return problems


def _anchors(markdown: str) -> set[str]:
    """GitHub-style heading anchors: lower case, punctuation dropped, spaces as hyphens."""
    anchors = set()
    for line in markdown.splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            anchors.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return anchors


def build(out: Path, files: dict[str, bytes] | None = None) -> list[str]:
    """Write the zip; the same inputs give the same bytes."""
    files = package_files() if files is None else files
    out.parent.mkdir(parents=True, exist_ok=True)
    names = []
    with zipfile.ZipFile(out, "w") as archive:
        for relative, data in files.items():
            name = f"{SKILL_NAME}/{relative}"
            info = zipfile.ZipInfo(name, date_time=FIXED_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            executable = relative.startswith("scripts/") and data.startswith(b"#!")
            info.external_attr = (0o100755 if executable else 0o100644) << 16
            info.create_system = 3  # unix, so the modes above are read back
            archive.writestr(info, data, compresslevel=9)
            names.append(name)
    return names


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=ROOT / "dist" / f"{SKILL_NAME}.zip")
    args = parser.parse_args(argv)
    files = package_files()
    problems = dangling_references(files)
    if problems:
        print("package refused: its text refers to what it does not contain:", file=sys.stderr)
        for problem in problems:
            print(f"  {problem}", file=sys.stderr)
        return 1
    names = build(args.out, files)
    print(f"wrote {args.out} ({len(names)} files)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
