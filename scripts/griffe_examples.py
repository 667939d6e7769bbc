"""A Griffe extension for the documentation site: gwa's docstrings title their doctests ``Example:`` (singular),
which Griffe's Google parser reads as an admonition of Markdown, where ``>>>`` is a block quote and ``[False, True]``
a link; renamed ``Examples:``, they render as code. Loaded by mkdocs.yml (mkdocstrings' ``extensions``)."""

from __future__ import annotations

import re
from typing import Any

from griffe import Extension, Object

EXAMPLE_TITLE = re.compile(r"^(\s*)Example:\s*$", re.M)


class ExamplesSection(Extension):
    def on_object(self, *, obj: Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = EXAMPLE_TITLE.sub(r"\1Examples:", obj.docstring.value)
