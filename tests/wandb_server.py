"""A stand-in for W&B's server on 127.0.0.1, for the online-mode tests (W&B's cloud cannot be reached from CI).

It speaks the parts of W&B's public API that the SDK's wandb-core uses for a run with metrics and artifacts:
GraphQL at /graphql (the operations answered by name, in the shapes of W&B's public schema), the run's file stream
(`POST /files/<entity>/<project>/<run>/file_stream`, JSON lines per file), and uploads to the URLs it hands out
(`PUT /storage/...`). It keeps what it received so a test can read it back: runs, history rows, summaries,
uploaded files, artifacts (with their manifests) and which run used which artifact.
"""

from __future__ import annotations

import base64
import json
import re
import threading
from collections import defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

OPERATION = re.compile(r"(?:query|mutation)\s+(\w+)")


def node_id(kind: str, key: str) -> str:
    """W&B's global ids are base64 of "<Type>:<key>"."""
    return base64.b64encode(f"{kind}:{key}".encode()).decode()


class WandbServer:
    """`with WandbServer() as server:` serves on `server.url` (pass it as WANDB_BASE_URL) until the block ends."""

    def __init__(self):
        self.lock = threading.Lock()
        self.operations: list[str] = []  # GraphQL operation names, in order
        self.runs: dict[str, dict] = {}  # run name -> its last UpsertBucket variables
        self.history: dict[str, list[dict]] = defaultdict(list)  # run name -> history rows
        self.summary: dict[str, dict] = {}  # run name -> last summary
        self.exit_codes: dict[str, int] = {}
        self.uploads: dict[str, bytes] = {}  # storage path -> bytes
        self.artifacts: dict[str, dict] = {}  # artifact id -> {name, type, digest, state, version, run, aliases, ...}
        self.used: list[tuple[str, str]] = []  # (run name, artifact name) for every use_artifact
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self.handler())
        self.url = f"http://127.0.0.1:{self.server.server_port}"

    def __enter__(self) -> WandbServer:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    # GraphQL: one method per operation name (wandb-core sends `operationName`)

    def graphql(self, operation: str, variables: dict) -> dict:
        """The answer to one GraphQL operation; a mutation's fields arrive in its `input` variable."""
        with self.lock:
            self.operations.append(operation)
            answer = getattr(self, f"op_{operation}", None)
            return {"data": answer(variables.get("input", variables))} if answer else {"data": None, "errors": [
                {"message": f"fake W&B server: operation {operation} is not implemented"}]}

    def op_Viewer(self, _):
        return {"viewer": {"id": node_id("User", "raytron"), "entity": "raytron", "username": "raytron",
                           "email": "ci@raytron.invalid", "flags": "{}", "teams": {"edges": []}}}

    def op_ServerFeaturesQuery(self, _):
        return {"serverInfo": {"features": []}}

    def op_OrganizationCoreWeaveOrganizationID(self, _):
        return {"entity": {"organization": None}}

    def op_UpsertBucket(self, v):
        name = v["name"]
        run = {**self.runs.get(name, {}), **{k: val for k, val in v.items() if val is not None}}
        self.runs[name] = run
        return {"upsertBucket": {"inserted": True, "bucket": {
            "id": node_id("Run", name), "name": name, "displayName": run.get("displayName"),
            "description": run.get("description"), "config": run.get("config"), "sweepName": None,
            "historyLineCount": len(self.history[name]),
            "project": {"id": node_id("Project", v["project"]), "name": v["project"],
                        "entity": {"id": node_id("Entity", v["entity"]), "name": v["entity"]}}}}}

    def op_RunResumeStatus(self, v):
        """What a resumed run continues from (W&B's `model.bucket`): its history's line count and tail (JSON lines,
        the last one's `_step` + 1 is where it goes on), summary and config; no bucket for a run never seen."""
        run, rows = self.runs.get(v["name"]), self.history.get(v["name"], [])
        bucket = run and {
            "id": node_id("Run", v["name"]), "name": v["name"], "displayName": run.get("displayName"),
            "summaryMetrics": json.dumps(self.summary.get(v["name"], {})), "logLineCount": 0,
            "historyLineCount": len(rows), "historyTail": json.dumps([json.dumps(row) for row in rows[-10:]]),
            "eventsLineCount": 0, "eventsTail": "[]", "config": run.get("config") or "{}", "tags": [],
            "wandbConfig": "{}"}
        return {"model": {"id": node_id("Project", v.get("project") or ""), "name": v.get("project"),
                          "entity": {"id": node_id("Entity", v.get("entity") or ""), "name": v.get("entity")},
                          "bucket": bucket}}

    def op_CreateRunFiles(self, v):
        return {"createRunFiles": {"runID": node_id("Run", v["run"]), "uploadHeaders": [], "files": [
            {"name": f, "uploadUrl": f"{self.url}/storage/runs/{v['run']}/{f}"} for f in v["files"]]}}

    def project(self, a: dict) -> dict:
        return {"id": node_id("Project", a["project"]), "internalId": "1", "name": a["project"],
                "entity": {"name": a["entity"]}}

    def artifact_node(self, artifact_id: str) -> dict:
        """An artifact as W&B's `ArtifactFragment` (what the SDK reads back after logging one)."""
        a = self.artifacts[artifact_id]
        collection = {"__typename": "ArtifactSequence", "name": a["name"], "project": self.project(a)}
        return {"__typename": "Artifact", "id": artifact_id, "artifactSequence": collection,
                "versionIndex": a["version"], "artifactType": {"name": a["type"]}, "description": None,
                "metadata": a["metadata"], "ttlDurationSeconds": -1, "ttlIsInherited": True, "tags": [],
                "historyStep": None, "state": a["state"], "size": 0, "digest": a["digest"], "commitHash": None,
                "fileCount": 0, "createdAt": "2026-01-01T00:00:00", "updatedAt": "2026-01-01T00:00:00",
                "aliases": [{"__typename": "ArtifactAlias", "id": node_id("ArtifactAlias", f"{artifact_id}:{alias}"),
                             "alias": alias, "artifactCollection": collection} for alias in a["aliases"]]}

    def op_CreateArtifact(self, v):
        name = v["artifactCollectionName"]
        found = next((i for i, a in self.artifacts.items() if a["name"] == name and a["digest"] == v["digest"]), None)
        if found is None:  # a new version of the collection (the same digest again is the same version)
            version = sum(a["name"] == name for a in self.artifacts.values())
            aliases = [a["alias"] for a in v.get("aliases") or []]
            for older in self.artifacts.values():  # an alias names one version of a collection: the newest
                if older["name"] == name:
                    older["aliases"] = [alias for alias in older["aliases"] if alias not in aliases]
            found = node_id("Artifact", f"{name}:v{version}")
            self.artifacts[found] = {"name": name, "type": v["artifactTypeName"], "digest": v["digest"],
                                     "state": "PENDING", "version": version, "run": v.get("runName"),
                                     "entity": v["entityName"], "project": v["projectName"],
                                     "aliases": aliases,
                                     "metadata": v.get("metadata")}
        return {"createArtifact": {"artifact": {"id": found, "state": self.artifacts[found]["state"],
                                                "artifactSequence": {"latestArtifact": None}}}}

    def op_CreateArtifactManifest(self, v):
        return {"createArtifactManifest": {"artifactManifest": {"id": node_id("ArtifactManifest", v["artifactID"]), "file": {
            "id": node_id("File", v["artifactID"]), "uploadUrl": f"{self.url}/storage/manifests/{v['artifactID']}",
            "uploadHeaders": []}}}}

    def op_CreateArtifactFiles(self, v):
        def node(spec):
            path = f"artifacts/{spec['artifactID']}/{spec['name']}"
            return {"node": {"storagePath": path, "uploadUrl": f"{self.url}/storage/{path}", "uploadHeaders": [],
                             "uploadMultipartUrls": None, "artifact": {"id": spec["artifactID"]}}}
        return {"createArtifactFiles": {"files": {"edges": [node(spec) for spec in v["artifactFiles"]]}}}

    def op_CommitArtifact(self, v):
        artifact = self.artifacts[v["artifactID"]]
        artifact["state"] = "COMMITTED"
        return {"commitArtifact": {"artifact": {"id": v["artifactID"], "digest": artifact["digest"]}}}

    def op_UseArtifact(self, v):
        self.used.append((v["runName"], self.artifacts[v["artifactID"]]["name"]))
        return {"useArtifact": {"artifact": {"id": v["artifactID"]}}}

    def op_ArtifactType(self, v):
        """The type of `name` ("collection:alias" or ":vN"), to refuse logging one name under two types."""
        collection, _, alias = v["name"].partition(":")
        found = [a for a in self.artifacts.values() if a["name"] == collection and a["project"] == v["project"]
                 and (alias in a["aliases"] or alias == f"v{a['version']}")]
        return {"project": {"artifact": {"artifactType": {"name": found[0]["type"]}} if found else None}}

    def op_ArtifactByID(self, v):
        return {"artifact": self.artifact_node(v["id"]) if v["id"] in self.artifacts else None}

    # HTTP

    def handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def body(self) -> bytes:
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def reply(self, status: int, payload: dict | None = None) -> None:
                data = b"" if payload is None else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self):
                body = self.body()
                if self.path.startswith("/graphql"):
                    query = json.loads(body)  # the Python SDK's queries name their operation in the text only
                    operation = query.get("operationName") or OPERATION.search(query["query"]).group(1)
                    return self.reply(200, server.graphql(operation, query.get("variables") or {}))
                parts = self.path.strip("/").split("/")
                if parts[0] == "files" and parts[-1] == "file_stream":
                    server.file_stream(parts[-2], json.loads(body))  # /files/[<entity>/]<project>/<run>/file_stream
                    return self.reply(200, {"exitcode": None, "limits": {}})
                return self.reply(200, {})  # the SDK's own telemetry (/sdk/otel/...): accepted, not kept

            def do_PUT(self):
                body = self.body()
                with server.lock:
                    server.uploads[self.path.removeprefix("/storage/")] = body
                self.reply(200)

            def do_GET(self):
                with server.lock:
                    data = server.uploads.get(self.path.removeprefix("/storage/"))
                if data is not None:
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                else:
                    self.reply(404, {"error": f"not found: {self.path}"})

        return Handler

    def file_stream(self, run: str, payload: dict) -> None:
        with self.lock:
            files = payload.get("files") or {}
            history, summary = (files.get(name, {}).get("content", []) for name in ("wandb-history.jsonl",
                                                                                     "wandb-summary.json"))
            self.history[run].extend(json.loads(line) for line in history)
            if summary:
                self.summary[run] = json.loads(summary[-1])
            if payload.get("complete"):
                self.exit_codes[run] = payload.get("exitcode")
