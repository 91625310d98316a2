#!/usr/bin/python3
"""Parse OpenMetrics text (a file, or stdin) with prometheus_client's parser;
with --prometheus first, the Prometheus text format (0.0.4) instead.

Prints one line per sample, tab-separated: family name, family type, sample
name, labels as k=v joined by commas (sorted), value. Exits 1 with the
parser's message if the text is not valid OpenMetrics (a missing `# EOF`
included), 2 if prometheus_client is missing.
"""

import sys

try:
    from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
    from prometheus_client.parser import text_string_to_metric_families as parse_prometheus
except ImportError as e:
    print(f"parse_openmetrics: {e} (apt-get install python3-prometheus-client)", file=sys.stderr)
    sys.exit(2)


def main():
    args = sys.argv[1:]
    parse = parse_openmetrics
    if args and args[0] == "--prometheus":
        parse = parse_prometheus
        args = args[1:]
    text = open(args[0], encoding="utf-8").read() if args else sys.stdin.read()
    try:
        families = list(parse(text))
    except ValueError as e:
        print(f"parse_openmetrics: {e}", file=sys.stderr)
        return 1
    for fam in families:
        for s in fam.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
            print(f"{fam.name}\t{fam.type}\t{s.name}\t{labels}\t{s.value:g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
