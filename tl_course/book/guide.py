"""What the teaching guide (``book/teaching.md``) reads from the course itself, so that it never repeats by
hand what another file already says: each chapter's learning objectives (its "You will be able to"
admonition) and the known mistakes of each graded notebook (the catalogue in
``tl_course/classroom/mistakes/``, one comment line above each mistake).

Torch-free and import-free: it reads text files.
"""
from __future__ import annotations

import ast
import re
from typing import NamedTuple

__all__ = ["Mistake", "chapter_title", "chapter_objectives", "catalogue_mistakes"]

#: a comment that heads a section of a catalogue, not a mistake: a rule, a numbered heading, a format line
_HEADING = re.compile(r"[-—─=]{3,}|^\d+\.\s|^name:")
_ADMONITION = re.compile(r"```\{admonition\} You will be able to\n(?::[^\n]*\n)*(?P<body>.*?)```", re.S)


class Mistake(NamedTuple):
    name: str
    kind: str          #: the catalogue's class of hole: leak, how, forbidden, narrow
    description: str   #: the comment line above the mistake in the catalogue


def chapter_title(page: str) -> str:
    """The first ``# `` heading of a MyST page.

    >>> chapter_title("---\\nx: 1\\n---\\n\\n# Freeze and train only the softmax\\n\\ntext")
    'Freeze and train only the softmax'
    """
    for line in page.splitlines():
        if line.startswith("# "):
            return line[2:].strip()
    raise ValueError("the page has no '# ' title.")


def chapter_objectives(page: str) -> list[str]:
    """The bullet points of a page's ``You will be able to`` admonition (an empty list when it has none).

    >>> chapter_objectives("# T\\n\\n```{admonition} You will be able to\\n:class: tip\\n- load a network\\n"
    ...                    "- freeze it\\n\\nMore.\\n```\\n")
    ['load a network', 'freeze it']
    """
    match = _ADMONITION.search(page)
    if not match:
        return []
    return [line[2:].strip() for line in match.group("body").splitlines() if line.startswith("- ")]


def catalogue_mistakes(source: str) -> list[Mistake]:
    """The mistakes of one catalogue file (its Python source), in file order: name, kind (from ``KIND``, or
    the second field of a ``NEW_MISTAKES`` entry) and the comment line(s) written right above the mistake in
    ``MISTAKES`` / ``NEW_MISTAKES`` ('' when there is none). Section headings among those comments (a rule of
    dashes, a numbered heading such as ``# 2. selection discipline``) are not descriptions.

    >>> src = 'MISTAKES = {\\n    # Forgets the seed.\\n    "unseeded": {"cell": "x"},\\n}\\nKIND = {"unseeded": "how"}\\n'
    >>> catalogue_mistakes(src)
    [Mistake(name='unseeded', kind='how', description='Forgets the seed.')]
    >>> src = ('MISTAKES = {\\n    # --- leak ----------\\n    # Tests on train.\\n    "on_train": {"c": "x"},\\n}\\n'
    ...        'NEW_MISTAKES = {\\n    # 2. selection discipline\\n    "no_val": (2, "how", {"c": "y"}, ["t"]),\\n}\\n')
    >>> [(m.name, m.kind, m.description) for m in catalogue_mistakes(src)]
    [('on_train', '', 'Tests on train.'), ('no_val', 'how', '')]
    """
    tree = ast.parse(source)
    lines = source.splitlines()
    tables, kinds = {}, {}
    for node in tree.body:
        target = node.target if isinstance(node, ast.AnnAssign) else (
            node.targets[0] if isinstance(node, ast.Assign) and len(node.targets) == 1 else None)
        name = getattr(target, "id", None)
        if name in ("MISTAKES", "NEW_MISTAKES") and isinstance(node.value, ast.Dict):
            tables[name] = node.value
        elif name == "KIND" and isinstance(node.value, ast.Dict):
            kinds = ast.literal_eval(node.value)
    if "MISTAKES" not in tables:
        raise ValueError("the catalogue has no MISTAKES = {...} dictionary.")
    out = []
    for table in tables.values():
        for key, value in zip(table.keys, table.values):
            if not isinstance(key, ast.Constant) or not isinstance(key.value, str):
                continue
            comment, row = [], key.lineno - 2
            while row >= 0 and lines[row].strip().startswith("#"):
                text = lines[row].strip().lstrip("#").strip()
                if _HEADING.search(text):
                    break
                comment.insert(0, text)
                row -= 1
            kind = kinds.get(key.value, "")
            if (not kind and isinstance(value, ast.Tuple) and len(value.elts) > 1
                    and isinstance(value.elts[1], ast.Constant)):
                kind = value.elts[1].value
            out.append(Mistake(key.value, kind, " ".join(comment)))
    return out
