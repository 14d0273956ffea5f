"""Check the built book (run after `jupyter-book build`): exit 1 with a list of problems.

    python tests/check_book.py [_build/html] [--allow-incomplete]

* every page of _toc.yml was built (each notebook of the figures and tables in particular);
* every image a page references exists in the build;
* no page shows a Python traceback or an error output of a notebook cell;
* every notebook page shows at least one figure or table, and says which profile produced it
  (the book's default build shows the committed `paper` records);
* every notebook page says whether all its runs are in the records ("Complete: ..." or
  "Incomplete: N run(s) ... are not in the records yet", both written by `ifm.book.tables.caption` from
  the runner's list of missing runs): no page can hide missing runs;
* no page is incomplete, unless `--allow-incomplete` (a book built from partial records, which
  then lists each incomplete page and its count);
* a result page (a notebook) shows no code unless the reader opens it (every code cell's input is
  removed or inside a collapsed toggle);
* no page shows a warning (Python's `...Warning:` or a cell's stderr stream), nor a log (a cell's
  printed stream) the reader did not open;
* no page names a path of the building machine (its checkout, virtual environment, temporary,
  home or data directory), and no run record under `results/` holds an absolute path;
* every table sits in a box that scrolls sideways (a notebook output or a scrollable container),
  so a wide table is never cut, and no table cell is cut short (pandas ends a cut cell with "...").
"""
from __future__ import annotations

import json
import os
import re
import sys
import tempfile
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlparse

ROOT = Path(__file__).resolve().parents[1]
TRACEBACK_PATTERNS = [
    "Traceback (most recent call last)",
    "Traceback <span",                      # a traceback rendered by the ipythontb lexer
    'class="output traceback',
    'class="cell_output docutils container"><div class="output traceback',
    "highlight-ipythontb",
]
ERROR_NAMES = re.compile(r"\b(?:[A-Z][a-zA-Z]*Error|Exception)\b\s*</span>\s*(?:<span[^>]*>)?\s*Traceback")


SCROLLING = ("output", "pst-scrollable-table-container", "table-responsive")   # boxes the theme scrolls (overflow-x)
CUT_CELL = re.compile(r"[^<>]{0,40}\.\.\.\s*</t[dh]>")       # pandas' mark of a cell cut at max_colwidth
WARNING = re.compile(r"\b[A-Z]\w*Warning\b\s*:|class=\"output stderr")


class PageParser(HTMLParser):
    """Images, tables (and those outside any sideways-scrolling box), and code inputs and printed
    logs shown outside a collapsed toggle."""
    def __init__(self):
        super().__init__()
        self.images, self.tables, self.unscrolled_tables, self.visible_code, self.visible_logs = [], 0, 0, 0, 0
        self.stack = []          # (tag, classes) of the open elements

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        classes = set((attrs.get("class") or "").split())
        if tag == "img" and attrs.get("src"):
            self.images.append(attrs["src"])
        elif tag == "table":
            self.tables += 1
            if not any(c & set(SCROLLING) for _, c in self.stack):
                self.unscrolled_tables += 1
        folded = any(t == "details" for t, _ in self.stack)
        if "cell_input" in classes and not folded:
            self.visible_code += 1
        if {"output", "stream"} <= classes and not folded:
            self.visible_logs += 1
        if tag not in ("img", "br", "hr", "meta", "link", "input", "col", "source", "wbr"):
            self.stack.append((tag, classes))

    def handle_endtag(self, tag):
        for i in range(len(self.stack) - 1, -1, -1):      # close up to the matching open tag
            if self.stack[i][0] == tag:
                del self.stack[i:]
                break


def machine_paths(root: Path = ROOT) -> list[str]:
    """Absolute paths of the building machine that no page may show."""
    paths = {str(root.resolve()), sys.prefix, tempfile.gettempdir(), str(Path.home())}
    if os.environ.get("IFM_DATA_DIR"):
        paths.add(str(Path(os.environ["IFM_DATA_DIR"]).resolve()))
    return sorted(p for p in paths if p not in ("", "/"))


def records_with_paths(results: Path) -> list[str]:
    """Run records under `results` that hold an absolute path (of the machine that wrote them)."""
    bad = []
    for path in sorted(results.rglob("*.json")) if results.is_dir() else []:
        text = path.read_text(errors="replace")
        found = re.search(r'"(?:[a-z]+:)?(/(?:home|root|tmp|work|usr|opt|var|mnt|Users|private)/[^"]*)"', text)
        if found:
            bad.append(f"{path.relative_to(results.parent)}: names {found.group(1)}")
    return bad


def toc_files(toc_path: Path) -> list[str]:
    """Document names listed in _toc.yml (root and every `file:` entry), without suffix."""
    text = toc_path.read_text()
    names = re.findall(r"^\s*root:\s*(\S+)", text, re.M) + re.findall(r"^\s*-?\s*file:\s*(\S+)", text, re.M)
    return [re.sub(r"\.(md|ipynb)$", "", n) for n in names]


INCOMPLETE = re.compile(r"Incomplete:(?:\s*</strong>)?\s*(\d+) run")
COMPLETE = re.compile(r"Complete:(?:\s*</strong>)?\s*every run this page asks for is in the records")


def _reads_records(notebook: Path) -> bool:
    """Whether a notebook shows the book's runs (every one but a page that trains its own model on a
    file, marked {"ifm": {"records": false}} in its metadata: it has no profile and no records)."""
    try:
        meta = json.loads(notebook.read_text()).get("metadata", {})
    except (json.JSONDecodeError, AttributeError):
        return True
    return meta.get("ifm", {}).get("records", True) is not False


def check(build: Path, root: Path = ROOT, profile: str = "paper", allow_incomplete: bool = False,
          incomplete: list | None = None) -> list[str]:
    """The problems of a built book; the incomplete pages are appended to `incomplete`."""
    problems, incomplete = [], incomplete if incomplete is not None else []
    if not (build / "index.html").is_file():
        return [f"{build / 'index.html'} is missing: was the book built?"]
    for doc in toc_files(root / "_toc.yml"):
        page = build / f"{doc}.html"
        if not page.is_file():
            problems.append(f"page missing: {page}")
            continue
        html = page.read_text(encoding="utf-8", errors="replace")
        for pattern in TRACEBACK_PATTERNS:
            if pattern in html:
                problems.append(f"{page.relative_to(build)}: contains a traceback ({pattern!r})")
                break
        else:
            if ERROR_NAMES.search(html):
                problems.append(f"{page.relative_to(build)}: contains an error output")
        name = page.relative_to(build)
        if WARNING.search(html):
            problems.append(f"{name}: shows a warning ({WARNING.search(html).group(0)!r})")
        for path in machine_paths(root):
            if path in html:
                problems.append(f"{name}: names a path of the building machine ({path})")
        parser = PageParser()
        parser.feed(html)
        if parser.unscrolled_tables:
            problems.append(f"{name}: {parser.unscrolled_tables} table(s) outside a box that scrolls sideways")
        cut = CUT_CELL.findall(html)
        if cut:
            problems.append(f"{name}: {len(cut)} table cell(s) cut short, e.g. {cut[0]!r}")
        for src in parser.images:
            url = urlparse(src)
            if url.scheme in ("http", "https", "data") or src.startswith("//"):
                continue
            target = (page.parent / unquote(url.path)).resolve()
            if not target.is_file():
                problems.append(f"{page.relative_to(build)}: image {src} does not exist ({target})")
        is_notebook = (root / f"{doc}.ipynb").is_file()
        reads_records = is_notebook and _reads_records(root / f"{doc}.ipynb")
        if is_notebook and parser.visible_code:
            problems.append(f"{name}: shows {parser.visible_code} code cell(s) the reader did not open (tag them "
                            "hide-input or remove-input)")
        if parser.visible_logs:
            problems.append(f"{name}: shows {parser.visible_logs} printed log(s) the reader did not open (compute "
                            "in a hidden cell, or tag the cell hide-output)")
        if is_notebook:
            if not parser.images and not parser.tables:
                problems.append(f"{page.relative_to(build)}: a notebook page without any figure or table")
            if reads_records and not re.search(rf"profile\s*(?:<[^>]+>\s*)*{profile}\b", html):
                problems.append(f"{page.relative_to(build)}: does not say that profile {profile} produced it")
        missing = INCOMPLETE.search(html)
        if reads_records and not missing and not COMPLETE.search(html):
            problems.append(f"{page.relative_to(build)}: says neither that its runs are complete nor which are "
                            "missing (no 'Complete:' or 'Incomplete:' line from ifm.book.tables.caption)")
        if missing:
            incomplete.append(f"{page.relative_to(build)}: {missing.group(1)} run(s) missing")
            if not allow_incomplete:
                problems.append(f"{page.relative_to(build)}: {missing.group(1)} run(s) are not in the records "
                                f"(fill them with `python -m ifm reproduce --profile {profile}`)")
    problems += [f"record {line}" for line in records_with_paths(root / "results")]
    return problems


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    allow_incomplete = "--allow-incomplete" in argv
    paths = [a for a in argv if not a.startswith("--")]
    build = Path(paths[0]) if paths else ROOT / "_build" / "html"
    incomplete = []
    problems = check(build, allow_incomplete=allow_incomplete, incomplete=incomplete)
    pages = len(toc_files(ROOT / "_toc.yml"))
    if incomplete:
        print(f"{len(incomplete)} page(s) say that runs are missing from the records:")
        for line in incomplete:
            print("  - " + line)
    if problems:
        print(f"book check FAILED ({len(problems)} problem(s)) in {build}:")
        for p in problems:
            print("  - " + p)
        return 1
    print(f"book check passed: {pages} pages in {build}, every image present, no traceback")
    return 0


if __name__ == "__main__":
    sys.exit(main())
