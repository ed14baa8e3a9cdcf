"""Keep the docs true: SKILL.md frontmatter rules, its length, declared environment variables, every flag
the docs mention, and the published package's contents."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
import zipfile
from functools import cache
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
SKILL = ROOT / "SKILL.md"
SCRIPTS = ROOT / "scripts"
SKILL_NAME = "doubleword-batches"
ALLOWED_KEYS = {"name", "description", "license", "compatibility", "metadata", "allowed-tools"}


def _frontmatter() -> tuple[str, dict]:
    text = SKILL.read_text(encoding="utf-8")
    match = re.match(r"^---\n(.*?)\n---\n", text, re.S)
    assert match, "SKILL.md must start with YAML frontmatter between --- lines"
    return match.group(1), yaml.safe_load(match.group(1))


def command_scripts() -> list[str]:
    """The user-facing commands: scripts with a __main__ block."""
    return sorted(p.name for p in SCRIPTS.glob("*.py") if "__main__" in p.read_text(encoding="utf-8"))


@cache
def help_text(script: str) -> str:
    done = subprocess.run(
        [sys.executable, str(SCRIPTS / script), "--help"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


# --------------------------------------------------------------------------- frontmatter (Agent Skills rules)


def test_frontmatter_keys_and_name():
    _, meta = _frontmatter()
    assert set(meta) <= ALLOWED_KEYS, f"keys outside the spec: {set(meta) - ALLOWED_KEYS}"
    assert meta["name"] == SKILL_NAME
    assert re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", meta["name"]) and len(meta["name"]) <= 64


def test_optional_fields_rules():
    raw, meta = _frontmatter()
    assert isinstance(meta["compatibility"], str) and 1 <= len(meta["compatibility"]) <= 500
    assert isinstance(meta["license"], str) and (ROOT / "LICENSE").is_file()
    assert "<" not in raw and ">" not in raw, "no angle brackets anywhere in the frontmatter"
    assert "--" not in meta["name"] and not meta["name"].startswith("-")


def test_description_rules():
    _, meta = _frontmatter()
    description = meta["description"]
    assert isinstance(description, str) and 100 <= len(description) <= 1024
    assert "<" not in description and ">" not in description
    assert "Doubleword" in description and "batch" in description
    assert "Not for" in description  # says when not to use it


def test_metadata_is_block_yaml_with_version_and_declared_env():
    raw, meta = _frontmatter()
    assert not re.search(r"^\s*\w+:\s*[\{\[]", raw, re.M), "use block-style YAML, not flow mappings"
    metadata = meta["metadata"]
    assert isinstance(metadata["version"], str) and re.fullmatch(r"\d+\.\d+\.\d+", metadata["version"])
    openclaw = metadata["openclaw"]
    declared = {item["name"] for item in openclaw["envVars"]}
    assert openclaw["primaryEnv"] == "DOUBLEWORD_API_KEY"
    assert openclaw["requires"]["env"] == ["DOUBLEWORD_API_KEY"]
    # TERM only decides whether progress may use terminal escapes: the terminal's, not the skill's setting;
    # the CA bundles are requests' settings, read only to verify TLS as requests does (headstart.py).
    assert environment_variables_read() - {"TERM", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"} == declared
    for item in openclaw["envVars"]:
        assert set(item) <= {"name", "required", "description"} and item["description"]


def environment_variables_read() -> set[str]:
    """Every environment variable any script reads (literals and *_ENV constants passed to os.environ)."""
    names: set[str] = set()
    for path in SCRIPTS.rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        constants = {
            target.id: node.value.value
            for node in ast.walk(tree)
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant)
            for target in node.targets
            if isinstance(target, ast.Name) and isinstance(node.value.value, str)
        }
        for node in ast.walk(tree):
            arg = None
            if isinstance(node, ast.Call) and ast.unparse(node.func) in (
                "os.environ.get",
                "os.getenv",
                "os.environ.pop",
                "environ.get",
            ):
                arg = node.args[0] if node.args else None
            elif isinstance(node, ast.Subscript) and ast.unparse(node.value) in ("os.environ", "environ"):
                arg = node.slice
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                names.add(arg.value)
            elif isinstance(arg, ast.Name) and arg.id in constants:
                names.add(constants[arg.id])
            elif isinstance(arg, ast.Name):
                imported = _imported_constant(arg.id)
                if imported:
                    names.add(imported)
    return names


def _imported_constant(name: str) -> str | None:
    for path in SCRIPTS.glob("*.py"):
        match = re.search(rf'^{name}\s*=\s*"([A-Z0-9_]+)"', path.read_text(encoding="utf-8"), re.M)
        if match:
            return match.group(1)
    return None


def test_skill_md_is_short_and_points_to_the_reference():
    text = SKILL.read_text(encoding="utf-8")
    assert text.count("\n") < 500
    assert "references/api_reference.md" in text


# --------------------------------------------------------------------------- docs match the code


def _documented_invocations(path: Path) -> list[tuple[str, list[str]]]:
    """(script, flags) for every `scripts/NAME.py ...` invocation in a doc, code blocks and inline."""
    text = path.read_text(encoding="utf-8")
    found = []
    for match in re.finditer(r"scripts/([a-z_]+\.py)([^\n`]*)", text):
        flags = re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", match.group(2))
        found.append((match.group(1), flags))
    return found


@pytest.mark.parametrize("doc", ["SKILL.md", "README.md", "tools/skill_README.md"])
def test_every_documented_flag_exists_in_the_scripts_help(doc):
    invocations = _documented_invocations(ROOT / doc)
    assert invocations, f"{doc} shows no commands"
    for script, flags in invocations:
        assert (SCRIPTS / script).exists(), f"{doc} mentions scripts/{script}, which does not exist"
        for flag in flags:
            assert re.search(rf"(?<![\w-]){re.escape(flag)}\b", help_text(script)), (
                f"{doc}: {script} has no flag {flag}"
            )


def test_every_flag_in_skill_prose_exists_somewhere():
    text = SKILL.read_text(encoding="utf-8")
    body = text.split("\n---\n", 1)[1]
    all_help = "\n".join(help_text(script) for script in command_scripts())
    for flag in set(re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", body)):
        assert flag in all_help, f"SKILL.md mentions {flag}, which no script accepts"


def test_every_command_has_help_with_examples_and_exit_codes():
    expected = {
        "create_batch_file.py",
        "validate_batch_file.py",
        "submit.py",
        "poll.py",
        "fetch_results.py",
        "list_batches.py",
        "cancel_batch.py",
    }
    assert expected <= set(command_scripts())
    for script in expected:
        text = help_text(script)
        assert "examples:" in text and "exit codes:" in text, script


def test_reference_lists_only_schema_files_that_exist():
    text = (ROOT / "references" / "api_reference.md").read_text(encoding="utf-8")
    listed = set(re.findall(r"schemas/([a-z_.]+\.schema\.json)", text))
    existing = {p.name for p in (ROOT / "references" / "schemas").glob("*.schema.json")}
    assert listed and listed <= existing, f"missing: {listed - existing}"
    assert existing <= listed, f"undocumented schemas: {existing - listed}"


def test_readme_layout_names_every_module_of_the_package():
    """README's layout row for scripts/doubleword/ names each module and sub-package there is."""
    row = next(
        line
        for line in (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
        if line.startswith("| `scripts/doubleword/` |")
    )
    named = set(re.findall(r"`([a-z_]+)/?`", row))
    package = SCRIPTS / "doubleword"
    modules = {p.stem for p in package.glob("*.py") if p.stem != "__init__"}
    modules |= {p.name for p in package.iterdir() if (p / "__init__.py").is_file()}
    assert modules <= named, f"README's layout does not name: {sorted(modules - named)}"
    assert named - {"scripts"} <= modules, (
        f"README's layout names what is not there: {sorted(named - modules)}"
    )


def test_readmes_python_example_writes_a_valid_batch_file(tmp_path):
    """README's "Building requests in Python" block runs as shown (scripts/ on sys.path), writes a file
    validate_batch_file.py accepts, and a bad request raises the InputError it names."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert len(blocks) == 1, "README shows one Python example"
    code = blocks[0].replace('sys.path.insert(0, "scripts")', f"sys.path.insert(0, {str(SCRIPTS)!r})")
    code += (
        "\nimport json; print(json.dumps(shards))"
        "\nfrom doubleword.errors import InputError"
        "\ntry:\n    write_batch([make_request('x', model='m', custom_id='a', temperature=5)], 'bad.jsonl')"
        "\nexcept InputError as exc:\n    print('refused:', exc)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    shards_line, refused = done.stdout.splitlines()
    assert json.loads(shards_line) == [
        {"path": "jobs.jsonl", "requests": 2, "bytes": (tmp_path / "jobs.jsonl").stat().st_size}
    ]
    assert (
        refused.startswith("refused: ") and "temperature" in refused and not (tmp_path / "bad.jsonl").exists()
    )
    check = subprocess.run(
        [sys.executable, str(SCRIPTS / "validate_batch_file.py"), "jobs.jsonl"],
        cwd=tmp_path,
        capture_output=True,
    )
    assert check.returncode == 0, check.stdout


# --------------------------------------------------------------------------- the published package


def test_package_holds_the_skill_and_nothing_else(tmp_path):
    out = tmp_path / "skill.zip"
    subprocess.run([sys.executable, str(ROOT / "tools" / "package.py"), "--out", str(out)], check=True)
    names = zipfile.ZipFile(out).namelist()
    assert all(name.startswith(f"{SKILL_NAME}/") for name in names)
    relative = {name.split("/", 1)[1] for name in names}
    assert {"SKILL.md", "references/api_reference.md", "requirements.txt", "LICENSE"} <= relative
    assert {f"scripts/{name}" for name in command_scripts()} <= relative
    schemas = {f"references/schemas/{p.name}" for p in (ROOT / "references" / "schemas").glob("*.json")}
    assert schemas and schemas <= relative
    for banned in ("tests/", "emulator/", ".venv/", "__pycache__", ".pyc", "bench/", "Makefile", ".git/"):
        assert not any(banned in name for name in relative), banned

    # The extracted skill works on its own: its scripts find their schemas through __file__.
    with zipfile.ZipFile(out) as archive:
        archive.extractall(tmp_path / "x")
    skill = tmp_path / "x" / SKILL_NAME
    batch = tmp_path / "b.jsonl"
    done = subprocess.run(
        [
            sys.executable,
            str(skill / "scripts" / "create_batch_file.py"),
            "--model",
            "Qwen/Qwen3.5-9B",
            "--prompt",
            "hi",
            "-o",
            str(batch),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    done = subprocess.run(
        [sys.executable, str(skill / "scripts" / "validate_batch_file.py"), str(batch)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stdout
