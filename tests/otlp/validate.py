#!/usr/bin/env python3
"""Validate OTLP/HTTP JSON bodies against the official OTLP protobuf definitions.

Usage: validate.py metrics|logs FILE [metrics|logs FILE ...]

Each FILE holds one request body as the forwarder sends it (docs/otlp-forwarding.md). A body
passes when:
  1. google.protobuf.json_format.Parse accepts it as ExportMetricsServiceRequest /
     ExportLogsServiceRequest of the `opentelemetry-proto` package (unknown fields refused);
  2. it is in canonical OTLP JSON form: MessageToDict of the parsed message (lowerCamelCase
     names, int64 and fixed64 as strings, enums as integers) equals the body, so no snake_case
     name, no number where a string belongs, no enum name slipped through;
  3. every metric has a name, a unit and exactly one of gauge/sum, every data point a time and a
     value, every sum a cumulative temporality, every log record an observed time.
Prints one line per file; exits 1 if any body fails, 2 if the packages are missing.
Requires: pip install opentelemetry-proto protobuf (.ci/run installs them).
"""

import json
import sys

try:
    from google.protobuf import json_format
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
except ImportError as error:  # pragma: no cover - environment problem, not a test result
    print(f"missing Python packages ({error}): pip install opentelemetry-proto protobuf", file=sys.stderr)
    sys.exit(2)


def canonical(message):
    return json_format.MessageToDict(
        message,
        preserving_proto_field_name=False,
        use_integers_for_enums=True,
    )


def first_difference(a, b, path=""):
    """The first path where a and b differ, with both values, or None."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            if key not in a or key not in b:
                return f"{path}/{key}: re-encoded {a.get(key, '(absent)')!r}, sent {b.get(key, '(absent)')!r}"
            found = first_difference(a[key], b[key], f"{path}/{key}")
            if found:
                return found
        return None
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return f"{path}: {len(a)} items re-encoded, {len(b)} sent"
        for i, (x, y) in enumerate(zip(a, b)):
            found = first_difference(x, y, f"{path}/{i}")
            if found:
                return found
        return None
    if a != b or type(a) is not type(b) and not (isinstance(a, (int, float)) and isinstance(b, (int, float))):
        return f"{path}: re-encoded {a!r}, sent {b!r}"
    return None


def check_metrics(body, problems):
    for rm in body.get("resourceMetrics", []):
        for sm in rm.get("scopeMetrics", []):
            for metric in sm.get("metrics", []):
                name = metric.get("name", "")
                if not name or not metric.get("unit"):
                    problems.append(f"metric {name!r} lacks a name or a unit")
                kinds = [k for k in ("gauge", "sum", "histogram", "exponentialHistogram", "summary") if k in metric]
                if kinds not in (["gauge"], ["sum"]):
                    problems.append(f"metric {name}: data kinds {kinds}, want exactly one of gauge/sum")
                    continue
                data = metric[kinds[0]]
                if kinds == ["sum"] and data.get("aggregationTemporality") != 2:
                    problems.append(f"metric {name}: sum not cumulative")
                if not data.get("dataPoints"):
                    problems.append(f"metric {name}: no data points")
                for point in data.get("dataPoints", []):
                    if int(point.get("timeUnixNano", "0")) <= 0:
                        problems.append(f"metric {name}: a data point without timeUnixNano")
                    if ("asInt" in point) == ("asDouble" in point):
                        problems.append(f"metric {name}: a data point without exactly one value")


def check_logs(body, problems):
    for rl in body.get("resourceLogs", []):
        for sl in rl.get("scopeLogs", []):
            for record in sl.get("logRecords", []):
                if int(record.get("observedTimeUnixNano", "0")) <= 0:
                    problems.append("a log record without observedTimeUnixNano")


def validate(kind, path):
    with open(path, encoding="utf-8") as f:
        text = f.read()
    body = json.loads(text)
    message = ExportMetricsServiceRequest() if kind == "metrics" else ExportLogsServiceRequest()
    try:
        json_format.Parse(text, message, ignore_unknown_fields=False)
    except json_format.ParseError as error:
        return [f"does not parse as {type(message).__name__}: {error}"]
    problems = []
    again = canonical(message)
    difference = first_difference(again, body)
    if difference:
        problems.append(f"not in canonical OTLP JSON form at {difference}")
    (check_metrics if kind == "metrics" else check_logs)(body, problems)
    if not (body.get("resourceMetrics") or body.get("resourceLogs")):
        problems.append("empty request")
    return problems


def main(argv):
    if len(argv) < 2 or len(argv) % 2:
        print(__doc__, file=sys.stderr)
        return 2
    failed = False
    for kind, path in zip(argv[0::2], argv[1::2]):
        if kind not in ("metrics", "logs"):
            print(f"{path}: unknown kind {kind}", file=sys.stderr)
            return 2
        problems = validate(kind, path)
        if problems:
            failed = True
            for problem in problems:
                print(f"FAIL {path} ({kind}): {problem}")
        else:
            print(f"ok {path} ({kind})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
