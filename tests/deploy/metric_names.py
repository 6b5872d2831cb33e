"""The metric names replicator defines (deploy/metrics.txt) and the names a
PromQL expression references, so dashboards and rules can be checked
against the one list."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
METRICS_TXT = ROOT / "deploy" / "metrics.txt"
#: Series Prometheus itself makes for every scrape target.
PROMETHEUS_OWN = {"up", "scrape_duration_seconds", "scrape_samples_scraped"}

_KEYWORDS = {
    "and", "or", "unless", "by", "without", "on", "ignoring", "group_left",
    "group_right", "bool", "offset", "inf", "nan", "atan2",
}  # fmt: skip
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_BRACES = re.compile(r"\{[^}]*\}|\[[^\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")


@dataclass(frozen=True)
class Family:
    name: str
    type: str
    labels: tuple[str, ...]
    exporter: str

    def series_names(self) -> set[str]:
        if self.type == "histogram":
            return {f"{self.name}_{s}" for s in ("bucket", "sum", "count")}
        return {self.name}


def families() -> list[Family]:
    out = []
    for line in METRICS_TXT.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, kind, labels, exporter = line.split()
            out.append(
                Family(name, kind, tuple(labels.split(",")) if labels != "-" else (), exporter)
            )
    return out


def defined_series() -> set[str]:
    return {s for f in families() for s in f.series_names()} | PROMETHEUS_OWN


def referenced_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression: what is left once strings,
    label matchers, ranges, grouping clauses, function calls, keywords and
    numbers are taken out."""
    text = _STRING.sub('""', expr)
    text = _BRACES.sub(" ", text)
    text = _GROUPING.sub(" ", text)
    text = re.sub(r"\b\d+(?:\.\d+)?(?:e[+-]?\d+)?[smhdwy]?\b", " ", text)
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        word = match.group()
        rest = text[match.end() :].lstrip()
        if rest.startswith("(") or word.lower() in _KEYWORDS:
            continue  # a function call or an operator
        names.add(word)
    return names
