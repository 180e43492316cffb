"""Secrets never reach the log: header and URL redaction for every record we write.

Authorization values, cookies, API keys and session tokens are replaced by a short salted hash
(`[redacted sha256:0123456789ab]`) so an analyst can still tell two requests used the same secret
without seeing it. SigV4 keeps what identifies the caller (algorithm, Credential with the access
key id, SignedHeaders) and drops the Signature.
"""

from __future__ import annotations

import hashlib
import re

_SALT = b"inspector-redaction-v1:"

SECRET_HEADERS = frozenset({
    "authorization", "proxy-authorization", "cookie", "set-cookie", "x-api-key", "api-key",
    "x-auth-token", "x-amz-security-token", "x-goog-api-key", "openai-api-key", "x-csrf-token",
    "x-xsrf-token", "x-access-token", "x-refresh-token", "x-session-token", "x-jupyter-token",
    "x-ollama-key", "private-token", "x-vault-token", "ocp-apim-subscription-key",
})

SECRET_QUERY_KEYS = frozenset({
    "x-amz-signature", "x-amz-security-token", "signature", "sig", "token", "access_token",
    "id_token", "refresh_token", "api_key", "apikey", "api-key", "key", "password", "passwd",
    "secret", "client_secret", "auth", "x-goog-signature", "code",
})

_SIGV4 = re.compile(r"^(AWS4-HMAC-SHA256)\s+(.*)$", re.IGNORECASE | re.DOTALL)
_QUERY_PAIR = re.compile(r"([^&=;]+)=([^&;]*)")
#: A password in the user-info of a URL carried inside a query value (`?url=https://u:pw@host/`),
#: plain or percent-encoded (`%3A%2F%2F`, `%40`).
_USERINFO_PASSWORD = re.compile(r"((?:://|%3A%2F%2F)[^/?#@:%\s]*(?::|%3A))[^/?#@\s]*?((?:@|%40))", re.IGNORECASE)


def fingerprint(secret: str) -> str:
    digest = hashlib.sha256(_SALT + secret.encode("utf-8", "surrogateescape")).hexdigest()[:12]
    return f"[redacted sha256:{digest}]"


def redact_authorization(value: str) -> str:
    """Keep the scheme (and SigV4's credential scope), hide the secret part."""
    sigv4 = _SIGV4.match(value.strip())
    if sigv4:
        kept = []
        for part in sigv4.group(2).split(","):
            name = part.strip().split("=", 1)[0]
            if name.lower() == "signature":
                kept.append("Signature=[redacted]")
            else:
                kept.append(part.strip())
        return f"{sigv4.group(1)} {', '.join(kept)}"
    scheme, _, secret = value.strip().partition(" ")
    if not secret:
        return fingerprint(value)
    return f"{scheme} {fingerprint(secret)}"


def redact_header(name: str, value: str) -> str:
    """The value to log for header `name` (lower-case)."""
    if name not in SECRET_HEADERS:
        return value
    if name in ("authorization", "proxy-authorization"):
        return redact_authorization(value)
    return fingerprint(value)


def redact_url(url: str) -> str:
    """Hide secret query parameters (presigned-URL signatures, tokens, API keys)."""
    path, sep, query = url.partition("?")
    if not sep or not query:
        return url

    def repl(match: re.Match[str]) -> str:
        key = match.group(1)
        if key.lower() in SECRET_QUERY_KEYS:
            return f"{key}=[redacted]"
        return match.group(0)

    return f"{path}?{_USERINFO_PASSWORD.sub(r'\1[redacted]\2', _QUERY_PAIR.sub(repl, query))}"
