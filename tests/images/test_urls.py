"""backend.net.urls: one strict parse decides host, credentials and connection; what the HTTP client
would read differently is refused."""

from __future__ import annotations

import pytest
import urllib3.util

from backend.net.urls import HttpUrl, UrlError, parse_http_url


@pytest.mark.parametrize(
    "text, url, origin",
    [
        (
            "HTTPS://Img.Example.COM/a.png?v=2#frag",
            "https://img.example.com/a.png?v=2",
            ("https", "img.example.com", 443),
        ),
        ("http://h:80/", "http://h/", ("http", "h", 80)),
        ("http://h:0080", "http://h/", ("http", "h", 80)),
        ("https://h:8443", "https://h:8443/", ("https", "h", 8443)),
        ("http://h?x=1", "http://h/?x=1", ("http", "h", 80)),
        ("http://[::FFFF:127.0.0.1]:81/x", "http://[::ffff:7f00:1]:81/x", ("http", "::ffff:7f00:1", 81)),
        ("http://label_studio:8080/data", "http://label_studio:8080/data", ("http", "label_studio", 8080)),
        ("http://h/a b/\u00fc?q=1 2", "http://h/a%20b/%C3%BC?q=1%202", ("http", "h", 80)),
        ("http://h/%2F%40%5C%zz%", "http://h/%2F%40%5C%25zz%25", ("http", "h", 80)),
        ('http://h/a"<>{}|^`', "http://h/a%22%3C%3E%7B%7D%7C%5E%60", ("http", "h", 80)),
    ],
)
def test_normalised_form(text, url, origin):
    parsed = parse_http_url(text)
    assert (parsed.url, parsed.origin) == (url, origin)
    assert parse_http_url(parsed.url) == parsed  # normalising twice changes nothing


def test_join_resolves_relative_and_network_path_references():
    base = parse_http_url("http://ls:8080/data/upload/1/a.png")
    assert base.join("b.png").url == "http://ls:8080/data/upload/1/b.png"
    assert base.join("/user/login/?next=/x").url == "http://ls:8080/user/login/?next=/x"
    assert base.join("//other:9/x").origin == ("http", "other", 9)
    assert base.join("HTTPS://S3.example/k?X-Amz-Signature=s").url == "https://s3.example/k?X-Amz-Signature=s"


@pytest.mark.parametrize(
    "location", ["http:x", "http:///x", "http:\\\\evil/x", "//[::1", "/a\\b", "file:///etc/passwd"]
)
def test_join_refuses_what_it_would_have_to_guess(location):
    with pytest.raises(UrlError):
        parse_http_url("http://ls:8080/a").join(location)


def test_shown_masks_secrets_and_str_is_the_shown_form():
    url = parse_http_url("https://b.s3.example/k.png?X-Amz-Signature=s3cr3t&X-Amz-Credential=c&v=1")
    assert url.shown == "https://b.s3.example/k.png?X-Amz-Signature=***&X-Amz-Credential=***&v=1"
    assert str(url) == url.shown and f"{url}" == url.shown


def test_rejection_message_never_shows_the_password_or_query():
    with pytest.raises(UrlError) as err:
        parse_http_url("http://user:hunter2@h/a\tb?token=t0k")
    assert "hunter2" not in err.value.message and "t0k" not in err.value.message


def test_tripwire_refuses_when_the_http_client_would_read_another_host(monkeypatch):
    real = urllib3.util.parse_url
    monkeypatch.setattr(urllib3.util, "parse_url", lambda u: real(u.replace("ls.example", "evil.example")))
    with pytest.raises(UrlError, match="another host"):
        parse_http_url("http://ls.example/a.png")


def test_http_url_is_frozen():
    url = parse_http_url("http://h/")
    with pytest.raises(AttributeError):
        url.host = "evil"  # type: ignore[misc]
    assert isinstance(url, HttpUrl)
