"""URLs that carry secrets: checked without echoing them, and masked for log lines.

A receiver's URL may hold a user and password, or a token in its query string
(``?access_token=...``, as chat-bot webhooks do). Neither may reach a log line, an error
message or the outbox's ``last_error``: ``redact_url`` is the form to log, and ``scrub``
takes a URL's secrets out of a third-party message (httpx names the URL in some errors).
"""

from __future__ import annotations

from urllib.parse import SplitResult, parse_qsl, unquote, urlsplit

# Characters that end the authority part of a URL: in a password they must be
# percent-encoded, or the password's tail is read as the path, query or fragment.
_AUTHORITY_END = "/?#"


def url_problem(url: str) -> str | None:
    """Why ``url`` cannot be used as it is written, in words that never repeat it; or None."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "not a URL"
    after_scheme = url.partition("://")[2]
    authority_end = min((i for c in _AUTHORITY_END if (i := after_scheme.find(c)) >= 0), default=-1)
    if authority_end >= 0 and "@" in after_scheme[authority_end:]:
        # Either a password with '/', '?' or '#' (the host read would be the user name),
        # or an '@' in the path or query: both are written percent-encoded.
        return (
            "has '@' after the host: percent-encode '/', '?', '#' and '@' in a user or "
            "password (%2F %3F %23 %40), and '@' in the path or query (%40)"
        )
    if not parts.hostname:
        return "names no host"
    try:
        parts.port  # noqa: B018 - reading it validates it
    except ValueError:
        return "its port is not a number from 0 to 65535"
    return None


def redact_url(url: str) -> str:
    """``url`` fit for a log line: the user and password, and every query value, masked."""
    if url_problem(url) is not None:
        return "(malformed URL)"
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    netloc = f"***@{host}" if "@" in parts.netloc else host
    return SplitResult(parts.scheme, netloc, parts.path, _redact_query(parts.query), "").geturl()


def _redact_query(query: str) -> str:
    return "&".join(f"{key}=***" for key, _ in parse_qsl(query, keep_blank_values=True))


def scrub(text: str, url: str) -> str:
    """``text`` with every secret part of ``url`` replaced, the URL itself by its log form."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return text
    masks = {parts.netloc.rpartition("@")[0]: "***", parts.fragment: "***"}
    masks |= {value: "***" for _, value in parse_qsl(parts.query, keep_blank_values=True)}
    if parts.password:
        masks |= {parts.password: "***", unquote(parts.password): "***"}
    masks |= {parts.query: _redact_query(parts.query), url: redact_url(url)}
    # Longest first, so a secret containing another is replaced whole; very short values
    # ("1", "on") would mangle the message and say nothing on their own.
    for secret in sorted((s for s in masks if len(s) >= 4), key=len, reverse=True):
        text = text.replace(secret, masks[secret])
    return text
