#!/usr/bin/env python3
"""Parses a `/metrics` scrape (standard input) with the Prometheus project's own parser (the
`prometheus_client` package's OpenMetrics parser, strict: names, labels, types and the `# EOF`
terminator are checked) and prints its samples as a JSON array of
`{"name", "labels", "value", "type"}` on standard output. Exit status 1 with the parser's message
when the text is not valid. Used by the metrics tests (tests/tests/metrics.rs); needs the venv of
scripts/setup.sh.
"""

import json
import sys

from prometheus_client.openmetrics.parser import text_string_to_metric_families


def main() -> int:
    text = sys.stdin.read()
    try:
        samples = [
            {"name": s.name, "labels": dict(s.labels), "value": s.value, "type": family.type}
            for family in text_string_to_metric_families(text)
            for s in family.samples
        ]
    except Exception as error:  # the parser raises ValueError and friends
        print(f"not valid OpenMetrics text: {error}", file=sys.stderr)
        return 1
    json.dump(samples, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
