"""The repository stands alone (issue 10, item 14): no tracked file points outside it, and every
citation of a docs/compatibility.md section names one that exists."""

import pathlib
import re
import subprocess

ROOT = pathlib.Path(__file__).resolve().parent.parent
# Spelled in pieces so that this file does not mention them itself.
OUTSIDE = ["reference-sdk" + ".md", ".." + "/shared", "shared" + "/spec"]


def tracked_texts():
    names = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout.split(b"\0")
    for name in filter(None, names):
        path = ROOT / name.decode()
        if path.is_file():
            try:
                yield path, path.read_text(encoding="utf-8")
            except UnicodeDecodeError:
                continue


def test_no_tracked_file_points_outside_the_repository():
    offenders = ["%s mentions %s" % (path.relative_to(ROOT), word)
                 for path, text in tracked_texts() for word in OUTSIDE if word in text]
    assert offenders == []


def test_compatibility_citations_name_existing_sections():
    headings = set(re.findall(r"^#+ (.+?)\s*$", (ROOT / "docs" / "compatibility.md").read_text(), re.M))
    missing = []
    for path, text in tracked_texts():
        for cited in re.findall(r"docs/compatibility\.md, ((?:'[^'\n]+'|\"[^\"\n]+\")(?:, (?:'[^'\n]+'|\"[^\"\n]+\"))*)", text):
            for name in re.findall(r"'([^']+)'|\"([^\"]+)\"", cited):
                name = name[0] or name[1]
                if name not in headings:
                    missing.append("%s cites %r" % (path.relative_to(ROOT), name))
    assert missing == []
