"""Model references resolve to verified files: shipped weights, the Hub (a loopback fake) or paths.

The fake Hub answers ``HEAD``/``GET /{repo}/resolve/{revision}/{file}`` the way huggingface_hub
expects (``X-Repo-Commit``, quoted ``ETag``, ``Content-Length``, no redirect, ``Connection:
close``), so the real ``hf_hub_download`` code path runs end to end without the internet.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from deblurcli.engine.zoo import HubLocation, ModelEntry, ModelTable, parse_reference, resolve
from deblurcli.errors import ChecksumMismatchError, ModelUnavailableError, UsageError

REVISION = "0123456789abcdef0123456789abcdef01234567"
REPO = "deblurcli-test/tiny"
FILENAME = "tiny.safetensors"


@dataclass
class FakeHub:
    payload: bytes
    served: bytes | None = None  # what GET actually returns (corruption when it differs)
    requests: list[str] = field(default_factory=list)
    url: str = ""


def _handler(hub: FakeHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _answer(self, with_body: bool) -> None:
            hub.requests.append(f"{self.command} {self.path}")
            if self.path != f"/{REPO}/resolve/{REVISION}/{FILENAME}":
                self.send_response(404)
                self.send_header("X-Error-Code", "EntryNotFound")
                self.send_header("X-Repo-Commit", REVISION)
                self.send_header("Content-Length", "0")
                self.send_header("Connection", "close")
                self.end_headers()
                return
            body = hub.served if hub.served is not None else hub.payload
            self.send_response(200)
            self.send_header("X-Repo-Commit", REVISION)
            self.send_header("ETag", f'"{hashlib.sha256(hub.payload).hexdigest()}"')
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Connection", "close")
            self.end_headers()
            if with_body:
                self.wfile.write(body)

        def do_HEAD(self) -> None:  # noqa: N802
            self._answer(with_body=False)

        def do_GET(self) -> None:  # noqa: N802
            self._answer(with_body=True)

        def log_message(self, *args: object) -> None:
            pass

    return Handler


@pytest.fixture
def fake_hub(tiny_checkpoint: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    hub = FakeHub(payload=tiny_checkpoint.read_bytes())
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(hub))
    hub.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield hub
    server.shutdown()
    server.server_close()


def _table(hub: FakeHub, filename: str = FILENAME) -> ModelTable:
    entry = ModelEntry(
        name="tiny", tag="hub", sha256=hashlib.sha256(hub.payload).hexdigest(),
        size=len(hub.payload), arch="residual_unet", default_tag=True,
        hub=HubLocation(REPO, filename, REVISION),
    )
    return ModelTable((entry,), default="tiny")


def test_download_then_cache_hit_without_any_request(fake_hub: FakeHub, tmp_path: Path) -> None:
    cache = tmp_path / "hf-cache"
    first = resolve("tiny", table=_table(fake_hub), cache_dir=cache, endpoint=fake_hub.url)
    assert first.source == "hub" and first.path.read_bytes() == fake_hub.payload
    assert REVISION in str(first.path)
    assert any(r.startswith("GET") for r in fake_hub.requests)
    fake_hub.requests.clear()
    again = resolve("tiny@hub", table=_table(fake_hub), cache_dir=cache, endpoint=fake_hub.url)
    assert again.path == first.path and fake_hub.requests == []
    offline = resolve("tiny", table=_table(fake_hub), cache_dir=cache, offline=True)
    assert offline.path == first.path and fake_hub.requests == []


def test_missing_file_on_the_hub_is_model_unavailable(fake_hub: FakeHub, tmp_path: Path) -> None:
    with pytest.raises(ModelUnavailableError, match="404"):
        resolve("tiny", table=_table(fake_hub, "absent.safetensors"), cache_dir=tmp_path,
                endpoint=fake_hub.url)


def test_corrupted_payload_is_refused_and_deleted(fake_hub: FakeHub, tmp_path: Path) -> None:
    fake_hub.served = bytes(reversed(fake_hub.payload))  # same size, wrong content
    cache = tmp_path / "hf-cache"
    with pytest.raises(ChecksumMismatchError, match="sha256"):
        resolve("tiny", table=_table(fake_hub), cache_dir=cache, endpoint=fake_hub.url)
    assert sum(r.startswith("GET") for r in fake_hub.requests) == 2  # one retry, then refuse
    assert not [p for p in cache.rglob(FILENAME) if p.exists()]
    blobs = [p for p in cache.rglob("blobs/*") if p.is_file()]
    assert blobs == []


def test_offline_without_cache_is_model_unavailable(fake_hub: FakeHub, tmp_path: Path) -> None:
    with pytest.raises(ModelUnavailableError, match="--offline"):
        resolve("tiny", table=_table(fake_hub), cache_dir=tmp_path, offline=True)
    assert fake_hub.requests == []


def test_shipped_weights_are_verified(model_table: Path, tiny_checkpoint: Path) -> None:
    resolved = resolve("tiny")
    assert resolved.source == "weights" and resolved.path == tiny_checkpoint
    data = bytearray(tiny_checkpoint.read_bytes())
    data[-1] ^= 0xFF
    tiny_checkpoint.write_bytes(bytes(data))
    with pytest.raises(ChecksumMismatchError, match="corrupt"):
        resolve("tiny@test")


def test_reference_grammar(model_table: Path, tiny_checkpoint: Path) -> None:
    assert parse_reference("resunet@synth-v1") == ("resunet", "synth-v1")
    assert parse_reference("resunet") == ("resunet", None)
    with pytest.raises(UsageError, match="safetensors"):
        parse_reference("Owner Name")
    with pytest.raises(ModelUnavailableError, match="known models: tiny@test"):
        resolve("nope")
    with pytest.raises(ModelUnavailableError, match="'tiny@v9'; tiny has the tags test"):
        resolve("tiny@v9")
    assert resolve(str(tiny_checkpoint)).source == "local"
    with pytest.raises(ModelUnavailableError, match="not found"):
        resolve(str(tiny_checkpoint.with_name("absent.safetensors")))


def test_the_shipped_default_model_verifies_and_restores_an_image() -> None:
    import torch

    from deblurcli.engine import load_model, load_model_table

    table = load_model_table()
    assert table.default is not None, "the package must ship a default model"
    for entry in table.entries:
        assert entry.file is not None and entry.file.is_file(), f"{entry.ref} is not shipped"
        assert resolve(entry.ref, table=table).source == "weights"
    restorer = load_model(table.default, device="cpu")
    x = torch.rand(1, 3, 37, 45)
    y = restorer(x)
    assert y.shape == x.shape and float(y.min()) >= 0 and float(y.max()) <= 1
