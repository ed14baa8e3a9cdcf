"""Build dist/doubleword-batches.zip: the skill folder as it would be published.

What is left out is defined once, in .clawhubignore (the same file ClawHub reads when publishing).
Usage: python tools/package.py [--out PATH]
"""

from __future__ import annotations

import argparse
import fnmatch
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SKILL_NAME = "doubleword-batches"


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


def package_files(root: Path = ROOT) -> list[Path]:
    patterns = ignore_patterns(root)
    files = []
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if path.is_file() and not is_ignored(relative, patterns):
            files.append(relative)
    return files


def build(out: Path) -> list[str]:
    out.parent.mkdir(parents=True, exist_ok=True)
    names = []
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for relative in package_files():
            name = f"{SKILL_NAME}/{relative.as_posix()}"
            archive.write(ROOT / relative, name)
            names.append(name)
    return names


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=ROOT / "dist" / f"{SKILL_NAME}.zip")
    args = parser.parse_args(argv)
    names = build(args.out)
    print(f"wrote {args.out} ({len(names)} files)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
