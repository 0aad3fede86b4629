"""Label and field selectors: parsing, matching, canonical form and errors."""

from __future__ import annotations

from collections.abc import Mapping

import pytest
from hypothesis import given
from hypothesis import strategies as st

from k8semu.api.errors import APIError
from k8semu.api.selectors import (
    FieldRequirement,
    FieldSelector,
    LabelSelector,
    Operator,
    Requirement,
    SelectorError,
    escape_field_value,
    parse_field_selector,
    parse_label_selector,
)

POD = {"app": "web", "env": "prod", "tier": "frontend", "example.com/team": "a", "gen": "7"}

# selector, labels it matches, labels it does not match
VALID_LABEL_SELECTORS: list[tuple[str, list[Mapping[str, str]], list[Mapping[str, str]]]] = [
    ("", [{}, POD], []),
    ("   ", [{}, POD], []),
    ("app=web", [POD, {"app": "web"}], [{}, {"app": "db"}]),
    ("app==web", [POD], [{"app": "db"}]),
    ("app!=web", [{}, {"app": "db"}], [POD]),
    ("app = web , env == prod", [POD], [{"app": "web"}, {"env": "prod"}]),
    ("env in (prod, qa)", [POD, {"env": "qa"}], [{}, {"env": "dev"}]),
    ("env in(prod,qa)", [POD], [{"env": "dev"}]),
    ("tier notin (backend)", [POD, {}], [{"tier": "backend"}]),
    ("tier notin (frontend, backend)", [{}, {"tier": "cache"}], [POD]),
    ("partition", [{"partition": ""}, {"partition": "x"}], [POD, {}]),
    ("!partition", [POD, {}], [{"partition": "1"}]),
    ("! partition", [POD], [{"partition": "1"}]),
    ("example.com/team=a", [POD], [{"team": "a"}]),
    ("a=", [{"a": ""}], [{}, {"a": "x"}]),
    ("a!=", [{}, {"a": "x"}], [{"a": ""}]),
    ("a in ()", [{"a": ""}], [{}, {"a": "x"}]),
    ("a in (x,)", [{"a": ""}, {"a": "x"}], [{}, {"a": "y"}]),
    ("a=in", [{"a": "in"}], [{"a": "x"}]),
    ("a in (in, notin)", [{"a": "notin"}], [{"a": "x"}]),
    ("gen>5", [POD], [{}, {"gen": "5"}, {"gen": "x"}]),
    ("gen<8,gen>6", [POD], [{"gen": "8"}]),
    ("gen>-1", [{"gen": "0"}], [{"gen": "-1"}]),
    ("app=web,env in (prod),!canary,tier", [POD], [{**POD, "canary": "1"}]),
    ("a=b,a=c", [], [{"a": "b"}, {"a": "c"}]),
    (
        "k8s.io/Name_1.x-y=V_1.2-3",
        [{"k8s.io/Name_1.x-y": "V_1.2-3"}],
        [{"k8s.io/Name_1.x-y": "v"}],
    ),
    ("x" * 63 + "=" + "y" * 63, [{"x" * 63: "y" * 63}], [{}]),
]


@pytest.mark.parametrize(("text", "yes", "no"), VALID_LABEL_SELECTORS)
def test_label_selector_matches(
    text: str, yes: list[Mapping[str, str]], no: list[Mapping[str, str]]
) -> None:
    selector = parse_label_selector(text)
    for labels in yes:
        assert selector.matches(labels), (text, labels)
    for labels in no:
        assert not selector.matches(labels), (text, labels)
    assert parse_label_selector(str(selector)) == selector


INVALID_LABEL_SELECTORS = [
    ("a in (b", 'invalid label selector "a in (b": unclosed "(" at 5'),
    ("a in (b,c", 'unclosed "(" at 5'),
    ("a in b", 'expected "(" after "a in", found "b" at 5'),
    ("a in", 'expected "(" after "a in", found end of string at 4'),
    (
        "a b",
        'expected an operator (=, ==, !=, in, notin, >, <, "," or end of string) after key "a"',
    ),
    ("a b", 'found "b" at 2'),
    ("a=b,", 'expected a key after ",", found end of string at 4'),
    (",a", 'expected a key, found "," at 0'),
    ("a,,b", 'expected a key after ",", found "," at 2'),
    ("=a", 'expected a key, found "=" at 0'),
    ("in=a", 'expected a key, found "in" at 0'),
    ("!a=b", 'expected "," or end of string after requirement "!a", found "=" at 2'),
    ("!", 'expected a key after "!", found end of string at 1'),
    ("a=b=c", 'after requirement "a=b", found "=" at 3'),
    ("a=b c", 'after requirement "a=b", found "c" at 4'),
    ("a=(b)", 'expected a value for key "a", found "(" at 2'),
    ("a in (b c)", 'expected "," or ")" in the values of "a in", found "c" at 8'),
    ("a in (b=c)", 'found "=" at 7'),
    ("-a=b", 'invalid key "-a" at 0: name part must consist of alphanumeric characters'),
    ("a=b,x_=b", 'invalid key "x_" at 4'),
    ("/a=b", 'invalid key "/a" at 0: prefix part must be non-empty'),
    ("p/=b", 'invalid key "p/" at 0: name part must be non-empty'),
    ("a/b/c=d", 'invalid key "a/b/c" at 0'),
    (
        "Example.com/a=b",
        'invalid key "Example.com/a" at 0: prefix part a lowercase RFC 1123 subdomain',
    ),
    ("x" * 64, f'invalid key "{"x" * 64}" at 0: name part must be no more than 63 characters'),
    ("a=" + "v" * 64, 'invalid value "' + "v" * 64 + '" for key "a" at 2: must be no more than 63'),
    ("a=-v", 'invalid value "-v" for key "a" at 2: a valid label must be an empty string'),
    ("a notin (ok, bad-)", 'invalid value "bad-" for key "a" at 13'),
    ("a=b/c", 'invalid value "b/c" for key "a" at 2'),
    ("a>x", 'value of key "a" for gt must be an integer, found "x" at 2'),
    ("a<", 'value of key "a" for lt must be an integer, found no value at 2'),
    ("a>99999999999999999999", 'value of key "a" for gt must be an integer'),
    ("é=1", 'invalid key "é" at 0'),
]


@pytest.mark.parametrize(("text", "message"), INVALID_LABEL_SELECTORS)
def test_label_selector_errors(text: str, message: str) -> None:
    with pytest.raises(SelectorError) as info:
        parse_label_selector(text)
    assert message in str(info.value)
    assert str(info.value).startswith(f'invalid label selector "{text}": ')


def test_selector_error_is_a_value_error_and_an_api_error() -> None:
    assert issubclass(SelectorError, ValueError)
    assert issubclass(SelectorError, APIError)


CANONICAL = [
    ("", ""),
    ("zeta, alpha=1 ,beta!=2", "alpha=1,beta!=2,zeta"),
    ("a==b", "a=b"),
    ("env in ( qa , prod, qa )", "env in (prod,qa)"),
    ("x notin (b,a),!w,v>3,u<4", "u<4,v>3,!w,x notin (a,b)"),
    ("a in (,b,)", "a in (,b)"),
    # Stable by key: two requirements on one key keep their order.
    ("b=2,a=2,a!=1", "a=2,a!=1,b=2"),
]


@pytest.mark.parametrize(("text", "canonical"), CANONICAL)
def test_label_selector_canonical_string(text: str, canonical: str) -> None:
    selector = parse_label_selector(text)
    assert str(selector) == canonical
    assert parse_label_selector(canonical) == selector


def test_everything_and_is_empty() -> None:
    assert LabelSelector.everything().is_empty
    assert LabelSelector.everything() == parse_label_selector("")
    assert str(LabelSelector.everything()) == ""
    assert LabelSelector.everything().matches({"any": "thing"})
    assert not parse_label_selector("a").is_empty


def test_from_match_structured_selector() -> None:
    selector = LabelSelector.from_match(
        {"app": "web"},
        [
            ("env", "In", ["qa", "prod"]),
            ("tier", "NotIn", ["db"]),
            ("track", "Exists", []),
            ("canary", "DoesNotExist", ()),
        ],
    )
    assert str(selector) == "app=web,!canary,env in (prod,qa),tier notin (db),track"
    assert selector == parse_label_selector(str(selector))
    assert selector.matches({"app": "web", "env": "qa", "track": "x"})
    assert not selector.matches({"app": "web", "env": "qa", "track": "x", "canary": "y"})
    assert not selector.matches({"app": "web", "env": "dev", "track": "x"})
    assert LabelSelector.from_match().is_empty
    assert LabelSelector.from_match({}, []).matches({})
    assert LabelSelector.from_match({"a": "b"}) == parse_label_selector("a=b")


@pytest.mark.parametrize(
    ("labels", "expressions", "message"),
    [
        ({"bad key": "x"}, [], "matchLabels: invalid key 'bad key'"),
        ({"a": "-x"}, [], "matchLabels: key 'a': invalid value '-x'"),
        ({}, [("a", "in", ["x"])], "matchExpressions[0]: operator 'in' is not one of In, NotIn"),
        ({}, [("a", "Exists", []), ("b", "In", [])], "matchExpressions[1]: key 'b': values"),
        ({}, [("a", "NotIn", [])], "values must be non-empty for NOT_IN"),
        ({}, [("a", "Exists", ["x"])], "values must be empty for EXISTS"),
        ({}, [("a", "DoesNotExist", ["x"])], "values must be empty for DOES_NOT_EXIST"),
    ],
)
def test_from_match_errors(
    labels: dict[str, str], expressions: list[tuple[str, str, list[str]]], message: str
) -> None:
    with pytest.raises(SelectorError) as info:
        LabelSelector.from_match(labels, expressions)
    assert str(info.value).startswith("invalid label selector: ")
    assert message in str(info.value)


def test_requirement_invariants() -> None:
    assert Requirement("a", Operator.IN, ("b", "a", "b")).values == ("a", "b")
    with pytest.raises(SelectorError):
        Requirement("a", Operator.EQUALS, ("x", "y"))
    with pytest.raises(SelectorError):
        Requirement("a", Operator.GREATER_THAN, ("x",))
    with pytest.raises(SelectorError):
        Requirement("", Operator.EXISTS)


# --- hypothesis: every selector prints to text that parses back to it -------------------------

_NAME_CHARS = "abcXYZ019-_."
_ALNUM = "abcXYZ019"


@st.composite
def _names(draw: st.DrawFn) -> str:
    """Valid names: alphanumeric at both ends, up to the 63-character limit."""
    first = draw(st.sampled_from(_ALNUM))
    if draw(st.booleans()):
        return first
    middle = draw(st.text(_NAME_CHARS, max_size=61))
    return first + middle + draw(st.sampled_from(_ALNUM))


_keys = st.one_of(
    _names(),
    st.builds(lambda p, n: f"{p}/{n}", st.sampled_from(["k8s.io", "a-b.example", "x"]), _names()),
)
_values = st.one_of(st.just(""), _names())
_spaces = st.sampled_from(["", " ", "  ", "\t"])


@st.composite
def _requirement_texts(draw: st.DrawFn) -> str:
    key = draw(_keys)
    s = [draw(_spaces) for _ in range(4)]
    kind = draw(st.sampled_from(["=", "==", "!=", "in", "notin", "exists", "!", ">", "<"]))
    if kind == "exists":
        return key
    if kind == "!":
        return f"!{s[0]}{key}"
    if kind in ("<", ">"):
        return f"{key}{s[0]}{kind}{s[1]}{draw(st.integers(-(10**6), 10**6))}"
    if kind in ("in", "notin"):
        values = draw(st.lists(_values, min_size=1, max_size=4))
        return f"{key} {kind}{s[0]}({s[1]}{f'{s[2]},{s[3]}'.join(values)})"
    return f"{key}{s[0]}{kind}{s[1]}{draw(_values)}"


@given(st.lists(_requirement_texts(), max_size=5), _spaces)
def test_label_selector_round_trip(requirements: list[str], space: str) -> None:
    selector = parse_label_selector(f"{space},{space}".join(requirements))
    canonical = str(selector)
    assert parse_label_selector(canonical) == selector
    assert str(parse_label_selector(canonical)) == canonical


@given(st.text(alphabet="ab=!(), in/x-", max_size=20))
def test_label_parser_never_fails_unexpectedly(text: str) -> None:
    try:
        selector = parse_label_selector(text)
    except SelectorError:
        return
    assert parse_label_selector(str(selector)) == selector


# --- field selectors -----------------------------------------------------------------------

PENDING = {"metadata.name": "web-1", "metadata.namespace": "default", "status.phase": "Pending"}
RUNNING = {**PENDING, "spec.nodeName": "node-1", "status.phase": "Running"}

# selector, field sets it matches, field sets it does not match
VALID_FIELD_SELECTORS: list[tuple[str, list[dict[str, str]], list[dict[str, str]]]] = [
    ("", [PENDING, RUNNING], []),
    ("spec.nodeName=node-1", [RUNNING], [PENDING]),
    ("spec.nodeName==node-1", [RUNNING], [PENDING]),
    ("spec.nodeName!=node-1", [PENDING], [RUNNING]),
    ("spec.nodeName=", [PENDING], [RUNNING]),  # unset reads as ""
    ("spec.nodeName!=", [RUNNING], [PENDING]),
    ("status.phase=Running,metadata.namespace=default", [RUNNING], [PENDING]),
    (" status.phase = Running ", [RUNNING], [PENDING]),
    ("status.phase!=Running,status.phase!=Succeeded", [PENDING], [RUNNING]),
    ("metadata.name=web-1,", [PENDING], []),  # empty terms are skipped, as in Kubernetes
    ("metadata.name=web\\,1", [{"metadata.name": "web,1"}], [PENDING]),
    ("metadata.name=a\\=b\\\\c", [{"metadata.name": "a=b\\c"}], [PENDING]),
]


@pytest.mark.parametrize(("text", "yes", "no"), VALID_FIELD_SELECTORS)
def test_field_selector_matches(
    text: str, yes: list[dict[str, str]], no: list[dict[str, str]]
) -> None:
    selector = parse_field_selector(text)
    for fields in yes:
        assert selector.matches(fields.get), (text, fields)
    for fields in no:
        assert not selector.matches(fields.get), (text, fields)
    assert parse_field_selector(str(selector)) == selector


INVALID_FIELD_SELECTORS = [
    ("abc", 'invalid field selector "abc": term "abc" has no operator (=, == or !=) at 0'),
    ("a=b,cd", 'term "cd" has no operator (=, == or !=) at 4'),
    ("=x", 'invalid field name "" in term "=x" at 0'),
    ("a=b,my field=x", 'invalid field name "my field" in term "my field=x" at 4'),
    ("a=b=c", 'unescaped "=" in value (write \\=) at 3'),
    ("a===b", 'unescaped "=" in value (write \\=) at 3'),
    ("a=b\\", 'invalid trailing "\\" in value at 3'),
    ("a= x\\y", 'invalid escape sequence "\\y" in value at 4'),
]


@pytest.mark.parametrize(("text", "message"), INVALID_FIELD_SELECTORS)
def test_field_selector_errors(text: str, message: str) -> None:
    with pytest.raises(SelectorError) as info:
        parse_field_selector(text)
    assert message in str(info.value)
    assert str(info.value).startswith(f'invalid field selector "{text}": ')


def test_field_selector_fields_and_canonical_form() -> None:
    selector = parse_field_selector("status.phase!=Failed,spec.nodeName==n1,metadata.name=a\\,b")
    assert selector.fields == {"status.phase", "spec.nodeName", "metadata.name"}
    assert str(selector) == "metadata.name=a\\,b,spec.nodeName=n1,status.phase!=Failed"
    assert selector.requires_exact_match("spec.nodeName") == "n1"
    assert selector.requires_exact_match("status.phase") is None  # != is not an exact match
    assert FieldSelector.everything().is_empty
    assert FieldSelector.everything() == parse_field_selector(" , ")
    assert FieldSelector.everything().fields == frozenset()
    with pytest.raises(SelectorError):
        FieldRequirement("a", Operator.IN, "x")


_field_values = st.text(alphabet="ab\\,=!- .", max_size=8).map(str.strip)


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["metadata.name", "spec.nodeName", "status.phase"]),
            st.sampled_from(["=", "==", "!="]),
            _field_values,
        ),
        max_size=4,
    )
)
def test_field_selector_round_trip(terms: list[tuple[str, str, str]]) -> None:
    text = ",".join(f"{field}{op}{escape_field_value(value)}" for field, op, value in terms)
    selector = parse_field_selector(text)
    assert [(r.field, r.value) for r in selector.requirements] == sorted(
        [(field, value) for field, _, value in terms], key=lambda t: t[0]
    )
    assert parse_field_selector(str(selector)) == selector
