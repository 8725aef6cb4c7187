"""A Kubernetes API server stand-in on 127.0.0.1 for `raytron k8s apply|status|logs`: the calls they make, recorded."""

from __future__ import annotations

import json
import re
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import yaml

TOKEN = "test-bearer-token"
KUBERAY_RESOURCES = {"rayjobs": "RayJob", "rayservices": "RayService", "rayclusters": "RayCluster"}
OBJECT_PATH = re.compile(r"^/(api/v1|apis/[^/]+/[^/]+)/namespaces/([^/]+)/([^/]+)/([^/]+)$")


def status(code: int, reason: str, message: str) -> dict:
    """The API's error body (a meta/v1 Status)."""
    return {"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message, "reason": reason, "code": code}


class KubeAPIServer:
    """Objects by path, pods with logs; `kuberay=False` serves a cluster without the KubeRay CRDs."""

    def __init__(self, kuberay: bool = True):
        self.kuberay = kuberay
        self.objects: dict[str, dict] = {}
        self.pods: dict[str, tuple[dict, str]] = {}
        self.requests: list[dict] = []
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self.handler())
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __enter__(self):
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()

    def kubeconfig(self, path: Path, namespace: str = "raytron") -> Path:
        """A kubeconfig whose current context is this server, with a bearer token."""
        path.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "test",
            "clusters": [{"name": "test", "cluster": {"server": self.url}}],
            "users": [{"name": "test", "user": {"token": TOKEN}}],
            "contexts": [{"name": "test", "context": {"cluster": "test", "user": "test", "namespace": namespace}}],
        }))
        return path

    def add_pod(self, namespace: str, name: str, labels: dict, log: str, created: str) -> None:
        pod = {"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": name, "namespace": namespace, "labels": labels, "creationTimestamp": created}}
        self.pods[f"{namespace}/{name}"] = (pod, log)

    def answer(self, method: str, path: str, query: dict, body: bytes, headers) -> tuple[int, object]:
        if headers.get("Authorization") != f"Bearer {TOKEN}":
            return 401, status(401, "Unauthorized", "Unauthorized")
        if path.startswith("/apis/ray.io/") and not self.kuberay:
            return 404, status(404, "NotFound", "the server could not find the requested resource")
        if method == "GET" and path == "/apis/ray.io/v1":
            return 200, {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "ray.io/v1", "resources": [
                {"name": plural, "singularName": kind.lower(), "namespaced": True, "kind": kind,
                 "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"]}
                for plural, kind in KUBERAY_RESOURCES.items()]}
        if method == "GET" and (pods := re.fullmatch(r"/api/v1/namespaces/([^/]+)/pods", path)):
            wanted = dict(pair.split("=", 1) for pair in query.get("labelSelector", [""])[0].split(",") if pair)
            items = [pod for key, (pod, _) in self.pods.items() if key.startswith(f"{pods[1]}/")
                     and wanted.items() <= pod["metadata"]["labels"].items()]
            return 200, {"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": items}
        if method == "GET" and (log := re.fullmatch(r"/api/v1/namespaces/([^/]+)/pods/([^/]+)/log", path)):
            key = f"{log[1]}/{log[2]}"
            return (200, self.pods[key][1]) if key in self.pods else (404, status(404, "NotFound", f'pods "{log[2]}" not found'))
        match = OBJECT_PATH.fullmatch(path)
        if match is None:
            return 404, status(404, "NotFound", "the server could not find the requested resource")
        _, namespace, plural, name = match.groups()
        if method == "GET":
            if path in self.objects:
                return 200, self.objects[path]
            return 404, status(404, "NotFound", f'{plural} "{name}" not found')
        if method == "PATCH":
            if headers.get("Content-Type") != "application/apply-patch+yaml" or "fieldManager" not in query:
                return 415, status(415, "UnsupportedMediaType", "server-side apply needs apply-patch+yaml and a fieldManager")
            obj = yaml.safe_load(body)
            if obj["metadata"]["name"] != name:
                return 400, status(400, "BadRequest", "the name in the body does not match the URL")
            created = path not in self.objects
            stored = json.loads(json.dumps(obj))
            stored["metadata"].update(namespace=namespace, uid=str(uuid.uuid4()), resourceVersion="1")
            self.objects[path] = stored
            return (201 if created else 200), stored
        return 405, status(405, "MethodNotAllowed", f"{method} is not supported here")


    def handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def respond(self):
                url = urlsplit(self.path)
                query = parse_qs(url.query)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                server.requests.append({"method": self.command, "path": url.path, "query": query,
                                        "headers": {k.lower(): v for k, v in self.headers.items()}, "body": body})
                code, payload = server.answer(self.command, url.path, query, body, self.headers)
                data = payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()
                self.send_response(code)
                self.send_header("Content-Type", "text/plain" if isinstance(payload, str) else "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_PATCH = do_POST = do_PUT = do_DELETE = respond

            def log_message(self, *args):
                pass

        return Handler
