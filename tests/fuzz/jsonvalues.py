"""Hypothesis strategies for JSON documents, well-formed and not."""

from __future__ import annotations

import json

from hypothesis import strategies as st

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=30),
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5)
    ),
    max_leaves=25,
)
objects = st.dictionaries(st.text(max_size=12), values, max_size=6)


@st.composite
def spaced(draw: st.DrawFn, value: object) -> str:
    """`value` as JSON with spacing chosen by hypothesis (what a server might send)."""
    indent = draw(st.sampled_from([None, 0, 1, 2]))
    separators = draw(st.sampled_from([(",", ":"), (", ", ": "), (",", " : ")]))
    ascii_only = draw(st.booleans())
    return json.dumps(value, indent=indent, separators=separators, ensure_ascii=ascii_only)


def deep(depth: int = 100_000, opener: str = "[", closer: str = "]") -> str:
    """A value nested past the interpreter's recursion limit."""
    return opener * depth + closer * depth


@st.composite
def mutated(draw: st.DrawFn, text: str) -> str:
    """`text` with a few characters replaced, inserted or deleted, or cut short."""
    out = list(text)
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(["replace", "insert", "delete", "cut"]))
        at = draw(st.integers(0, max(0, len(out) - 1)))
        char = draw(st.sampled_from(list('{}[]":,\\ 0123456789.eE-+nulltrufase\n\x00é')))
        if op == "replace" and out:
            out[at] = char
        elif op == "insert":
            out.insert(at, char)
        elif op == "delete" and out:
            del out[at]
        elif op == "cut":
            out = out[:at]
    return "".join(out)
