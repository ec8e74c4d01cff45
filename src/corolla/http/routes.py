"""The REST API's one route table: which API, model and version each request is for.

Every REST route is a :class:`Route` in one :class:`RouteTable`. The outermost middleware
(corolla.http.observe) matches each request once and stores the :class:`RouteMatch` in
``scope["corolla.route"]``; everything after reads it: request metrics and the access log (API
and model), auth (the model a key must be allowed to call), and :class:`corolla.http.app.Router`,
which answers 404/405 or calls the matched route's handler, whose handler reads the model,
version and label from the same match. A route exists only by being in the table, so no route
can answer without auth having seen which model it is for.

Path templates name their parameters: ``{name}`` (the model), ``{version}``, ``{label}``. In TF
Serving's ``/v1/models/...`` paths a parameter stops at ``:`` too (``:predict``) and a trailing
slash is accepted, as TF Serving does. A route with ``prefix=True`` takes every path under its
template (TF Serving's catch-all: any other ``/v1/models/...`` path is a malformed request).
GET routes answer HEAD as well.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import NamedTuple

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Scope

Handler = Callable[[Request], Awaitable[Response]]

SCOPE_KEY = "corolla.route"
_PARAM = re.compile(r"\{(name|version|label)\}")


@dataclass(frozen=True, kw_only=True)
class Route:
    # The API's name (TF Serving's or KServe V2's: Predict, ModelInfer...), the request metrics'
    # API label; None for paths that are no API (a malformed request).
    api: str | None
    path: str
    methods: frozenset[str]
    handler: Handler
    prefix: bool = False  # every path under ``path``
    regex: re.Pattern[str] = field(init=False, repr=False, compare=False)
    # The literal text after the last parameter, and whether a trailing "/" may follow it.
    tail: str = field(init=False, repr=False, compare=False)
    slash: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        v1 = self.path.startswith("/v1/")
        segment = "[^/:]+" if v1 else "[^/]+"
        parts = _PARAM.split(self.path)
        pattern = "".join(re.escape(p) if i % 2 == 0 else f"(?P<{p}>{segment})"
                          for i, p in enumerate(parts))
        if self.prefix:
            pattern += ".*"
        elif v1:
            pattern += "/?"
        object.__setattr__(self, "regex", re.compile(pattern, re.DOTALL))
        object.__setattr__(self, "tail", parts[-1] if len(parts) > 1 else self.path)
        object.__setattr__(self, "slash", v1)
        if "GET" in self.methods and "HEAD" not in self.methods:
            object.__setattr__(self, "methods", self.methods | {"HEAD"})

    @property
    def model_scoped(self) -> bool:
        """The route names a model: a key must be allowed to call it."""
        return "{name}" in self.path

    def example(self, name: str = "m", version: str = "1", label: str = "stable") -> str:
        """A path this route takes (tests, docs)."""
        return self.path.format(name=name, version=version, label=label)


class RouteMatch(NamedTuple):
    """A request's route and the parameters its path gave (a tuple: one is made per request)."""

    route: Route
    params: dict[str, str]
    # Non-empty: the path is the route's but not the method; the methods that are allowed.
    allowed: tuple[str, ...] = ()

    @property
    def api(self) -> str | None:
        return self.route.api

    @property
    def model(self) -> str | None:
        return self.params.get("name")

    @property
    def version(self) -> str | None:
        return self.params.get("version")

    @property
    def label(self) -> str | None:
        return self.params.get("label")


class RouteTable:
    """Matches a request to its route: exact paths by a dict, the others by the literal text
    before their first parameter, in the table's order."""

    def __init__(self, routes: Iterable[Route]) -> None:
        self.routes = tuple(routes)
        self._exact: dict[str, list[Route]] = {}
        groups: dict[str, list[Route]] = {}
        for route in self.routes:
            if "{" in route.path or route.prefix:
                groups.setdefault(route.path.split("{", 1)[0], []).append(route)
            else:
                self._exact.setdefault(route.path, []).append(route)
        # Longest prefix first; a group also holds the routes of the shorter prefixes that
        # its own starts with, so the first group whose prefix a path starts with is enough.
        order = sorted(groups, key=len, reverse=True)
        self._groups = [(p, [r for q in order if p.startswith(q) for r in groups[q]])
                        for p in order]

    def match(self, method: str, path: str) -> RouteMatch | None:
        """The route for ``method`` and ``path``; a match with ``allowed`` set when the path
        is a route's but the method is none of its; None when no route takes the path."""
        candidates = self._exact.get(path)
        if candidates is None:
            for prefix, group in self._groups:
                if path.startswith(prefix):
                    candidates = group
                    break
            else:
                return None
        first: RouteMatch | None = None
        allowed: frozenset[str] = frozenset()
        for route in candidates:
            # The literal text after the last parameter rules most routes out cheaply.
            if not (route.prefix or path.endswith(route.tail)
                    or (route.slash and path.endswith(route.tail + "/"))):
                continue
            m = route.regex.fullmatch(path)
            if m is None:
                continue
            if method in route.methods:
                return RouteMatch(route, m.groupdict())
            if first is None:
                first = RouteMatch(route, m.groupdict())
            allowed |= route.methods
        if first is None:
            return None
        return RouteMatch(first.route, first.params, tuple(sorted(allowed)))


def match_once(table: RouteTable, scope: Scope) -> RouteMatch | None:
    """The request's match: the one already in its scope, else matched now and stored."""
    if SCOPE_KEY in scope:
        found: RouteMatch | None = scope[SCOPE_KEY]
        return found
    found = scope[SCOPE_KEY] = table.match(scope["method"], scope["path"])
    return found


def route_of(scope: Scope) -> RouteMatch:
    """The match that the router called a handler for."""
    match = scope.get(SCOPE_KEY)
    assert isinstance(match, RouteMatch)
    return match
