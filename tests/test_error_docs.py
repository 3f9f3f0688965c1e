"""docs/errors.md and the code agree: every documented error line is one chargen can print, and every
user error chargen raises has a documented example.

The code's side is read with `ast`: each `UserError(...)`, `WriteFailed(...)` or `CommandError(...)` call in
chargen/ gives a *template*, its message as a sequence of literal text and formatted values (wildcards).
Implicitly joined strings are one f-string, `+` joins, `a if c else b` gives one template per branch.

Some messages are composed in two places: the caller catches an error `e` and raises a new one around it
(`f"{e}; the last good checkpoint is kept"`, `f"line {number}: {e}"`). A formatted `{e}` whose name is bound by
an enclosing `except ... as e` is a *slot*: it matches any text, or the message of another template (one
wrapped in another, at most twice), or `...` where the docs elide a message they show elsewhere.

A documented message is explained by the most specific match (the most literal text) among the templates and
their compositions, and that match must hold at least MIN_TEXT characters of literal text: a template such as
`f"{e}; {kept}"` says too little to vouch for a line by itself. The templates in that match count as
documented. Usage errors that argparse prints (`chargen train: error: argument --x: ...`) are checked by
running the option and value of the row's command through the real parser.
"""
from __future__ import annotations

import argparse
import ast
import contextlib
import io
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest

from chargen.cli import build_parser

REPO = Path(__file__).resolve().parent.parent
DOCS = REPO / "docs" / "errors.md"
ERROR_CLASSES = ("UserError", "WriteFailed", "CommandError")
MIN_TEXT = 10        # literal characters a match needs to vouch for a documented line
MAX_NESTING = 2      # templates wrapped inside another template, at most this deep
ELISION = "..."      # what the docs write for a wrapped message shown in full elsewhere

WILDCARD = object()  # a formatted value: any text
SLOT = object()      # a formatted caught exception: any text, or another template's message

Part = object        # a literal str, WILDCARD or SLOT


@dataclass(frozen=True)
class Template:
    """One message a raise site can produce."""
    where: str                   # "chargen/file.py:LINE"
    parts: tuple[Part, ...]

    @property
    def literal(self) -> int:
        return sum(len(p) for p in self.parts if isinstance(p, str))

    def shown(self) -> str:
        """The message with its formatted values written as {…}."""
        return "".join(p if isinstance(p, str) else "{…}" for p in self.parts)


@dataclass(frozen=True)
class Candidate:
    """A template, or a template with others in its slot: a regex, its literal text, the templates it uses."""
    regex: re.Pattern
    literal: int
    needles: tuple[str, ...]     # literal pieces the message must contain (a cheap filter before the regex)
    uses: frozenset[str]         # Template.where of every template in it


@dataclass(frozen=True)
class DocMessage:
    line: int                    # line in docs/errors.md
    prog: str                    # "chargen", or "chargen train" and so on for argparse's usage errors
    text: str                    # what follows "PROG: error: "
    row: str                     # the whole table row, for the command that produced it


# -- the code's side ----------------------------------------------------------------------------------

def message_parts(expr: ast.expr, caught: set[str]) -> list[list[Part]]:
    """The possible messages of an expression, each as a list of parts (several for `a if c else b`)."""
    if isinstance(expr, ast.Constant) and isinstance(expr.value, str):
        return [[expr.value]]
    if isinstance(expr, ast.JoinedStr):
        parts: list[Part] = []
        for value in expr.values:
            if isinstance(value, ast.Constant):
                parts.append(value.value)
            elif isinstance(value.value, ast.Name) and value.value.id in caught and value.conversion == -1:
                parts.append(SLOT)
            else:
                parts.append(WILDCARD)
        return [parts]
    if isinstance(expr, ast.BinOp) and isinstance(expr.op, ast.Add):
        rights = message_parts(expr.right, caught)
        return [left + right for left in message_parts(expr.left, caught) for right in rights]
    if isinstance(expr, ast.IfExp):
        return message_parts(expr.body, caught) + message_parts(expr.orelse, caught)
    if isinstance(expr, ast.Name) and expr.id in caught:
        return [[SLOT]]
    return [[WILDCARD]]


def _merged(parts: list[Part]) -> tuple[Part, ...]:
    """Adjacent literals joined, empty ones dropped."""
    out: list[Part] = []
    for part in parts:
        if isinstance(part, str) and out and isinstance(out[-1], str):
            out[-1] += part
        elif part != "":
            out.append(part)
    return tuple(out)


def _caught_names(tree: ast.AST) -> dict[int, set[str]]:
    """For every call inside an `except ... as NAME` handler: the names of the exceptions caught around it."""
    names: dict[int, set[str]] = {}
    for handler in ast.walk(tree):
        if isinstance(handler, ast.ExceptHandler) and handler.name:
            for statement in handler.body:
                for node in ast.walk(statement):
                    if isinstance(node, ast.Call):
                        names.setdefault(id(node), set()).add(handler.name)
    return names


def code_templates(package: Path = REPO / "chargen") -> list[Template]:
    """Every message template of a user-error call in the package."""
    templates = []
    for path in sorted(package.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        caught = _caught_names(tree)
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Call) and node.args):
                continue
            name = node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", None)
            if name in ERROR_CLASSES:
                where = f"{path.relative_to(REPO)}:{node.lineno}"
                for parts in message_parts(node.args[0], caught.get(id(node), set())):
                    templates.append(Template(where, _merged(parts)))
    return templates


def _pattern(parts: tuple[Part, ...], slot: str) -> str:
    return "".join(re.escape(p) if isinstance(p, str) else (slot if p is SLOT else ".*?") for p in parts)


def candidates(templates: list[Template]) -> list[Candidate]:
    """The templates, and the wrappers (templates with a slot) filled with `...` or with other templates."""
    def make(pattern: str, literal: int, needles: tuple[str, ...], uses: frozenset[str]) -> Candidate:
        return Candidate(re.compile(pattern, re.S), literal, needles, uses)

    def needles_of(t: Template) -> tuple[str, ...]:
        return tuple(p for p in t.parts if isinstance(p, str) and len(p) >= 3)

    level = [(_pattern(t.parts, ".*?"), t.literal, needles_of(t), frozenset({t.where})) for t in templates]
    found = [make(*c) for c in level]
    wrappers = [t for t in templates if SLOT in t.parts]
    for t in wrappers:
        found.append(make(_pattern(t.parts, re.escape(ELISION)), t.literal + len(ELISION), needles_of(t),
                          frozenset({t.where})))
    for _ in range(MAX_NESTING):
        level = [(_pattern(w.parts, f"(?:{pattern})"), w.literal + literal, needles_of(w) + needles,
                  uses | {w.where})
                 for w in wrappers for pattern, literal, needles, uses in level if w.where not in uses]
        found += [make(*c) for c in level]
    return found


def explain(message: str, found: list[Candidate]) -> frozenset[str]:
    """The templates of the most specific match for a message (empty when nothing says enough)."""
    best, uses = MIN_TEXT - 1, frozenset()
    for c in found:
        if c.literal < best or not all(n in message for n in c.needles) or not c.regex.fullmatch(message):
            continue
        if c.literal > best:
            best, uses = c.literal, c.uses
        else:
            uses |= c.uses
    return uses


# -- the docs' side -----------------------------------------------------------------------------------

def documented_messages(text: str) -> list[DocMessage]:
    """Every `chargen...: error: ...` span in the docs, with its line and table row."""
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        for m in re.finditer(r"`(chargen(?: [a-z]+)*): error: ([^`]+)`", line):
            found.append(DocMessage(number, m.group(1), m.group(2).replace("\\|", "|"), line))
    return found


def subparser(parser: argparse.ArgumentParser, prog: str) -> argparse.ArgumentParser | None:
    """The (sub)parser whose prog is `prog`: "chargen series train" and so on (argparse keeps them in `_actions`)."""
    if parser.prog == prog:
        return parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                if (found := subparser(child, prog)) is not None:
                    return found
    return None


def usage_error_problem(doc: DocMessage) -> str | None:
    """Why an argparse usage error in the docs is not what the parser prints (None when it is).

    The option and value come from the row's command (`--top-k -1`); the parser is run on them.
    """
    m = re.match(r"argument (--[a-z0-9-]+): ", doc.text)
    if m is None:
        return "an argparse error that names no option (expected 'argument --OPTION: ...')"
    option = m.group(1)
    parser = subparser(build_parser(), doc.prog)
    if parser is None:
        return f"there is no command {doc.prog!r}"
    if option not in parser._option_string_actions:
        return f"{doc.prog} has no option {option}"
    command = next((span for span in re.findall(r"`([^`]*)`", doc.row) if "error:" not in span
                    and re.search(rf"{re.escape(option)}\s", span)), None)
    if command is None:
        return f"the row gives no command with {option} VALUE to check the message against"
    words = shlex.split(command)
    value = words[words.index(option) + 1]
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            parser.parse_args([option, value])
    except SystemExit:
        printed = stderr.getvalue().strip()
    else:
        return f"`{command}` is accepted: argparse prints no error for it"
    expected = f"{doc.prog}: error: {doc.text}"
    return None if printed == expected else f"`{command}` prints: {printed}"


# -- the tests ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def templates() -> list[Template]:
    return code_templates()


@pytest.fixture(scope="module")
def matches(templates) -> dict[DocMessage, frozenset[str]]:
    """Each documented chargen error (not argparse's) and the templates that explain it."""
    found = candidates(templates)
    return {doc: explain(doc.text, found)
            for doc in documented_messages(DOCS.read_text(encoding="utf-8")) if doc.prog == "chargen"}


def test_the_code_has_user_errors_and_the_docs_list_them(templates, matches):
    """Guards against a scan that silently finds nothing (a moved package, a renamed class)."""
    assert len(templates) > 100
    assert len(matches) > 100


def test_every_documented_error_is_one_the_code_can_print(matches):
    unexplained = [f"docs/errors.md:{doc.line}: {doc.text}" for doc, uses in matches.items() if not uses]
    assert not unexplained, ("documented messages that no UserError/WriteFailed/CommandError in chargen/ "
                             "can produce (fix the row, or the code):\n" + "\n".join(unexplained))


def test_every_documented_usage_error_is_what_argparse_prints():
    problems = [f"docs/errors.md:{doc.line}: {doc.prog}: error: {doc.text}\n    {problem}"
                for doc in documented_messages(DOCS.read_text(encoding="utf-8"))
                if doc.prog != "chargen" and (problem := usage_error_problem(doc))]
    assert not problems, "usage errors in the docs that argparse does not print:\n" + "\n".join(problems)


def test_every_user_error_in_the_code_is_documented(templates, matches):
    documented = frozenset().union(*matches.values())
    missing = sorted({f"{t.where}: {t.shown()}" for t in templates if t.where not in documented},
                     key=lambda s: (s.split(":")[0], int(s.split(":")[1])))
    assert not missing, ("user errors with no example in docs/errors.md (add a row with the message the "
                         "command prints):\n" + "\n".join(missing))


# -- the matcher itself -------------------------------------------------------------------------------

def _templates_of(source: str) -> list[Template]:
    tree = ast.parse(source)
    caught = _caught_names(tree)
    calls = sorted((n for n in ast.walk(tree)
                    if isinstance(n, ast.Call) and getattr(n.func, "id", None) in ERROR_CLASSES),
                   key=lambda n: n.lineno)
    return [Template(f"t.py:{n.lineno}", _merged(parts))
            for n in calls for parts in message_parts(n.args[0], caught.get(id(n), set()))]


SAMPLE = '''
raise UserError(f"{path} is empty; " "give a text file")
raise WriteFailed("cannot write " + f"{path}: {what} ({remedy})")
try:
    save()
except WriteFailed as e:
    raise WriteFailed(f"{e}; {kept}")
try:
    turn()
except CommandError as e:
    raise UserError(f"line {n}: {e}")
raise CommandError(f"/{name} takes on or off" if x else f"/{name} needs on or off")
'''


def test_matcher_reads_joined_strings_concatenation_and_both_branches():
    shown = [t.shown() for t in _templates_of(SAMPLE)]
    assert shown == ["{…} is empty; give a text file", "cannot write {…}: {…} ({…})", "{…}; {…}",
                     "line {…}: {…}", "/{…} takes on or off", "/{…} needs on or off"]


def test_matcher_credits_both_halves_of_a_composed_message():
    found = candidates(_templates_of(SAMPLE))
    composed = "cannot write a/b: the disk is full (free some space); nothing was saved"
    assert explain(composed, found) == {"t.py:3", "t.py:7"}
    assert explain("line 2: /probs takes on or off", found) == {"t.py:11", "t.py:12"}
    assert explain("line 4: ...", found) == {"t.py:11"}


def test_matcher_refuses_invented_and_too_vague_messages():
    found = candidates(_templates_of(SAMPLE))
    assert explain("novel.txt is missing; give a text file", found) == frozenset()
    assert explain("something; anything", found) == frozenset(), "'{e}; {kept}' alone is too vague"
    assert explain("line 3: whatever", found) == frozenset(), "'line {n}: {e}' alone is too vague"
