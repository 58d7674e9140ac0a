"""Sphinx extension of the connsim site: commands executed while the site builds.

``connsim-run``
    Runs shell commands (usually ``connsim ...``) one after the other and shows each with its
    real output. A command that exits with another status than the expected one (0 unless
    ``:returncode:`` says otherwise) stops the build with an error, not a warning, so a page can
    never show a command that no longer works.

``connsim-python``
    Runs a Python snippet the same way and shows the code, then its output.

``connsim-file``
    Writes its content to a file of the page's working folder (a study file, an architecture
    spec) and shows it.

Only standard output is shown (progress lines on standard error would make pages differ from
build to build); ``:stderr:`` adds standard error after it, for commands whose point is a
message there. A failing command's error shows both.

All commands of one page share a working folder, emptied when the page is read, so a page can
write a masks file in one block and measure it in the next. Files that a command writes can be
shown with ``:image: FILE``. The folder lives under the build's doctree folder, never in the
source tree.

The extension also gives the generated tables of ``docs/figures/*.md`` (written by the
analysis scripts, some without a title) a title when they are read, so that they can be pages.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

from docutils import nodes
from docutils.parsers.rst import directives
from sphinx.errors import ExtensionError
from sphinx.util import logging
from sphinx.util.docutils import SphinxDirective

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 300  # seconds per command


def _commands(lines: list[str]) -> list[str]:
    """Join continuation lines (a trailing backslash) into one command each; drop blank lines."""
    out, current = [], []
    for line in lines:
        if not line.strip() and not current:
            continue
        current.append(line)
        if not line.rstrip().endswith("\\"):
            out.append("\n".join(current))
            current = []
    if current:
        out.append("\n".join(current))
    return out


def _environment() -> dict:
    env = dict(os.environ)
    # the connsim of the Python that builds the docs, whatever PATH says
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    env["MPLBACKEND"] = "Agg"
    env["PYTHONUNBUFFERED"] = "1"
    env["COLUMNS"] = "100"  # argparse wraps --help to this width
    return env


class _Run(SphinxDirective):
    has_content = True
    option_spec = {
        "returncode": directives.nonnegative_int,
        "hide-output": directives.flag,
        "max-lines": directives.positive_int,
        "timeout": directives.positive_int,
        "image": directives.unchanged,
        "alt": directives.unchanged,
        "stderr": directives.flag,
    }

    def workdir(self) -> str:
        """The page's working folder, emptied the first time a page asks for it in a read."""
        root = os.path.join(self.env.doctreedir, "connsim-run")
        path = os.path.join(root, self.env.docname.replace("/", os.sep))
        if not self.env.temp_data.get("connsim_run_ready"):
            shutil.rmtree(path, ignore_errors=True)
            os.makedirs(path)
            self.env.temp_data["connsim_run_ready"] = True
        return path

    def execute(self, argv: list[str], shown: str, cwd: str) -> str:
        """Run ``argv`` in ``cwd``; its output, or an ExtensionError naming the page and line."""
        timeout = self.options.get("timeout", DEFAULT_TIMEOUT)
        expected = self.options.get("returncode", 0)
        where = f"{self.env.docname}:{self.lineno}"
        start = time.perf_counter()
        try:
            proc = subprocess.run(argv, cwd=cwd, env=_environment(), capture_output=True,
                                  text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise ExtensionError(f"{where}: command ran past {timeout} s:\n{shown}") from None
        seconds = time.perf_counter() - start
        logger.info(f"[connsim-run] {where}: {seconds:.1f} s: {shown.splitlines()[0][:80]}")
        if proc.returncode != expected:
            raise ExtensionError(
                f"{where}: command exited with status {proc.returncode} (expected {expected}):\n"
                f"{shown}\n--- standard output ---\n{proc.stdout}"
                f"--- standard error ---\n{proc.stderr}")
        output = proc.stdout
        if "stderr" in self.options and proc.stderr:
            output = output.rstrip("\n") + "\n" + proc.stderr
        return output.rstrip("\n")

    def clip(self, output: str) -> str:
        limit = self.options.get("max-lines")
        lines = output.splitlines()
        if limit is None or len(lines) <= limit:
            return output
        return "\n".join(lines[:limit] + [f"... ({len(lines) - limit} more lines)"])

    def image_nodes(self, cwd: str) -> list[nodes.Node]:
        name = self.options.get("image")
        if not name:
            return []
        path = os.path.join(cwd, name)
        if not os.path.isfile(path) or os.path.getsize(path) == 0:
            raise ExtensionError(f"{self.env.docname}:{self.lineno}: the commands did not "
                                 f"write {name!r}")
        # an absolute URI relative to the source folder: Sphinx copies the file into _images
        uri = "/" + os.path.relpath(path, self.env.srcdir).replace(os.sep, "/")
        node = nodes.image(uri=uri, alt=self.options.get("alt", name))
        node["candidates"] = {"*": os.path.relpath(path, self.env.srcdir)}
        self.env.note_dependency(path)
        return [node]


class RunCommands(_Run):
    """``connsim-run``: shell commands with their output."""

    def run(self):
        """Run each command in the page's folder; one console block, then any image."""
        cwd = self.workdir()
        shown = []
        for command in _commands(list(self.content)):
            if command.lstrip().startswith("#"):
                shown.append(command)
                continue
            output = self.execute(["bash", "-c", command], command, cwd)
            shown.append(f"$ {command}")
            if output and "hide-output" not in self.options:
                shown.append(self.clip(output))
        block = nodes.literal_block("\n".join(shown), "\n".join(shown))
        block["language"] = "console"
        self.set_source_info(block)
        return [block] + self.image_nodes(cwd)


class RunPython(_Run):
    """``connsim-python``: a Python snippet, then its output."""

    def run(self):
        """Run the snippet as a script in the page's folder; the code, then its output."""
        cwd = self.workdir()
        code = "\n".join(self.content)
        script = os.path.join(cwd, f"snippet_{self.lineno}.py")
        with open(script, "w") as f:
            f.write(code + "\n")
        output = self.execute([sys.executable, script], code, cwd)
        source = nodes.literal_block(code, code)
        source["language"] = "python"
        self.set_source_info(source)
        out = [source]
        if output and "hide-output" not in self.options:
            text = self.clip(output)
            result = nodes.literal_block(text, text)
            result["language"] = "text"
            out.append(nodes.paragraph("", "Output:"))
            out.append(result)
        return out + self.image_nodes(cwd)


class WriteFile(_Run):
    """``connsim-file NAME``: write the content to ``NAME`` in the page's folder and show it."""

    required_arguments = 1
    option_spec = {"language": directives.unchanged}

    def run(self):
        """Write the file and show its name and content."""
        name = self.arguments[0]
        if os.path.isabs(name) or ".." in name.split("/"):
            raise ExtensionError(f"{self.env.docname}:{self.lineno}: connsim-file writes inside "
                                 f"the page's folder only, got {name!r}")
        text = "\n".join(self.content) + "\n"
        path = os.path.join(self.workdir(), name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(text)
        block = nodes.literal_block(text, text)
        block["language"] = self.options.get("language", os.path.splitext(name)[1][1:] or "text")
        self.set_source_info(block)
        caption = nodes.paragraph("", "", nodes.literal(name, name))
        return [caption, block]


def _title_generated_tables(app, docname: str, source: list[str]) -> None:
    """Give each generated table of ``figures/`` a title (the analysis scripts write none, or
    start below the first level), so that the measured tables can be pages of the site."""
    if not docname.startswith("figures/"):
        return
    text = source[0]
    stem = docname.split("/", 1)[1]
    lines = text.splitlines()
    # the highest heading level present is shifted to level 2 under the added title
    levels = [len(line) - len(line.lstrip("#")) for line in lines
              if line.startswith("#") and line.lstrip("#").startswith(" ")]
    shift = (min(levels) - 2) if levels else 0
    if shift:
        lines = [("#" * (len(line) - len(line.lstrip("#")) - shift) + line.lstrip("#"))
                 if line.startswith("#") and line.lstrip("#").startswith(" ") else line
                 for line in lines]
    title = f"# Measured: {stem.replace('_', ' ')}\n\n"
    note = ("Generated by the scripts under `analysis/` (see the topic pages that cite it); "
            "the numbers are measurements, kept as written.\n\n")
    source[0] = title + note + "\n".join(lines) + "\n"


def setup(app):
    """Register the directives and the title hook."""
    app.add_directive("connsim-run", RunCommands)
    app.add_directive("connsim-python", RunPython)
    app.add_directive("connsim-file", WriteFile)
    app.connect("source-read", _title_generated_tables)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}

