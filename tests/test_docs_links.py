"""Every relative link in the Markdown a user reads points at a file of the repository."""
import glob
import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = sorted(
    os.path.relpath(p, ROOT)
    for pattern in ("README.md", "docs/*.md", "projects/*/README.md", "configs/**/*.md", "benchmarks/**/*.md")
    for p in glob.glob(os.path.join(ROOT, pattern), recursive=True)
)
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def relative_links(text):
    return [t for t in LINK.findall(text) if not re.match(r"[a-z]+:", t)]


def test_the_link_pattern_finds_relative_targets_only():
    text = "[a](docs/x.md) [b](../y.png#part) [c](https://e.org/z) [d](mailto:q@e.org) [e](#anchor)"
    assert relative_links(text) == ["docs/x.md", "../y.png"]


@pytest.mark.parametrize("doc", DOCS)
def test_relative_links_resolve(doc):
    with open(os.path.join(ROOT, doc), encoding="utf-8") as f:
        text = f.read()
    missing = [t for t in relative_links(text)
               if not os.path.exists(os.path.normpath(os.path.join(ROOT, os.path.dirname(doc), t)))]
    assert not missing, f"{doc} links to missing files: {missing}"
