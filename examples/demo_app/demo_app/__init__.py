"""The demo service turnout deploys in `make demo` and the tests: a small Starlette app.

Its releases behave as `releases.toml` says (healthy, erroring, never ready, crashing, slow), so
every flow can be shown against it. Metrics are Prometheus text at /metrics:
`http_requests_total{release,slot,method,path,code}` and
`http_request_duration_seconds{release,slot}` (histogram).
"""
