"""Identity: what a SPIFFE ID means to the policy (component, tenant, workload), by identity templates.

A policy's ``identities:`` list holds templates such as::

    spiffe://ai-platform.example/ns/{tenant}/sa/{component}
    spiffe://ai-platform.example/{component}/{workload...}

Template rules (checked when the policy loads; a bad template is a located PolicyError):

* ``spiffe://<trust domain>/<segment>/...``: the trust domain is literal and must be the policy's
  trust domain or a federated one; the path has at least one segment.
* A segment is either a literal (matched exactly, same characters as a SPIFFE ID path segment) or a
  whole-segment placeholder: ``{name}`` captures exactly one segment, ``{workload...}`` captures the
  rest (one or more segments, joined with ``/``) and must be the last segment.
* Only the names ``component``, ``tenant`` and ``workload`` exist; each at most once; ``component`` is
  required (a template that names no component could only ever lead to a deny). Only ``workload`` may
  take ``...``: components and tenants are single segments by construction.

The first template that matches wins. An ID that matches none gets an :class:`Identity` whose
``component`` is ``None``, which the policy denies as ``unknown_component``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from ztid.errors import IdentityError
from ztid.spiffeid import SpiffeId, TrustDomain

__all__ = ["CAPTURE_NAMES", "Identity", "IdentityTemplate"]

CAPTURE_NAMES: Final = frozenset({"component", "tenant", "workload"})
_SEGMENT_RE: Final = re.compile(r"[A-Za-z0-9._-]+\Z")
_PLACEHOLDER_RE: Final = re.compile(r"\{([^{}]*?)(\.\.\.)?\}\Z")


@dataclass(frozen=True, slots=True)
class Identity:
    """A SPIFFE ID together with what the policy's templates say it is.

    Attributes:
        spiffe_id: the ID itself.
        trust_domain: its trust domain.
        component: the captured component name, or ``None`` when no template matched.
        tenant: the captured tenant, or ``None`` when the matching template has no ``{tenant}``.
        workload: the captured workload (``/``-joined for ``{workload...}``), or ``None``.
        template: the template that matched, exactly as written in the policy, or ``None``.
    """

    spiffe_id: SpiffeId
    trust_domain: TrustDomain
    component: str | None = None
    tenant: str | None = None
    workload: str | None = None
    template: str | None = None

    @classmethod
    def unmapped(cls, spiffe_id: SpiffeId) -> "Identity":
        """An identity for ``spiffe_id`` that no template has mapped (component ``None``)."""
        return cls(spiffe_id, spiffe_id.trust_domain)

    def __str__(self) -> str:
        return str(self.spiffe_id)


def _fail(why: str, text: str) -> IdentityError:
    return IdentityError(f"invalid identity template: {why} ({text!r})", value=text, rule="template")


@dataclass(frozen=True, slots=True)
class IdentityTemplate:
    """A compiled identity template. Build with :meth:`parse`; match with :meth:`match`.

    Attributes:
        text: the template as written.
        trust_domain: the literal trust domain it matches.
        segments: one entry per fixed segment: ``(is_capture, literal_or_name)``.
        rest: the name captured by a trailing ``{name...}``, or ``None``.
    """

    text: str
    trust_domain: TrustDomain
    segments: tuple[tuple[bool, str], ...]
    rest: str | None

    @classmethod
    def parse(cls, text: str) -> "IdentityTemplate":
        """Compile ``text``.

        Raises:
            IdentityError: the template breaks a rule in the module docstring (``rule == "template"``),
                or its trust domain is malformed.
        """
        if not isinstance(text, str):
            raise _fail("expected a string", repr(text))
        if not text.startswith("spiffe://"):
            raise _fail("must start with 'spiffe://'", text)
        td_name, slash, path = text[len("spiffe://"):].partition("/")
        if "{" in td_name or "}" in td_name:
            raise _fail("the trust domain cannot be a placeholder", text)
        try:
            trust_domain = TrustDomain(td_name)
        except IdentityError as exc:
            raise _fail(f"bad trust domain: {exc}", text) from exc
        if not slash or not path:
            raise _fail("needs at least one path segment", text)
        raw = path.split("/")
        segments: list[tuple[bool, str]] = []
        rest: str | None = None
        seen: set[str] = set()
        for i, seg in enumerate(raw):
            if seg == "":
                raise _fail("empty path segment", text)
            if "{" not in seg and "}" not in seg:
                if seg in (".", "..") or _SEGMENT_RE.match(seg) is None:
                    raise _fail(f"literal segment {seg!r} is not a valid SPIFFE ID path segment", text)
                segments.append((False, seg))
                continue
            m = _PLACEHOLDER_RE.match(seg)
            if m is None or not seg.startswith("{"):
                raise _fail(f"a placeholder must be a whole segment, like '{{component}}', not {seg!r}", text)
            name, dots = m.group(1), m.group(2)
            if name not in CAPTURE_NAMES:
                raise _fail(f"unknown placeholder {{{name}}}; known are " + ", ".join(sorted(CAPTURE_NAMES)), text)
            if name in seen:
                raise _fail(f"placeholder {{{name}}} appears twice", text)
            seen.add(name)
            if dots:
                if name != "workload":
                    raise _fail(f"only {{workload...}} may capture several segments, not {{{name}...}}", text)
                if i != len(raw) - 1:
                    raise _fail("{workload...} must be the last segment", text)
                rest = name
            else:
                segments.append((True, name))
        if "component" not in seen:
            raise _fail("must capture {component}", text)
        return cls(text, trust_domain, tuple(segments), rest)

    def match(self, spiffe_id: SpiffeId) -> Mapping[str, str] | None:
        """The captures if ``spiffe_id`` matches this template, else ``None``."""
        if spiffe_id.trust_domain != self.trust_domain:
            return None
        segs = spiffe_id.segments
        fixed = len(self.segments)
        if (len(segs) != fixed) if self.rest is None else (len(segs) <= fixed):
            return None
        captures: dict[str, str] = {}
        for (is_capture, value), seg in zip(self.segments, segs):
            if is_capture:
                captures[value] = seg
            elif seg != value:
                return None
        if self.rest is not None:
            captures[self.rest] = "/".join(segs[fixed:])
        return captures

    def identity(self, spiffe_id: SpiffeId, captures: Mapping[str, str]) -> Identity:
        """The :class:`Identity` for ``spiffe_id`` given this template's ``captures``."""
        return Identity(
            spiffe_id,
            spiffe_id.trust_domain,
            component=captures.get("component"),
            tenant=captures.get("tenant"),
            workload=captures.get("workload"),
            template=self.text,
        )
