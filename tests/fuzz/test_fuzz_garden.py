"""The public-suffix check of garden wildcards (gateway.config.public_suffix_wildcards),
which parses only the rules that could match, agrees with the publicsuffixlist package's own
answer over the whole list, for names made from the list's own rules."""

from __future__ import annotations

import functools
import random

from hypothesis import example, given
from hypothesis import strategies as st
from publicsuffixlist import PSLFILE, PublicSuffixList

from plaza.validators import garden_name, public_suffix_wildcards


@functools.cache
def full_list() -> PublicSuffixList:
    return PublicSuffixList()


@functools.cache
def rules() -> list[str]:
    """ASCII rules of the list, as domains (`*.` and `!` taken off)."""
    out = []
    with open(PSLFILE, encoding="utf-8") as source:
        for line in source:
            rule = line.split()[0] if line.strip() else ""
            if rule and not rule.startswith("//"):
                try:
                    rule = rule.encode("idna").decode("ascii")
                except UnicodeError:
                    continue
                out.append(rule.lstrip("!").removeprefix("*."))
    return out


labels = st.sampled_from(["www", "shop", "a", "xn--p1ai", "cafe-uno", "city", "s3"])


@given(
    st.lists(
        st.tuples(st.integers(0, 10**6), st.lists(labels, max_size=2)),
        min_size=1,
        max_size=8,
    )
)
@example([(0, [])])
def test_agrees_with_the_whole_list(picks: list[tuple[int, list[str]]]) -> None:
    names = []
    for index, prefix in picks:
        rule = rules()[index % len(rules())]
        name = garden_name("*." + ".".join([*prefix, rule]))
        if name is not None:
            names.append(name)
    expected = [n for n in names if full_list().is_public(n[2:])]
    assert public_suffix_wildcards(names) == expected


def test_known_answers() -> None:
    names = ["*.co.uk", "*.cafe-uno.co.uk", "*.github.io", "*.plaza.github.io", "shop.test",
             "*.www.ck", "*.foo.ck", "*.example.com"]  # fmt: skip
    assert public_suffix_wildcards(names) == ["*.co.uk", "*.github.io", "*.foo.ck"]
    assert public_suffix_wildcards([]) == [] and public_suffix_wildcards(["a.test"]) == []
    sample = random.Random(5).sample(rules(), 50)
    assert public_suffix_wildcards([f"*.{r}" for r in sample if "." in r]) == [
        f"*.{r}" for r in sample if "." in r and full_list().is_public(r)
    ]
