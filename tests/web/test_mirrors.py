"""The page's modules (web/src) against the Python runtime they mirror, run in node.

The page draws its own random numbers, so its birds cannot equal bird-gen's; what must be equal
is everything between the random numbers and the pixels. Here both sides get the same uniforms
and normals (a stub generator on each side) and must give the same codes, pixel draws, bytes
and figures; the same manifests must be accepted and refused; the .npz reader must give
numpy's arrays. The generator itself is checked against its published test vectors and against
a second implementation written here in Python. The node side is ``mirror.mjs``.
"""

from __future__ import annotations

import copy
import io
import json
import re
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from birdvae.runtime import images
from birdvae.runtime.format import Manifest, ModelFormatError
from birdvae.runtime.model import shipped_model_dir
from birdvae.runtime.pixels import draw_pixels
from birdvae.runtime.prior import GaussianMixture, LearnedPrior, StandardNormal

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
BIRDS = sorted((FIXTURES / "birds").glob("*.jpg"))


class _Stub:
    """numpy's side of mirror.mjs's stream: the same numbers, in the shapes numpy asks for."""

    def __init__(self, uniforms=(), normals=()) -> None:
        self._uniforms = np.asarray(uniforms, dtype=np.float64)
        self._normals = np.asarray(normals, dtype=np.float64)

    def random(self, shape, dtype=np.float64):
        count = int(np.prod(shape))
        values, self._uniforms = self._uniforms[:count], self._uniforms[count:]
        return values.astype(dtype).reshape(shape)

    def standard_normal(self, shape):
        count = int(np.prod(shape))
        values, self._normals = self._normals[:count], self._normals[count:]
        return values.reshape(shape)


class _Draws:
    def __init__(self, uniforms=(), normals=()) -> None:
        self.picks = _Stub(uniforms=uniforms)
        self.noise = _Stub(normals=normals)
        self.codes_ahead = None


# The generator ----------------------------------------------------------------------------------

M32, M64 = (1 << 32) - 1, (1 << 64) - 1


def _splitmix64(seed: int):
    state = seed
    while True:
        state = (state + 0x9E3779B97F4A7C15) & M64
        z = state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
        yield z ^ (z >> 31)


def _rotl(x: int, k: int) -> int:
    return ((x << k) | (x >> (32 - k))) & M32


def _xoshiro128(state: list[int]):
    s = list(state)
    while True:
        yield (_rotl((s[1] * 5) & M32, 7) * 9) & M32
        t = (s[1] << 9) & M32
        s[2] ^= s[0]
        s[3] ^= s[1]
        s[1] ^= s[2]
        s[0] ^= s[3]
        s[2] ^= t
        s[3] = _rotl(s[3], 11)


def _streams(seed: int):
    words = _splitmix64(seed)
    streams = []
    for _ in range(3):
        a, b = next(words), next(words)
        streams.append(_xoshiro128([a >> 32, a & M32, b >> 32, b & M32]))
    return streams


def _uniform(high: int, low: int) -> float:
    return ((high >> 5) * 2**26 + (low >> 6)) / 2**53


def test_generator_gives_its_published_test_vectors(mirror):
    # xoshiro128** 1.1 from the state {1, 2, 3, 4}, as its authors' reference code prints it.
    assert mirror("published", {"state": [1, 2, 3, 4], "n": 10}) == [
        11520, 0, 5927040, 70819200, 2031721883, 1637235492, 1287239034, 3734860849,
        3729100597, 4258142804,
    ]  # fmt: skip
    assert next(_splitmix64(0)) == 0xE220A8397B1DCDAF  # SplitMix64's first word from seed 0


@pytest.mark.parametrize("seed", [0, 1, 12345, 2**32 + 7, 2**53 - 1])
def test_generator_matches_a_second_implementation(mirror, seed):
    out = mirror("streams", {"seed": seed, "n": 500})
    expected = [[next(stream) for _ in range(500)] for stream in _streams(seed)]
    assert out["words"] == expected
    noise = expected[1]
    assert out["uniform"] == _uniform(noise[0], noise[1])
    # Box-Muller from the next two uniforms: radius sqrt(-2 ln(1 - u1)), angle 2 pi u2.
    u1, u2 = _uniform(noise[2], noise[3]), _uniform(noise[4], noise[5])
    radius, angle = np.sqrt(-2 * np.log(1 - u1)), 2 * np.pi * u2
    assert out["normals"] == pytest.approx([radius * np.cos(angle), radius * np.sin(angle)])


def test_generator_draws_standard_normals_and_refuses_bad_seeds(mirror):
    z = np.asarray(mirror("normals", {"seed": 3, "n": 200_000}))
    assert abs(z.mean()) < 0.01 and abs(z.std() - 1) < 0.01
    assert abs((np.abs(z) > 1.96).mean() - 0.05) < 0.003  # the tails too, not only two moments
    refused = mirror("badSeeds", {"seeds": [-1, 1.5, 2**53, "NaN"]})
    assert all(message and "whole number from 0 to" in message for message in refused), refused


# Priors -----------------------------------------------------------------------------------------


def _mixture(rng: np.random.Generator, k: int = 3, d: int = 5) -> list[np.ndarray]:
    weights = rng.uniform(0.1, 1.0, k)
    means = rng.standard_normal((k, d))
    cholesky = np.tril(rng.standard_normal((k, d, d)) * 0.3)
    for c in range(k):
        np.fill_diagonal(cholesky[c], rng.uniform(0.2, 1.0, d))
    return [a.astype(np.float32) for a in (weights, means, cholesky)]


def test_priors_turn_the_same_draws_into_the_same_codes(mirror):
    rng = np.random.default_rng(0)
    weights, means, cholesky = _mixture(rng)
    n, d, noise_dim, temperature = 40, means.shape[1], 7, 0.8
    cdf = np.cumsum(weights.astype(np.float64) / weights.astype(np.float64).sum())
    # Uniforms on the components' borders as well as between them, and one past a rounded cdf.
    uniforms = np.concatenate([rng.uniform(size=n - 4), [0.0, cdf[0], cdf[1], 1 - 2**-53]])
    # The learned prior draws whole blocks of noise rows, more than n.
    normals = rng.standard_normal(max(n * d, LearnedPrior.BLOCK_ROWS * noise_dim))
    out = mirror("priors", {
        "n": n, "d": d, "noiseDim": noise_dim, "temperature": temperature,
        "weights": weights.tolist(), "means": means.tolist(), "cholesky": cholesky.tolist(),
        "uniforms": uniforms.tolist(), "normals": normals.tolist(),
    })  # fmt: skip
    mixture = GaussianMixture(weights, means, cholesky)
    fitted = mixture.sample(n, _Draws(uniforms, normals), temperature)
    standard = StandardNormal(d).sample(n, _Draws(normals=normals), temperature)
    learned = LearnedPrior(lambda x: 2 * x, noise_dim).sample(n, _Draws(normals=normals), 0.8)
    np.testing.assert_allclose(np.reshape(out["fitted"], (n, d)), fitted, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(np.reshape(out["standard"], (n, d)), standard)
    np.testing.assert_array_equal(np.reshape(out["learned"], (n, noise_dim)), learned)


def test_the_mixture_refuses_what_python_refuses(mirror):
    weights, means, cholesky = _mixture(np.random.default_rng(1))
    upper, flat, nan = cholesky.copy(), cholesky.copy(), means.copy()
    upper[0, 0, 1] = 0.5
    flat[1, 2, 2] = 0.0
    nan[0, 0] = np.nan
    cases = {
        "upper-triangular": (weights, means, upper),
        "a zero on the diagonal": (weights, means, flat),
        "negative weights": (-weights, means, cholesky),
        "NaN": (weights, nan, cholesky),
    }
    for arrays in cases.values():
        with pytest.raises(ValueError):
            GaussianMixture(*arrays)
    payload = {
        name: {"arrays": [np.nan_to_num(a).tolist() for a in arrays]}
        for name, arrays in cases.items()
    }
    payload["NaN"]["nanAt"] = 0
    out = mirror("badMixtures", payload)
    assert all(message and message.startswith("ModelError: mixture") for message in out.values())


# Pixels and figures ------------------------------------------------------------------------------


def test_pixel_noise_draws_as_the_runtime_does(mirror):
    rng = np.random.default_rng(2)
    shape = (3, 3, 5, 5)
    location = rng.uniform(-0.3, 1.3, shape).astype(np.float32)
    scale = rng.uniform(0.0, 0.1, shape).astype(np.float32)
    coupling = rng.uniform(-0.5, 0.5, shape).astype(np.float32)
    uniforms = rng.random(shape, dtype=np.float32).astype(np.float64)
    uniforms.flat[:3] = [0.0, 1.0 - 2**-24, 0.5]  # the clipped ends as well
    out = mirror("pixels", {
        "location": location.tolist(), "scale": scale.tolist(), "coupling": coupling.tolist(),
        "noise": 0.7, "uniforms": uniforms.ravel().tolist(), "n": 3, "size": 5,
    })  # fmt: skip
    expected = draw_pixels(location, scale, coupling, 0.7, _Stub(uniforms=uniforms.ravel()))
    np.testing.assert_allclose(np.reshape(out, shape), expected, rtol=0, atol=2e-6)


def _rgba(rgb: np.ndarray) -> np.ndarray:
    return np.concatenate([rgb, np.full((*rgb.shape[:-1], 1), 255, np.uint8)], axis=-1)


def test_tiles_and_figures_are_bird_gens_bytes(mirror):
    rng = np.random.default_rng(3)
    n, size = 10, 4
    batch = rng.uniform(-0.1, 1.1, (n, 3, size, size)).astype(np.float32)
    # Values whose float32 product with 255 lands on a half: numpy rounds those to even.
    batch.flat[:6] = np.float32([0.5, 1.5, 2.5, 253.5, 254.5, 127.5]) / np.float32(255)
    grids = [(count, scale) for count in (1, 2, 3, 5, 10) for scale in (1, 3)]
    out = mirror("figures", {"batch": batch.tolist(), "n": n, "size": size, "grids": grids})
    assert out["gutter"] == images.GUTTER
    tiles = images.to_uint8_hwc(batch)
    assert np.array_equal(np.reshape(out["tiles"], (n, size, size, 4)), _rgba(tiles))
    for figure, (count, scale) in zip(out["grids"], grids):
        want = images.grid(tiles[:count], scale)
        assert np.array_equal(np.reshape(figure, (*want.shape[:2], 4)), _rgba(want))
    want = images.row(tiles[:2], 2)
    assert np.array_equal(np.reshape(out["row"], (*want.shape[:2], 4)), _rgba(want))
    assert [tuple(s) for s in out["shapes"]] == [images.grid_shape(k) for k in range(1, 301)]
    assert out["psnr"] == pytest.approx(images.psnr(tiles[0], tiles[1]), rel=1e-12)


# Manifests and .npz files -----------------------------------------------------------------------


def _manifest_variants() -> dict[str, dict]:
    base = json.loads((shipped_model_dir("birds32") / "manifest.json").read_text())
    fitted = base["priors"]["fitted"]
    learned = {"kind": "sampler", "file": "prior.onnx", "noise_dim": 16}
    changes = {
        "as shipped": {},
        "version 1": {"format_version": 1, "priors": None, "prior": fitted},
        "version 3": {"format_version": 3},
        "a foreign file": {"files": {**base["files"], "evil.js": base["files"]["prior.npz"]}},
        "a path": {"files": {**base["files"], "../prior.npz": base["files"]["prior.npz"]}},
        "no encoder": {"files": {k: v for k, v in base["files"].items() if k != "encoder.onnx"}},
        "an unknown prior": {"priors": {"fitted": fitted, "magic": fitted}},
        "a missing default": {"default_prior": "learned"},
        "a prior in the wrong file": {"priors": {"fitted": {**fitted, "file": "prior.onnx"}}},
        "no components": {"priors": {"fitted": {**fitted, "components": 0}}},
        "a default named like a JS property": {"default_prior": "constructor"},
        "a prior named like a JS property": {"priors": {"fitted": fitted, "toString": fitted}},
        "a learned prior without its file": {"priors": {"fitted": fitted, "learned": learned}},
        "no image size": {"image_size": None},
        "files not an object": {"files": []},
        "a negative temperature": {"default_temperature": -1.0},
        "negative noise": {"default_noise": -0.5},
        "a temperature above the bound": {"default_temperature": 50.0},
        "noise above the bound": {"default_noise": 10.5},
        "a prior's temperature above the bound": {
            "priors": {"fitted": {**fitted, "default_temperature": 1e30}}
        },
        "no likelihood": {"likelihood": None},
        "an unknown key in a prior": {"priors": {"fitted": {**fitted, "url": "http://x"}}},
        "a mixture past the bound": {  # 10 components of 2048x2048: all else within bounds
            "latent_dim": 2048,
            "priors": {"fitted": fitted},
            "default_prior": "fitted",
        },
    }
    variants = {}
    for name, change in changes.items():
        data = {**copy.deepcopy(base), **change}
        variants[name] = {key: value for key, value in data.items() if value is not None}
    for folder in ("tiny_model", "mean_only_model", "wrong_names_model"):
        variants[folder] = json.loads((FIXTURES / folder / "manifest.json").read_text())
    return variants


def _python_reads(data: dict) -> Manifest | None:
    """The manifest as BirdVAE opens it (Manifest.from_dict, then its settings), or None."""
    try:
        manifest = Manifest.from_dict(data)
    except ModelFormatError:
        return None
    settings = [manifest.default_temperature, manifest.default_noise]
    settings += [prior.default_temperature for prior in manifest.priors.values()]
    return manifest if min(settings) >= 0 else None


# The page's own bounds where a browser wants tighter ones than bird-gen (docs/WEB.md).
BROWSER_BOUNDS = {"MAX_RATER_BYTES"}


def test_the_page_copies_the_formats_names_and_bounds_as_the_runtime_has_them(mirror):
    """web/src cannot import runtime/format.py: each constant it copies must be the same, or a
    renamed output or a new format version would show only as a page that fails to draw."""
    from birdvae.runtime import format, selection

    page = mirror("constants", {})
    expected = {
        name: getattr(format, name, getattr(selection, name, None))
        for name in page
        if name not in BROWSER_BOUNDS
    }
    expected["DECODER_IMAGE"] = format.DECODER_OUTPUTS[0]
    as_json = json.loads(json.dumps(expected))  # tuples as the page's arrays
    assert {name: page[name] for name in as_json} == as_json
    assert {"ENCODER_OUTPUTS", "PRIOR_KINDS", "READABLE_VERSIONS", "RATER_SHA256"} <= set(page)
    assert set(page) >= BROWSER_BOUNDS  # a bound renamed away would silently leave this list


# Variants refused for one reason only, which the page must give.
REFUSED_FOR = {"a mixture past the bound": "values a mixture may have"}


def test_manifests_are_accepted_and_refused_as_the_runtime_does(mirror):
    variants = _manifest_variants()
    out = mirror("manifests", variants)
    for name, data in variants.items():
        manifest = _python_reads(data)
        if manifest is None:
            assert isinstance(out[name], str) and out[name].startswith("ModelError: manifest"), (
                name,
                out[name],
            )
            assert REFUSED_FOR.get(name, "") in out[name], (name, out[name])
            continue
        names = list(manifest.prior_names)
        priors = manifest.priors
        temperatures = [
            manifest.default_temperature if p == "standard" else priors[p].default_temperature
            for p in names
        ]
        assert out[name] == {"names": names, "temperatures": temperatures}, name


def _manifest_texts() -> dict[str, str]:
    text = (shipped_model_dir("birds32") / "manifest.json").read_text()
    first = '"image_size"'
    return {
        "as shipped": text,
        "a key twice": text.replace(first, f"{first}: 64, {first}", 1),
        "a key twice, once escaped": text.replace(first, '"image_siz\\u0065": 64, ' + first, 1),
        "a key twice in a prior": text.replace('"kind"', '"kind": "sampler", "kind"', 1),
        "a key twice in free text": text.replace('"source": {', '"source": {"a": 1, "a": 2, ', 1),
        "a key ending in a backslash": text.replace(
            '"source": {', '"source": {"a\\\\": 1, "a\\\\\\\\": 2, "a\\\\": 3, ', 1
        ),
        "a key in two objects": text.replace(
            '"source": {', '"source": {"x": [{"a": "}\\""}, {"a": 1}], ', 1
        ),
    }


def test_manifests_that_name_a_key_twice_are_refused_as_the_runtime_does(mirror, tmp_path):
    """JSON parsers keep a repeated key's last value; a manifest that names one twice shows a
    reader one thing and runs another, so the page and the runtime both refuse it."""
    texts = _manifest_texts()
    out = mirror("manifestTexts", texts)
    for name, text in texts.items():
        (tmp_path / "manifest.json").write_text(text)
        try:
            names = list(Manifest.load(tmp_path).prior_names)
        except ModelFormatError as exc:
            assert "twice in one object" in str(exc), name
            assert out[name].startswith("ModelError: manifest.json gives") and "twice" in out[name]
        else:
            assert out[name] == names, name
    assert sum(isinstance(v, list) for v in out.values()) == 2, out


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity"])
def test_manifests_holding_numbers_json_has_not_are_refused_by_both(mirror, tmp_path, value):
    """Python's json reads NaN and Infinity where JSON has none; the page's parser refuses
    them, so the runtime must too, in free text as in settings."""
    text = (shipped_model_dir("birds32") / "manifest.json").read_text()
    texts = {
        "in free text": text.replace('"source": {', f'"source": {{"a_figure": {value}, ', 1),
        "in a setting": re.sub(r'"default_noise": [0-9.]+', f'"default_noise": {value}', text),
    }
    assert all(t != text for t in texts.values())
    out = mirror("manifestTexts", texts)
    for name, changed in texts.items():
        (tmp_path / "manifest.json").write_text(changed)
        with pytest.raises(ModelFormatError, match=value.lstrip("-")):
            Manifest.load(tmp_path)
        assert isinstance(out[name], str) and out[name].startswith("ModelError: manifest"), name


def test_manifests_nested_too_deep_are_refused_by_both(mirror, tmp_path):
    """A source nested hundreds deep loaded, then bird-gen info's copy of it hit Python's
    recursion limit; both readers bound the nesting, at the same depth."""
    from birdvae.runtime.format import MAX_JSON_DEPTH, nesting

    text = (shipped_model_dir("birds32") / "manifest.json").read_text()

    def nested(depth: int) -> str:  # the manifest is depth 1, its arrays 2 and deeper
        inner = "[" * (depth - 1) + "1" + "]" * (depth - 1)
        return text.replace("{", f'{{"deep": {inner}, ', 1)

    assert nesting(json.loads(text)) < MAX_JSON_DEPTH  # the shipped manifest is well inside

    texts = {"at the bound": nested(MAX_JSON_DEPTH), "past it": nested(MAX_JSON_DEPTH + 1),
             "far past it": nested(600)}  # fmt: skip
    out = mirror("manifestTexts", texts)
    for name, changed in texts.items():
        (tmp_path / "manifest.json").write_text(changed)
        if name == "at the bound":
            assert out[name] == list(Manifest.load(tmp_path).prior_names)
            continue
        with pytest.raises(ModelFormatError, match=f"more than {MAX_JSON_DEPTH} levels deep"):
            Manifest.load(tmp_path)
        assert out[name].startswith("ModelError: manifest.json nests its JSON more than"), name


def test_graphs_that_could_loop_without_end_are_refused_as_the_runtime_does(mirror):
    """A Loop without a bounded constant count, or a Scan, would hold the page's onnxruntime
    worker, and every later draw, for good. Each hostile form of the runtime's tests, the
    shipped graphs and a damaged file get the runtime's verdict, word for word."""
    from birdvae.runtime.onnxfile import check_graph_bytes

    from ..runtime import onnx_bytes

    forms = [("initializer", 3), ("initializer", 10**12), ("initializer", -1), ("constant", 3),
             ("condition", 3), ("function", 3), ("shadowed", 10**12), ("input", 10**12),
             ("sparse", 10**12), ("constant-too", 10**12), ("nested", 3), ("nested", 1000),
             ("scan", 3)]  # fmt: skip
    files = {f"{where} {trips}": onnx_bytes.looping_sampler(str(trips), 4, 8, where)
             for where, trips in forms}  # fmt: skip
    for model in ("birds32", "birds64"):
        for graph in ("prior.onnx", "decoder.onnx"):
            files[f"{model} {graph}"] = (shipped_model_dir(model) / graph).read_bytes()
    files["cut short"] = files["birds32 prior.onnx"][:1000]
    out = mirror("graphs", {name: data.hex() for name, data in files.items()})
    for name, data in files.items():
        try:
            check_graph_bytes(data, "prior.onnx")
            want = "loads"
        except ModelFormatError as exc:
            want = f"ModelError: {exc}"
        assert out[name] == want, name
    assert out["birds32 prior.onnx"] == "loads" and out["scan 3"].startswith("ModelError")


def _npz(arrays: dict[str, np.ndarray], compressed: bool) -> bytes:
    buffer = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buffer, **arrays)
    return buffer.getvalue()


def test_npz_reader_gives_numpys_arrays(mirror):
    rng = np.random.default_rng(4)
    small = {"weights": rng.random(3), "means": rng.random((3, 2)).astype(np.float32)}
    files = {
        "shipped": (shipped_model_dir("birds32") / "prior.npz").read_bytes(),
        "stored": _npz(small, compressed=False),
        "deflated": _npz(small, compressed=True),
    }
    limits = {"weights": 4096, "means": 4096}
    out = mirror("npz", {
        "files": {name: data.hex() for name, data in files.items()},
        "limits": {"shipped": {"weights": 1e4, "means": 1e6, "cholesky": 2e7},
                   "stored": limits, "deflated": limits},
    })  # fmt: skip
    for name, data in files.items():
        with np.load(io.BytesIO(data)) as arrays:
            assert set(out[name]) == set(arrays.files), name
            for key, got in out[name].items():
                want = arrays[key]
                assert got["shape"] == list(want.shape), (name, key)
                dtype = {"float32": "Float32Array", "float64": "Float64Array"}[want.dtype.name]
                assert got["type"] == dtype, (name, key)
                assert got["head"] == want.ravel()[:50].astype(np.float64).tolist(), (name, key)
                assert got["sum"] == pytest.approx(float(want.astype(np.float64).sum()), rel=1e-9)


def test_a_damaged_prior_npz_is_the_models_fault_named_as_in_python(mirror, tmp_path):
    """The page showed "Something went wrong: it lacks the array weights"."""
    data = _npz({"other": np.ones(3, np.float32)}, compressed=False)
    out = mirror("fitted", {"hex": data.hex(), "components": 3, "latentDim": 2})
    with pytest.raises(ModelFormatError) as python:
        GaussianMixture.load(data, 2, 3, tmp_path / "prior.npz")
    assert out.startswith("ModelError: prior.npz is not a valid prior: it lacks the array")
    assert "is not a valid prior: it lacks the array" in str(python.value)


def test_npz_reader_refuses_hostile_files(mirror):
    good = _npz({"weights": np.ones(3, np.float32)}, compressed=True)
    bomb = io.BytesIO()
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("weights.npy", b"\x93NUMPY" + b"\0" * (1 << 20))  # inflates to 1 MB
    files = {
        "not a zip": b"hello, world" * 10,
        "truncated": good[: len(good) // 2],
        "lacks the array": _npz({"other": np.ones(3, np.float32)}, compressed=False),
        "a bomb": bomb.getvalue(),
        "integers": _npz({"weights": np.ones(3, np.int64)}, compressed=False),
        "Fortran order": _npz({"weights": np.ones((2, 3), np.float32, order="F")}, False),
    }
    out = mirror("npz", {
        "files": {name: data.hex() for name, data in files.items()},
        "limits": {name: {"weights": 4096} for name in files},
    })  # fmt: skip
    assert all(isinstance(m, str) and m.startswith("NpzError") for m in out.values()), out
    assert "more than its shape allows" in out["a bomb"]
    assert "lacks the array weights" in out["lacks the array"]
    assert "'<f4', '<f8'" in out["integers"]
    assert "Fortran order" in out["Fortran order"]


def test_the_build_refuses_a_model_whose_files_are_links(node, tmp_path):
    """The published site must hold the files themselves: bird-gen refuses linked model files,
    and so does the build, before it writes anything."""
    import shutil
    import subprocess

    from birdvae.runtime.model import shipped_model_dir

    web = Path(__file__).resolve().parents[2] / "web"
    if not (web / "node_modules" / "onnxruntime-web").is_dir():
        pytest.skip(f"onnxruntime-web is not installed: run npm ci in {web}")
    real, linked = tmp_path / "real", tmp_path / "linked"
    shutil.copytree(shipped_model_dir("birds32"), real)
    linked.mkdir()
    for file in real.iterdir():
        (linked / file.name).symlink_to(file)
    out = tmp_path / "dist"
    done = subprocess.run(
        [node, str(web / "build.mjs"), "--out", str(out), "--model", f"birds={linked}"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode != 0 and "is a link or not a plain file" in done.stderr
    assert not out.exists()


def test_the_page_pins_the_runtimes_rater():
    from birdvae.runtime.selection import RATER_SHA256

    text = (Path(__file__).resolve().parents[2] / "web" / "src" / "selection.js").read_text()
    assert f"RATER_SHA256 = '{RATER_SHA256}'" in text


@pytest.mark.parametrize("size", [16, 32, 48, 64])
def test_best_of_resamples_for_the_rater_and_keeps_as_python_does(mirror, size):
    from birdvae.runtime.selection import best_of, to_rater_size

    rng = np.random.default_rng(size)
    n, k = 12, 4
    images = rng.uniform(0, 1, (n, 3, size, size)).astype(np.float32)
    scores = rng.normal(size=n).astype(np.float32)
    out = mirror("selection", {"images": images.ravel().tolist(), "n": n, "size": size, "k": k,
                               "scores": scores.tolist()})  # fmt: skip
    np.testing.assert_allclose(np.reshape(out["small"], (n, 3, 32, 32)), to_rater_size(images),
                               rtol=1e-5, atol=1e-6)  # fmt: skip
    np.testing.assert_array_equal(np.reshape(out["best"], (n // k, 3, size, size)),
                                  best_of(images, k, lambda _: scores))  # fmt: skip


def _jpeg_with_thumbnail(jpeg: bytes) -> bytes:
    """``jpeg`` with a small JPEG inside an APP1 segment, as a camera's EXIF thumbnail: its end
    marker is no end of the photo."""
    thumbnail = io.BytesIO()
    Image.new("RGB", (16, 16), (200, 40, 40)).save(thumbnail, format="JPEG")
    payload = b"Exif\0\0" + thumbnail.getvalue()
    return jpeg[:2] + b"\xff\xe1" + (len(payload) + 2).to_bytes(2, "big") + payload + jpeg[2:]


def test_a_photo_cut_short_is_refused_as_bird_gen_refuses_it(mirror, tmp_path):
    """The browser draws a cut JPEG or PNG with its missing rows white; bird-gen refuses it.
    Whole files with data after their end (a motion photo's video) are read by both."""
    from birdvae.runtime.errors import UserError
    from birdvae.runtime.photos import load_image

    photo = Image.open(BIRDS[0]).convert("RGB")

    def saved(**options) -> bytes:
        out = io.BytesIO()
        photo.save(out, **options)
        return out.getvalue()

    jpeg, png, webp = saved(format="JPEG"), saved(format="PNG"), saved(format="WEBP")
    thumbnailed = _jpeg_with_thumbnail(jpeg)
    files = {
        "whole.jpg": jpeg,
        "progressive.jpg": saved(format="JPEG", progressive=True),
        "restarts.jpg": saved(format="JPEG", restart_marker_blocks=1),
        "motion.jpg": jpeg + bytes(range(256)) * 800,
        "thumbnailed.jpg": thumbnailed,
        "thumbnailed-cut.jpg": thumbnailed[: len(thumbnailed) * 2 // 3],
        "third.jpg": jpeg[: len(jpeg) // 3],
        "progressive-cut.jpg": saved(format="JPEG", progressive=True)[:-300],
        "whole.png": png,
        "trailing.png": png + b"\0" * 70_000,
        "half.png": png[: len(png) // 2],
        "whole.webp": webp,
        "cut.webp": webp[: len(webp) // 2],
        "whole.gif": saved(format="GIF"),
        "whole.bmp": saved(format="BMP"),
    }
    out = mirror("photoFiles", {name: data.hex() for name, data in files.items()})
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
        try:
            load_image(tmp_path / name, 32)
            python = None
        except UserError as exc:
            python = str(exc)
        assert (out[name] is None) == (python is None), (name, out[name], python)
        if out[name] is not None:
            assert "cut short" in out[name], (name, out[name])
