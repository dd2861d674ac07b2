"""The documentation that is generated from the code is up to date."""

from pathlib import Path

from stemnmf.config import reference_markdown

ROOT = Path(__file__).resolve().parents[1]


def test_config_reference_is_current():
    text = (ROOT / "docs" / "config.md").read_text()
    assert text == reference_markdown(), "regenerate it: python -m stemnmf.config > docs/config.md"


def test_readme_starts_with_the_two_commands():
    text = (ROOT / "README.md").read_text()
    first_section = text.split("\n## ", 2)[1]
    assert first_section.startswith("Set-up")
    assert "make demo" in first_section and "make test" in first_section
