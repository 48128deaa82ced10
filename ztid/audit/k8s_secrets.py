"""Decide whether a literal name/value pair in a manifest is a credential; never echo the value.

Two signals, as kube-linter (``env-var-secret``) and Polaris (``sensitiveContainerEnvVar``) use:
a name that says "secret" with a non-trivial literal value, or a value that has the shape of a
well-known credential whatever its name (private key PEM, cloud and ML-hub token prefixes, JWTs).
"""

from __future__ import annotations

import re

__all__ = ["credential_reason"]

_NAME_RE = re.compile(
    r"(?i)(pass(word|wd)?|secret|token|api[_-]?key|apikey|access[_-]?key|private[_-]?key|credential|"
    r"auth[_-]?key|client[_-]?secret|bearer|dsn|connection[_-]?string|^GOOGLE_APPLICATION_CREDENTIALS$|"
    r"^AZURE_.*KEY$|^OCI_CLI_KEY_CONTENT$)"
)
# Names that contain a trigger word but hold no secret (paths, switches, key ids, lifetimes).
_BENIGN_NAME_RE = re.compile(r"(?i)(_FILE|_PATH|_DIR|_URL|_ENDPOINT|_TTL|_EXPIRY|_LENGTH|_ID|_NAME|_ENABLED|"
                             r"_TYPE|_AUDIENCE|_HEADER)$")
_VALUE_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("a PEM private key", re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----")),
    ("an AWS access key id", re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b")),
    ("a Hugging Face token", re.compile(r"\bhf_[A-Za-z0-9]{30,}\b")),
    ("a GitHub token", re.compile(r"\b(ghp|gho|ghs|ghu|github_pat)_[A-Za-z0-9_]{30,}\b")),
    ("an OpenAI-style API key", re.compile(r"\bsk-[A-Za-z0-9_-]{20,}\b")),
    ("a Slack token", re.compile(r"\bxox[abposr]-[A-Za-z0-9-]{10,}\b")),
    ("a Google API key", re.compile(r"\bAIza[0-9A-Za-z_-]{35}\b")),
    ("a JSON Web Token", re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}")),
    ("a URL with an embedded password", re.compile(r"[a-z][a-z0-9+.-]*://[^/\s:@]+:[^/\s@]+@")),
)
_PLACEHOLDER_RE = re.compile(r"^(\$\(.*\)|\$\{.*\}|<.*>|changeme|change-me|placeholder|redacted|x+|\*+|none|null|"
                             r"true|false|yes|no|on|off|-?\d{1,6})$", re.IGNORECASE)


def credential_reason(name: str, value: object) -> str | None:
    """Why the literal ``value`` of ``name`` looks like a credential, or ``None`` if it does not.

    The reason describes the shape ("a Hugging Face token", "name suggests a secret") and never
    contains the value itself.
    """
    if value is None:
        return None
    text = str(value).strip()
    if not text:
        return None
    for what, pattern in _VALUE_PATTERNS:
        if pattern.search(text):
            return f"value looks like {what}"
    if _NAME_RE.search(name) and not _BENIGN_NAME_RE.search(name) and not _PLACEHOLDER_RE.match(text):
        if len(text) >= 6 and not text.startswith("/"):
            return "name suggests a secret and it has a literal value"
    return None
