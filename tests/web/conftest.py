"""Fixtures for the web page's tests: node for its modules, headless Chromium for the page.

Without node, Chromium or ``npm ci`` in ``web/`` these tests skip and say which is missing;
with ``BIRDVAE_WEB_TESTS=required`` (as ``.ci/run`` sets it) the same lack fails them instead.
Figures the browser tests measure are printed at the end of the run.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from birdvae.runtime.format import (
    DEFAULT_IR_VERSION,
    DEFAULT_OPSET,
    SAMPLER_FILE,
    FileEntry,
    Manifest,
    PriorInfo,
)
from birdvae.runtime.model import shipped_model_dir

from .cdp import Browser

ROOT = Path(__file__).resolve().parents[2]
WEB = ROOT / "web"
FIXTURES = ROOT / "tests" / "fixtures"
ORT_MODULE = WEB / "node_modules" / "onnxruntime-web" / "dist" / "ort.wasm.min.mjs"
REQUIRED = os.environ.get("BIRDVAE_WEB_TESTS") == "required"

MEASURED: dict[str, str] = {}  # what the browser tests measured, printed at the end


def need(present: object, reason: str) -> None:
    """Skip (or, when required, fail) unless ``present``."""
    if not present:
        if REQUIRED:
            pytest.fail(f"BIRDVAE_WEB_TESTS=required, but {reason}")
        pytest.skip(reason)


def pytest_terminal_summary(terminalreporter) -> None:
    if MEASURED:
        terminalreporter.section("the web page, measured")
        for key, value in MEASURED.items():
            terminalreporter.write_line(f"{key}: {value}")


@pytest.fixture(scope="session")
def node() -> str:
    path = shutil.which("node")
    need(path, "node is not installed (apt-get install nodejs)")
    return path


@pytest.fixture(scope="session")
def mirror(node: str):
    """mirror(case, payload) -> what ``mirror.mjs`` prints for that case, given the JSON
    ``payload``: the page's own modules run in node."""

    def run(case: str, payload: Any) -> Any:
        done = subprocess.run(
            [node, str(Path(__file__).with_name("mirror.mjs")), case],
            input=json.dumps(payload),
            capture_output=True,
            text=True,
            timeout=120,
        )
        if done.returncode != 0:
            raise AssertionError(f"node mirror.mjs {case} failed:\n{done.stderr}")
        return json.loads(done.stdout)

    return run


# The browser tests: a site built with the shipped models and two test models, served by
# web/serve.mjs, seen by headless Chromium ------------------------------------------------------

LEARNED_NOISE_DIM = 16
LEARNED_TEMPERATURE = 0.9  # not 1, so the page is seen to take the prior's own default


@dataclass(frozen=True)
class LearnedModel:
    """birds32 with a learned prior z = noise @ W + bias added: at temperature 0 every bird
    is the decoder's image of ``bias``."""

    folder: Path
    bias: np.ndarray


@pytest.fixture(scope="session")
def chromium() -> str:
    path = os.environ.get("BIRDVAE_CHROMIUM") or shutil.which("chromium")
    need(path and os.access(path, os.X_OK), "Chromium is not installed (apt-get install chromium)")
    return path


@pytest.fixture(scope="session")
def learned_model(tmp_path_factory: pytest.TempPathFactory) -> LearnedModel:
    need(
        importlib.util.find_spec("onnx"), "onnx, which writes the test's learned prior, is missing"
    )
    from onnx import TensorProto, helper, numpy_helper, save_model

    folder = Path(shutil.copytree(shipped_model_dir("birds32"), tmp_path_factory.mktemp("m") / "m"))
    manifest = Manifest.load(folder)
    with np.load(folder / "prior.npz") as prior:
        bias = prior["means"][0].astype(np.float32)  # a real bird's code
    weight = np.random.default_rng(0).normal(0, 0.5, (LEARNED_NOISE_DIM, manifest.latent_dim))
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["noise", "W"], ["noise_W"]),
         helper.make_node("Add", ["noise_W", "b"], ["z"])],
        "learned_prior_for_tests",
        [helper.make_tensor_value_info("noise", TensorProto.FLOAT, ["N", LEARNED_NOISE_DIM])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, ["N", manifest.latent_dim])],
        [numpy_helper.from_array(weight.astype(np.float32), "W"),
         numpy_helper.from_array(bias, "b")],
    )  # fmt: skip
    opset = [helper.make_opsetid("", DEFAULT_OPSET)]
    save_model(helper.make_model(graph, opset_imports=opset, ir_version=DEFAULT_IR_VERSION),
               folder / SAMPLER_FILE)  # fmt: skip
    manifest.priors["learned"] = PriorInfo(
        kind="sampler",
        file=SAMPLER_FILE,
        default_temperature=LEARNED_TEMPERATURE,
        noise_dim=LEARNED_NOISE_DIM,
    )
    manifest.default_prior = "learned"
    manifest.files[SAMPLER_FILE] = FileEntry.of(folder / SAMPLER_FILE)
    manifest.save(folder)
    return LearnedModel(folder, bias)


@pytest.fixture(scope="session")
def site(node: str, learned_model: LearnedModel, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The built site: birds32, birds64, ``learned`` (birds32 with the test's learned prior),
    the runtime tests' ``tiny`` model (coupled colours) and ``meanonly`` (a decoder without
    pixel scales), ``damaged`` (birds32 whose decoder a host corrupted after the build) and
    ``noencoder`` (likewise its encoder, which only a reconstruction reads) and ``nandecoder``
    (a decoder whose images are NaN)."""
    need(ORT_MODULE.is_file(), f"onnxruntime-web is not installed: run npm ci in {WEB}")
    out = tmp_path_factory.mktemp("site") / "dist"
    models = {"birds32": shipped_model_dir("birds32"), "birds64": shipped_model_dir("birds64"),
              "learned": learned_model.folder, "tiny": FIXTURES / "tiny_model",
              "meanonly": FIXTURES / "mean_only_model",
              "damaged": shipped_model_dir("birds32"),
              "noencoder": shipped_model_dir("birds32"),
              "nandecoder": _nan_decoder_model(tmp_path_factory.mktemp("nan"))}  # fmt: skip
    command = [node, str(WEB / "build.mjs"), "--out", str(out)]
    for name, folder in models.items():
        command += ["--model", f"{name}={folder}"]
    subprocess.run(command, check=True, capture_output=True, timeout=120)
    for damaged in (out / "models" / "damaged" / "decoder.onnx",
                    out / "models" / "noencoder" / "encoder.onnx"):  # fmt: skip
        data = bytearray(damaged.read_bytes())
        data[len(data) // 2] ^= 0xFF
        damaged.write_bytes(bytes(data))
    return out


def _nan_decoder_model(root: Path) -> Path:
    """The mean-only test model with a decoder, hashed into its manifest, whose images are all
    NaN: a graph the format's checks pass and whose numbers are no picture."""
    from birdvae.runtime.format import DECODER_FILE

    from ..runtime import onnx_bytes

    folder = Path(shutil.copytree(FIXTURES / "mean_only_model", root / "nandecoder"))
    manifest = Manifest.load(folder)
    size, latent = manifest.image_size, manifest.latent_dim
    graph = onnx_bytes.typed_graph(
        "z", [latent], [("image", [3, size, size])], onnx_bytes.FLOAT, fill=float("nan")
    )
    (folder / DECODER_FILE).write_bytes(graph)
    manifest.files[DECODER_FILE] = FileEntry.of(folder / DECODER_FILE)
    manifest.save(folder)
    return folder


@pytest.fixture(scope="session")
def server(node: str, site: Path):
    """The site's URL, served by web/serve.mjs on a free port of 127.0.0.1."""
    process = subprocess.Popen(
        [node, str(WEB / "serve.mjs"), "--dir", str(site), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    line = process.stdout.readline()
    match = re.search(r"at (http://\S+)", line)
    if match is None:
        process.kill()
        raise AssertionError(f"serve.mjs did not start: {line}{process.stdout.read()}")
    yield match.group(1)
    process.terminate()
    process.wait(timeout=10)


@pytest.fixture(scope="session")
def browser(chromium: str, tmp_path_factory: pytest.TempPathFactory):
    browser = Browser(chromium, tmp_path_factory.mktemp("chromium") / "profile")
    browser.set_viewport(1100, 1000)
    yield browser
    browser.close()
