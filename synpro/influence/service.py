"""Influence scoring as an HTTP service, its client, and `InfluenceSource`: where a reward gets its scores.

The service (`synpro serve-influence`) holds θ and θ′ on one GPU and answers GRPO workers elsewhere:
  POST /influence {"texts": [...]} -> {"influence": [...]}     GET /health -> {"key", "max_tokens"}
It binds 127.0.0.1 unless told otherwise and serves one batch at a time (the models are the bottleneck).
The stdlib server and urllib client are enough for this one JSON endpoint: no extra dependency.
"""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass
from functools import cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Protocol, Sequence

from synpro.errors import InputError


class Scores(Protocol):
    def influence(self, texts: Sequence[str]) -> list[float]: ...


@dataclass(frozen=True)
class InfluenceSource:
    """Picklable settings of an influence scorer: a service URL, or the checkpoints to load in this process."""

    url: str | None = None
    base_dir: Path | None = None
    probe_dir: Path | None = None
    tokenizer_dir: Path | None = None
    cache_path: Path | None = None
    max_tokens: int = 2048
    batch_size: int = 16
    device: str = "auto"
    timeout_seconds: float = 300
    precision: str | None = None

    def open(self) -> Scores:
        return _open(self)


def source_for(spec, base_dir: Path | None = None, probe_dir: Path | None = None,
               tokenizer_dir: Path | None = None) -> InfluenceSource:
    """The spec's influence scorer: its service when influence.url is set, else θ and θ′ loaded in process, with
    scores cached in <workdir>/cache/influence.sqlite."""
    cfg = spec.influence
    if cfg.url:
        return InfluenceSource(url=cfg.url, timeout_seconds=cfg.timeout_seconds)
    return InfluenceSource(base_dir=Path(base_dir), probe_dir=Path(probe_dir), tokenizer_dir=Path(tokenizer_dir),
                           cache_path=spec.workdir / "cache" / "influence.sqlite", max_tokens=cfg.max_tokens,
                           batch_size=cfg.batch_size, device=cfg.device, timeout_seconds=cfg.timeout_seconds,
                           precision=cfg.precision)


@cache  # one scorer (two models) per process and source
def _open(source: InfluenceSource) -> Scores:
    if source.url:
        return InfluenceClient(source.url, source.timeout_seconds)
    from synpro.influence.scoring import InfluenceScorer

    return InfluenceScorer(source.base_dir, source.probe_dir, source.tokenizer_dir, max_tokens=source.max_tokens,
                           batch_size=source.batch_size, device=source.device, cache_path=source.cache_path,
                           precision=source.precision)


class InfluenceClient:
    def __init__(self, url: str, timeout: float = 300):
        self.url, self.timeout = url.rstrip("/"), timeout

    def health(self) -> dict:
        return self._call("GET", "/health")

    def influence(self, texts: Sequence[str]) -> list[float]:
        return self._call("POST", "/influence", {"texts": list(texts)})["influence"]

    def _call(self, method: str, path: str, body: dict | None = None) -> dict:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.url + path, data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return json.loads(response.read())
        except (urllib.error.URLError, OSError) as exc:
            raise InputError.one(f"the influence service at {self.url} cannot be reached: {exc}", key="influence.url",
                                 hint="start it with `synpro serve-influence SPEC --checkpoint DIR`, "
                                      "or unset influence.url to score in this process") from None


def make_server(scorer, host: str = "127.0.0.1", port: int = 8642) -> ThreadingHTTPServer:
    """A server answering for scorer (an InfluenceScorer); call serve_forever() on it."""
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path != "/health":
                return self._send(404, {"error": "unknown path"})
            self._send(200, {"key": scorer.key, "max_tokens": scorer.max_tokens})

        def do_POST(self) -> None:
            if self.path != "/influence":
                return self._send(404, {"error": "unknown path"})
            try:
                texts = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))["texts"]
                if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
                    raise ValueError("texts must be a list of strings")
            except (ValueError, KeyError, TypeError) as exc:
                return self._send(400, {"error": f"expected {{\"texts\": [str, ...]}}: {exc}"})
            with lock:
                scores = scorer.influence(texts)
            self._send(200, {"influence": scores})

        def _send(self, status: int, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args) -> None:  # requests are not worth a line each
            pass

    return ThreadingHTTPServer((host, port), Handler)
