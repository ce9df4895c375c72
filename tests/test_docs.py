"""The documents that can drift from the code: the CLI reference, the README's set-up commands
(which .ci/run runs) and the links between documents."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", ROOT / "CHANGELOG.md", *ROOT.glob("docs/**/*.md"),
        *ROOT.glob("models/*/MODEL_CARD.md")]  # fmt: skip


def _make_cli_md():
    spec = importlib.util.spec_from_file_location("make_cli_md", ROOT / "docs" / "make_cli_md.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cli_reference_matches_the_commands():
    make = _make_cli_md()
    written = make.CLI_MD.read_text(encoding="utf-8")
    assert written == make.render(), (
        "docs/CLI.md disagrees with the click commands: run `python docs/make_cli_md.py`"
    )


def test_cli_reference_lists_every_flag():
    """The renderer itself must not drop options: every flag of every command is in the file."""
    make = _make_cli_md()
    text = make.CLI_MD.read_text(encoding="utf-8")
    for name, command in make._commands():
        commands = [command]
        commands += list(getattr(command, "commands", {}).values())
        for cmd in commands:
            for param in cmd.params:
                for flag in param.opts + param.secondary_opts:
                    if flag.startswith("-"):
                        assert flag in text, f"{name} {cmd.name}: {flag} missing from docs/CLI.md"


def test_readme_setup_commands_are_what_ci_runs():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    test_command = "pip install -e '.[train,test]' && pytest"
    assert test_command in readme and test_command in ci
    assert "pip install . && bird-gen --n 64 -o birds.png" in readme


def test_readme_stays_a_short_hub():
    assert len((ROOT / "README.md").read_text(encoding="utf-8").splitlines()) <= 200


def test_relative_links_point_at_files():
    link = re.compile(r"\]\(([^)#\s]+)[^)]*\)|src=\"([^\"]+)\"")
    broken = []
    for doc in DOCS:
        for match in link.finditer(doc.read_text(encoding="utf-8")):
            target = match.group(1) or match.group(2)
            if "://" in target:
                continue
            if not (doc.parent / target).exists():
                broken.append(f"{doc.relative_to(ROOT)}: {target}")
    assert len(DOCS) >= 8 and not broken, broken


def test_user_docs_name_no_machine_paths():
    """Commands in user documents use what a user has, not the training machine's folders."""
    for doc in DOCS:
        assert "shared/data" not in doc.read_text(encoding="utf-8"), doc


def test_every_file_of_a_shipped_model_is_in_the_package_with_its_card():
    """A pip install carries each model's graphs, manifest and prior, and its card: the card
    holds the weights' terms of use, which must travel with them."""
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    line = re.search(r'^"birdvae\.models" = \[(.*)\]$', text, re.M)
    assert line is not None, "pyproject.toml no longer lists the models' package data"
    patterns = re.findall(r'"([^"]+)"', line.group(1))
    shipped = [path for path in ROOT.glob("models/*/*") if path.is_file()]
    assert {path.name for path in shipped} >= {"MODEL_CARD.md", "manifest.json"}
    relative = [path.relative_to(ROOT / "models") for path in shipped]
    missing = [str(path) for path in relative if not any(path.match(p) for p in patterns)]
    assert missing == [], f"not in the package: {missing}"
    assert "MIT License" in (ROOT / "LICENSE").read_text(encoding="utf-8")
