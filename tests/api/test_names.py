"""Name and label syntax against the examples of Kubernetes' validation tests
(k8s.io/apimachinery/pkg/util/validation), with Kubernetes' messages."""

from __future__ import annotations

import pytest

from k8semu.api import names

GOOD_LABELS = ["a", "ab", "abc", "a1", "a-1", "a--1--2--b", "0", "01", "012", "1a", "1-a"]
GOOD_LABELS += ["1--a--b--2", "a" * 63]
BAD_LABELS = ["", "A", "ABC", "aBc", "A1", "A-1", "1-A", "-", "a-", "-a", "1-", "-1", "_"]
BAD_LABELS += ["a_", "_a", "a_b", "1_", "_1", "1_2", ".", "a.", ".a", "a.b", "1.", ".1", "1.2"]
BAD_LABELS += [" ", "a ", " a", "a b", "1 ", " 1", "1 2", "a" * 64]

GOOD_SUBDOMAINS = ["a", "ab", "abc", "a1", "a-1", "a--1--2--b", "0", "01", "012", "1a", "1-a"]
GOOD_SUBDOMAINS += ["a.a", "ab.a", "a.b.c", "1.1", "0.a", "a--1.b--2", "a" * 253]
BAD_SUBDOMAINS = ["", "A", "ABC", "-", "a-", "-a", "_", "a_b", ".", "a.", ".a", "a..b"]
BAD_SUBDOMAINS += ["a.-b", "a-.b", "1 ", "a b", "a" * 254]

GOOD_QUALIFIED = ["simple", "now-with-dashes", "1-starts-with-num", "1234", "simple/simple"]
GOOD_QUALIFIED += ["now-with-dashes/simple", "now.with.dots/simple", "1-num.2-num/3-num"]
GOOD_QUALIFIED += ["1234/5678", "1.2.3.4/5678", "Uppercase_Is_OK_123"]
GOOD_QUALIFIED += ["example.com/Uppercase_Is_OK_123", "requests.storage-foo", "a" * 63]
GOOD_QUALIFIED += ["a" * 253 + "/" + "b" * 63]
BAD_QUALIFIED = ["nospecialchars%^=@", "cantendwithadash-", "-cantstartwithadash-"]
BAD_QUALIFIED += ["only/one/slash", "Example.com/abc", "example_com/abc", "example.com/"]
BAD_QUALIFIED += ["/simple", "a" * 64, "a" * 254 + "/abc", ""]

GOOD_VALUES = ["simple", "now-with-dashes", "1-starts-with-num", "end-with-num-1", "1234"]
GOOD_VALUES += ["a" * 63, "", "Mixed_Case.ok"]
BAD_VALUES = ["nospecialchars%^=@", "Tama-nui-te-rā.is_the_Māori_sun", "\\backslashes"]
BAD_VALUES += ["-starts-with-dash", "ends-with-dash-", ".starts.with.dot", "ends.with.dot."]
BAD_VALUES += ["a/b", "a" * 64]


@pytest.mark.parametrize("value", GOOD_LABELS)
def test_good_dns1123_labels(value: str) -> None:
    assert names.dns1123_label_errors(value) == []


@pytest.mark.parametrize("value", BAD_LABELS)
def test_bad_dns1123_labels(value: str) -> None:
    assert not names.is_dns1123_label(value)


@pytest.mark.parametrize("value", GOOD_SUBDOMAINS)
def test_good_dns1123_subdomains(value: str) -> None:
    assert names.dns1123_subdomain_errors(value) == []


@pytest.mark.parametrize("value", BAD_SUBDOMAINS)
def test_bad_dns1123_subdomains(value: str) -> None:
    assert not names.is_dns1123_subdomain(value)


@pytest.mark.parametrize("value", GOOD_QUALIFIED)
def test_good_qualified_names(value: str) -> None:
    assert names.qualified_name_errors(value) == []


@pytest.mark.parametrize("value", BAD_QUALIFIED)
def test_bad_qualified_names(value: str) -> None:
    assert not names.is_qualified_name(value)


@pytest.mark.parametrize("value", GOOD_VALUES)
def test_good_label_values(value: str) -> None:
    assert names.label_value_errors(value) == []


@pytest.mark.parametrize("value", BAD_VALUES)
def test_bad_label_values(value: str) -> None:
    assert not names.is_label_value(value)


def test_messages_are_kubernetes() -> None:
    assert names.dns1123_label_errors("A") == [
        "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-',"
        " and must start and end with an alphanumeric character (e.g. 'my-name',  or"
        " '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
    ]
    assert names.dns1123_subdomain_errors("a" * 254) == ["must be no more than 253 characters"]
    assert names.dns1123_subdomain_errors("a_b") == [
        "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters,"
        " '-' or '.', and must start and end with an alphanumeric character (e.g."
        " 'example.com', regex used for validation is"
        " '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
    ]
    assert names.qualified_name_errors("/a") == ["prefix part must be non-empty"]
    assert names.qualified_name_errors("p/")[0] == "name part must be non-empty"
    assert names.qualified_name_errors("a" * 64) == ["name part must be no more than 63 characters"]
    assert names.qualified_name_errors("a_") == [
        "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and"
        " end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc',"
        " regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"
    ]
    assert names.qualified_name_errors("a/b/c")[0].startswith("a qualified name must consist")
    assert names.qualified_name_errors("a/b/c")[0].endswith(
        "with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"
    )
    assert names.qualified_name_errors("A.com/b")[0].startswith(
        "prefix part a lowercase RFC 1123 subdomain"
    )
    assert names.label_value_errors("-v") == [
        "a valid label must be an empty string or consist of alphanumeric characters, '-', '_'"
        " or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or"
        " 'my_value',  or '12345', regex used for validation is"
        " '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"
    ]
