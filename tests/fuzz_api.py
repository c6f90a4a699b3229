"""Fuzz every operation of a live server's /openapi.json with schemathesis, with a valid key.

Each operation gets input that fits its schema and input that breaks it, each with generated
path ids (mostly unknown: 404s) and with the ids of real resources, so handlers past the
ownership check see generated input too (DELETEs only with generated ids, so the resources last
the run). A response is a failure when it is a 5xx or when a documented status comes with a body
its schema refuses. Used by tests/service/test_fuzz.py (few examples) and
benchmarks/service_fuzz.py (many).
"""

from __future__ import annotations

import contextlib
import itertools
import re
from collections import Counter
from dataclasses import dataclass, field

import hypothesis
from hypothesis import HealthCheck, Phase


@dataclass
class FuzzReport:
    calls: Counter = field(default_factory=Counter)  # operation -> requests sent
    statuses: Counter = field(default_factory=Counter)  # status code -> responses
    failures: list[str] = field(default_factory=list)  # "operation: check: message"

    @property
    def server_errors(self) -> int:
        return sum(n for status, n in self.statuses.items() if status >= 500)


def _ids_for(path: str, ids: dict[str, str]) -> dict[str, str] | None:
    names = re.findall(r"{(\w+)}", path)
    if not names or any(name not in ids for name in names):
        return None
    return {name: ids[name] for name in names}


def fuzz_api(
    base_url: str, key: str, ids: dict[str, str], examples: int, negative: bool = True
) -> FuzzReport:
    """`negative`: also bodies, queries and path values that break the schema (4xx expected)."""
    import schemathesis
    from schemathesis import GenerationMode

    modes = [GenerationMode.POSITIVE] + ([GenerationMode.NEGATIVE] if negative else [])

    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json")
    headers = {"Authorization": f"Bearer {key}"}
    report = FuzzReport()
    for result in schema.get_all_operations():
        operation = result.ok()
        label = f"{operation.method.upper()} {operation.path}"
        fixed = _ids_for(operation.path, ids)
        variants = [None] if fixed is None or operation.method == "delete" else [None, fixed]
        for mode, path_parameters in itertools.product(modes, variants):
            strategy = operation.as_strategy(generation_mode=mode, path_parameters=path_parameters)
            _fuzz_operation(strategy, label, base_url, headers, examples, report)
    return report


def _fuzz_operation(strategy, label, base_url, headers, examples, report: FuzzReport) -> None:
    from schemathesis.checks import not_a_server_error
    from schemathesis.core.failures import FailureGroup
    from schemathesis.specs.openapi.checks import response_schema_conformance

    @hypothesis.settings(
        max_examples=examples,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate],  # no shrinking: every failure is kept
        suppress_health_check=list(HealthCheck),
    )
    @hypothesis.given(case=strategy)
    def send(case):
        response = case.call(base_url=base_url, headers=headers, timeout=60)
        report.calls[label] += 1
        report.statuses[response.status_code] += 1
        for check in (not_a_server_error, response_schema_conformance):
            try:
                case.validate_response(response, checks=[check], headers=headers)
            except (FailureGroup, Exception) as failure:  # the group is a BaseExceptionGroup
                first = str(failure).strip().splitlines()
                report.failures.append(
                    f"{label} -> {response.status_code}: {check.__name__}: "
                    f"{first[0] if first else type(failure).__name__}"
                )

    with contextlib.suppress(hypothesis.errors.Unsatisfiable):  # nothing to break (health)
        send()
