"""deploy/grafana-dashboard.json: every query parses as PromQL, and every lb_* metric it reads is
exposed by a running balancer after some traffic."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from servers import free_port, wait_until

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana-dashboard.json"

# -- a small PromQL parser: enough of the grammar to reject a malformed query ---------------------

AGGREGATIONS = {
    "sum", "avg", "min", "max", "count", "group", "stddev", "stdvar", "topk", "bottomk",
    "quantile", "count_values",
}  # fmt: skip
FUNCTIONS = {
    "rate", "irate", "increase", "delta", "idelta", "histogram_quantile", "clamp_min",
    "clamp_max", "abs", "absent", "changes", "resets", "round", "ceil", "floor", "vector",
    "scalar", "time", "sort", "sort_desc", "label_replace", "avg_over_time", "max_over_time",
    "min_over_time", "sum_over_time", "count_over_time", "deriv", "predict_linear",
}  # fmt: skip
BINARY = {"+", "-", "*", "/", "%", "^", "==", "!=", ">", "<", ">=", "<=", "and", "or", "unless"}
TOKEN = re.compile(
    r"\s*(?:(?P<number>\d+(?:\.\d+)?(?:e[+-]?\d+)?)|(?P<duration>\[\d+[smhdwy]\])"
    r'|(?P<string>"(?:[^"\\]|\\.)*")|(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)'
    r"|(?P<op>==|!=|>=|<=|=~|!~|[-+*/%^<>=(){},]))"
)


def tokenize(text: str) -> list[tuple[str, str]]:
    tokens, pos = [], 0
    text = text.rstrip()
    while pos < len(text):
        match = TOKEN.match(text, pos)
        if match is None or match.end() == pos:
            raise SyntaxError(f"unexpected {text[pos:]!r}")
        kind = match.lastgroup
        assert kind is not None
        tokens.append((kind, match.group(kind)))
        pos = match.end()
    return tokens


class Parser:
    """Recursive descent over the tokens; collects the metric names of every selector."""

    def __init__(self, text: str) -> None:
        self.tokens = tokenize(text)
        self.i = 0
        self.metrics: set[str] = set()

    def peek(self) -> str | None:
        return self.tokens[self.i][1] if self.i < len(self.tokens) else None

    def take(self, expected: str | None = None) -> tuple[str, str]:
        if self.i >= len(self.tokens):
            raise SyntaxError(f"unexpected end, wanted {expected}")
        token = self.tokens[self.i]
        if expected is not None and token[1] != expected:
            raise SyntaxError(f"wanted {expected!r}, got {token[1]!r}")
        self.i += 1
        return token

    def parse(self) -> set[str]:
        self.expr()
        if self.i != len(self.tokens):
            raise SyntaxError(f"trailing {self.tokens[self.i :]}")
        return self.metrics

    def expr(self) -> None:
        self.unary()
        while self.peek() in BINARY:
            self.take()
            if self.peek() == "bool":
                self.take()
            if self.peek() in ("on", "ignoring"):
                self.take()
                self.labels()
            if self.peek() in ("group_left", "group_right"):
                self.take()
                if self.peek() == "(":
                    self.labels()
            self.unary()

    def unary(self) -> None:
        if self.peek() in ("-", "+"):
            self.take()
        self.primary()

    def primary(self) -> None:
        kind, value = self.take()
        if kind in ("number", "string"):
            return
        if value == "(":
            self.expr()
            self.take(")")
            self.range()
        elif value == "{":
            self.matchers()
            self.range()
        elif kind == "name" and value in AGGREGATIONS:
            if self.peek() in ("by", "without"):
                self.take()
                self.labels()
            self.args()
            if self.peek() in ("by", "without"):
                self.take()
                self.labels()
        elif kind == "name" and value in FUNCTIONS:
            self.args()
        elif kind == "name" and value not in BINARY:
            self.metrics.add(value)
            if self.peek() == "{":
                self.take()
                self.matchers()
            self.range()
        else:
            raise SyntaxError(f"unexpected {value!r}")

    def args(self) -> None:
        self.take("(")
        if self.peek() != ")":
            self.expr()
            while self.peek() == ",":
                self.take()
                self.expr()
        self.take(")")

    def labels(self) -> None:
        self.take("(")
        while self.peek() != ")":
            kind, _ = self.take()
            if kind != "name":
                raise SyntaxError("label name expected")
            if self.peek() == ",":
                self.take()
        self.take(")")

    def matchers(self) -> None:
        while self.peek() != "}":
            if self.take()[0] != "name":
                raise SyntaxError("label name expected")
            if self.take()[1] not in ("=", "!=", "=~", "!~"):
                raise SyntaxError("matcher operator expected")
            if self.take()[0] != "string":
                raise SyntaxError("label value must be a string")
            if self.peek() == ",":
                self.take()
        self.take("}")

    def range(self) -> None:
        if self.i < len(self.tokens) and self.tokens[self.i][0] == "duration":
            self.take()


def grafana_to_promql(expr: str) -> str:
    """Grafana's variables as Prometheus sees them once Grafana substituted them."""
    expr = expr.replace("$__rate_interval", "1m").replace("$__interval", "15s")
    return re.sub(r"\$\{?[a-zA-Z_]+\}?", ".*", expr)


def parse_promql(expr: str) -> set[str]:
    return Parser(grafana_to_promql(expr)).parse()


@pytest.mark.parametrize(
    "bad",
    [
        "sum(rate(lb_requests_total[1m])",
        "rate(lb_requests_total{pool=}[1m])",
        "lb_requests_total{pool=~web}",
        "sum by pool (lb_requests_total)",
        "histogram_quantile(0.5, lb_x_bucket) lb_y",
        "rate(lb_requests_total[1m]) /",
    ],
)
def test_the_parser_rejects_malformed_queries(bad: str) -> None:
    with pytest.raises(SyntaxError):
        parse_promql(bad)


# -- the dashboard -------------------------------------------------------------------------------


def dashboard_queries() -> list[str]:
    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "expr" and isinstance(value, str):
                    found.append(value)
                else:
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(json.loads(DASHBOARD.read_text()))
    return found


def test_dashboard_shows_the_issue_panels() -> None:
    doc = json.loads(DASHBOARD.read_text())
    queries = " ".join(dashboard_queries())
    assert doc["uid"] and doc["panels"]
    for needed in (
        "histogram_quantile(0.5,", "histogram_quantile(0.95,", "histogram_quantile(0.99,",
        'code="5xx"', "lb_backend_up", "lb_health_checks_total", "rate(lb_requests_total",
    ):  # fmt: skip
        assert needed in queries, needed
    ids = [p["id"] for p in doc["panels"]]
    assert len(ids) == len(set(ids))


def exposed_names(text: str) -> tuple[set[str], set[str]]:
    """(names a query may select, of which those with samples now) from an exposition."""
    selectable, with_samples = set(), set()
    for family in text_string_to_metric_families(text):
        suffixes = {
            "counter": ("_total",),
            "histogram": ("_bucket", "_sum", "_count"),
        }.get(family.type, ("",))
        selectable.update(family.name + s for s in suffixes)
        with_samples.update(s.name for s in family.samples)
    return selectable, with_samples


def test_every_metric_the_dashboard_queries_is_exposed(start_backends, start_balancer) -> None:  # type: ignore[no-untyped-def]
    ((_, server),) = start_backends(1)
    dead = f"http://127.0.0.1:{free_port()}"
    lb = start_balancer(
        {
            "pools": {
                "web": {
                    "backends": [{"url": dead, "id": "dead"}, {"url": server.url, "id": "live"}],
                    "health_check": {"path": "/health", "interval": "1s", "timeout": "1s"},
                }
            },
            "logging": {"access_log": False},
        }
    )
    with httpx.Client(base_url=lb.url) as client:
        for _ in range(5):
            client.get("/")

    def counted() -> bool:
        text = httpx.get(lb.url + "/_lb/metrics").text
        return 'lb_request_duration_seconds_count{backend="live",pool="web"} 5.0' in text

    wait_until(counted, 5)
    selectable, with_samples = exposed_names(httpx.get(lb.url + "/_lb/metrics").text)
    used: set[str] = set()
    for query in dashboard_queries():
        used |= parse_promql(query)
    assert used, "no metric found in the dashboard"
    for variable in json.loads(DASHBOARD.read_text())["templating"]["list"]:
        query = variable.get("definition", "")
        used |= set(re.findall(r"label_values\((\w+)", query))
    assert all(name.startswith("lb_") for name in used)
    missing = sorted(used - selectable)
    assert not missing, f"the dashboard queries metrics lb does not expose: {missing}"
    # What this traffic exercised has samples, not only a declaration.
    for name in (
        "lb_requests_total", "lb_request_duration_seconds_bucket", "lb_backend_up",
        "lb_backend_active_requests", "lb_upstream_errors_total", "lb_retries_total",
        "lb_pool_usable_backends", "lb_pool_panic", "lb_ejections_total", "lb_rate_limited_total",
    ):  # fmt: skip
        assert name in used and name in with_samples, name
