"""BirdVAE as a Python caller meets it: every mistake in what it is given is an ArgumentError
that names the argument, before a graph runs, and what it promises (bounded memory, one
opening of each graph, paths that survive a change of folder) holds."""

from __future__ import annotations

import threading
import warnings
from pathlib import Path

import numpy as np
import pytest

from birdvae.runtime import BirdVAE
from birdvae.runtime import model as model_module
from birdvae.runtime.errors import ArgumentError
from birdvae.runtime.format import ModelFormatError
from birdvae.runtime.model import MAX_RESULT_VALUES, Sampling

SIZE, LATENT = 16, 8  # the tiny model's


@pytest.fixture
def vae(tiny_model: Path) -> BirdVAE:
    return BirdVAE(tiny_model, threads=1)


def _photos(n: int = 2) -> np.ndarray:
    return np.random.default_rng(0).random((n, 3, SIZE, SIZE), dtype=np.float32)


BAD_IMAGES = {
    "NaN": (np.full((1, 3, SIZE, SIZE), np.nan, np.float32), "images holds NaN, infinity"),
    "infinity": (np.full((1, 3, SIZE, SIZE), np.inf), "images holds NaN, infinity"),
    "beyond float32": (np.full((1, 3, SIZE, SIZE), 1e300), "or values beyond float32"),
    "pixels 0-255": (_photos() * 255, "must be in [0, 1], got values from"),
    "well past 1": (np.full((1, 3, SIZE, SIZE), 1.06), "must be in [0, 1], got values from 1.06"),
    "normalised": (_photos() - 0.5, "must be in [0, 1], got values from -"),
    "standardised": ((_photos() - 0.5) / 0.25, "(normalised to mean 0: undo the normalisation)"),
    "uint16": ((_photos() * 65535).astype(np.uint16), "floating-point numbers, not uint16"),
    "uint8": ((_photos() * 255).astype(np.uint8), "divide by 255"),
    "int64": (np.zeros((1, 3, SIZE, SIZE), np.int64), "floating-point numbers, not int64"),
    "bool": (np.zeros((1, 3, SIZE, SIZE), bool), "floating-point numbers, not bool"),
    "complex": (np.zeros((1, 3, SIZE, SIZE), np.complex64), "not complex64"),
    "strings": (np.full((1, 3, SIZE, SIZE), "a"), "floating-point numbers, not <U1"),
    "ragged": ([_photos(1)[0], _photos(1)[0][:, :8]], "its rows differ"),
    "wrong size": (np.zeros((1, 3, 8, 8), np.float32), "must have shape [N, 3, 16, 16]"),
}


@pytest.mark.parametrize(("images", "message"), BAD_IMAGES.values(), ids=BAD_IMAGES)
def test_images_a_graph_was_not_made_for_are_refused_by_name(vae, images, message):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy's cast warnings are not the caller's answer
        for call in (vae.encode, vae.reconstruct):
            with pytest.raises(ArgumentError, match=r"^images ") as caught:
                call(images)
            assert message in str(caught.value)


@pytest.mark.parametrize(
    ("z", "message"),
    [
        (np.full((1, LATENT), np.nan, np.float32), "z holds NaN, infinity"),
        (np.full((1, LATENT), 1e5, np.float32), "z holds values beyond"),
        (np.zeros((1, LATENT), np.int32), "z must hold floating-point numbers"),
    ],
)
def test_codes_a_decoder_was_not_made_for_are_refused_by_name(vae, z, message):
    with pytest.raises(ArgumentError, match=message):
        vae.decode(z)


def test_a_relative_model_path_survives_a_change_of_folder(tiny_model, tmp_path, monkeypatch):
    monkeypatch.chdir(tiny_model.parent)
    vae = BirdVAE(tiny_model.name, threads=1)
    monkeypatch.chdir(tmp_path)
    assert vae.sample(2, seed=0).shape == (2, 3, SIZE, SIZE)  # graphs are opened only now
    assert vae.path == tiny_model


def test_an_empty_or_shipped_name_given_as_a_folder_is_explained(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ArgumentError, match="path is empty"):
        BirdVAE("")
    with pytest.raises(ModelFormatError, match=r"use BirdVAE\.load\('birds64'\)"):
        BirdVAE("birds64")
    with pytest.raises(ModelFormatError, match="the shipped models are birds32, birds64"):
        BirdVAE.load("birds128")


def test_results_too_large_to_return_at_once_are_refused_before_any_work(vae, monkeypatch):
    def no_work(*_: object, **__: object) -> None:
        raise AssertionError("work started")

    monkeypatch.setattr(BirdVAE, "sample_batches", no_work)
    monkeypatch.setattr(BirdVAE, "encode", no_work)
    huge = r"n 1000000000000 asks for 2861022.9 GiB at once \(at most 1 GiB.*use sample_batches"
    with pytest.raises(ArgumentError, match=huge):
        vae.sample(10**12, seed=0)
    with pytest.raises(ArgumentError, match=r"steps 10000000 asks for .* use fewer steps"):
        vae.interpolate(_photos(1)[0], _photos(1)[0], steps=10**7)
    assert vae.decode(np.zeros((2, vae.latent_dim), np.float32)).shape == (2, 3, SIZE, SIZE)
    with pytest.raises(ArgumentError, match=r"z must have shape \[N, 8\], got \[\]"):
        vae.decode(np.float32(0))  # no len(): counted as one, then refused by its shape
    monkeypatch.setattr(BirdVAE, "_decode", no_work)
    rows = MAX_RESULT_VALUES // (3 * SIZE * SIZE) + 1  # one image more than is returned at once
    codes = np.broadcast_to(np.float32(0), (rows, vae.latent_dim))  # no memory of its own
    with pytest.raises(ArgumentError, match=rf"z {rows} asks for 1\.0 GiB .* fewer codes"):
        vae.decode(codes)
    images = np.broadcast_to(np.float32(0.5), (rows, 3, SIZE, SIZE))
    with pytest.raises(ArgumentError, match=rf"images {rows} asks for .* fewer images"):
        vae.reconstruct(images)


def test_photo_files_load_as_the_model_sees_them(tiny_model):
    from birdvae.runtime import ImageError
    from birdvae.runtime.photos import load_image

    vae = BirdVAE(tiny_model, threads=1)
    birds = sorted((Path(__file__).parent.parent / "fixtures" / "birds").glob("*.jpg"))
    photos = vae.load_photos(birds)
    assert photos.shape == (len(birds), 3, SIZE, SIZE) and photos.dtype == np.float32
    want = np.stack([load_image(path, SIZE) for path in birds]).transpose(0, 3, 1, 2) / 255
    assert np.allclose(photos, want, atol=1e-6)
    assert np.array_equal(vae.load_photos(str(birds[0])), photos[:1])
    assert vae.reconstruct(photos).shape == photos.shape
    with pytest.raises(ImageError, match=r"missing\.jpg"):
        vae.load_photos([birds[0], birds[0].parent / "missing.jpg"])


def test_sample_fills_one_array_with_what_sample_batches_gives(vae):
    whole = vae.sample(70, seed=3, batch=16)
    assert np.array_equal(whole, np.concatenate(list(vae.sample_batches(70, seed=3))))


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda v: v.sample(-1, seed=0, best_of=2), "n must be a whole number >= 0, got -1"),
        (lambda v: v.sample(2, batch=0), "batch must be a whole number >= 1, got 0"),
        (lambda v: v.encode([[0]]), "images must have shape [N, 3, 16, 16], got [1, 1]"),
        (
            lambda v: v.encode(np.zeros((16, 16, 3), np.uint8)),
            "got [16, 16, 3] (a photo's pixels: BirdVAE.load_photos reads files",
        ),
        (lambda v: v.sample(2, prior="uniform"), "unknown prior 'uniform'"),
        (lambda v: v.sample(2, temperature=-1.0), "temperature must be 0 to 10, got -1.0"),
        (lambda v: v.sample(2, seed=-1), "seed must be a whole number >= 0, got -1"),
        (lambda v: v.sample("3", seed=0, best_of=2), "n must be a whole number, got '3'"),
        (lambda v: v.sample(None, seed=0), "n must be a whole number, got None"),
        (lambda v: v.sample(True, seed=0), "n must be a whole number, got True"),
        (lambda v: v.sample(2, seed=True), "seed must be a whole number, got True"),
        (lambda v: v.sample(2, batch=True), "batch must be a whole number, got True"),
        (lambda v: v.sample(2, temperature="abc"), "temperature must be a number from 0 to 10"),
        (lambda v: v.sample(2, temperature="1"), "temperature must be a number"),
        (lambda v: v.sample(2, temperature=True), "temperature must be a number"),
        (lambda v: v.sample(2, noise=[1]), "noise must be a number"),
        (lambda v: v.sample(2, prior=""), "unknown prior ''"),
        (lambda v: v.interpolate(_photos(1), _photos(2)), "last must be one image"),
        (lambda v: v.interpolate(_photos(1)[0], np.zeros((3, 8, 8))), "last must have shape"),
        (lambda v: v.draw(2, Sampling("fitted", 1.0, float("nan"), 1)), "noise must be 0 to"),
        (lambda v: v.draw(2, Sampling("fitted", 1.0, 0.0, -5)), "seed must be a whole number"),
        (lambda v: v.draw(2, Sampling("fitted", 1.0, 0.0, 1, batch=0)), "batch must be a whole"),
    ],
)
def test_each_mistaken_argument_is_named(vae, call, message):
    with pytest.raises(ArgumentError) as caught:
        call(vae)
    assert message in str(caught.value)


def test_numpy_integers_serve_wherever_a_whole_number_does(tiny_model):
    vae = BirdVAE(tiny_model, threads=np.int64(1))
    first, last = _photos(2)
    assert vae.interpolate(first, last[None], steps=np.int64(3)).shape == (3, 3, SIZE, SIZE)
    birds = vae.sample(np.int32(2), seed=np.uint8(1), best_of=np.int64(2), batch=np.int16(2))
    assert np.array_equal(birds, vae.sample(2, seed=1, best_of=2))
    with pytest.raises(ArgumentError, match="threads must be a whole number, got True"):
        BirdVAE(tiny_model, threads=True)


def test_threads_that_start_at_once_open_each_graph_once(tiny_model, monkeypatch):
    opened: list[str] = []
    real_open = model_module.open_session

    def counting(model: bytes, path: Path, threads: int):
        opened.append(path.name)
        return real_open(model, path, threads)

    monkeypatch.setattr(model_module, "open_session", counting)
    vae = BirdVAE(tiny_model, threads=1)
    start = threading.Barrier(8)
    results: list[np.ndarray] = []

    def draw() -> None:
        start.wait()
        results.append(vae.sample(3, seed=5, prior="learned"))

    workers = [threading.Thread(target=draw) for _ in range(8)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert sorted(opened) == ["decoder.onnx", "prior.onnx"]
    assert len(results) == 8 and all(np.array_equal(r, results[0]) for r in results)


def test_the_manifest_and_prior_handed_out_cannot_change_the_model(vae):
    vae.manifest.default_noise = 5.0
    vae.manifest.priors.clear()
    assert vae.default_noise() == 0.0 and "fitted" in vae.prior_names
    with pytest.raises(ValueError, match="read-only"):
        vae.prior("fitted").means[:] += 3


def test_a_resize_that_overshoots_0_and_1_a_little_is_taken(vae):
    """A bicubic or Lanczos resize overshoots sharp edges by a few hundredths."""
    edges = np.zeros((1, 3, SIZE, SIZE), np.float32)
    edges[..., ::2] = 1
    overshot = edges * 1.046 - 0.023
    assert vae.encode(overshot)[0].shape == (1, LATENT)


def test_a_model_pickles_and_copies_before_and_after_first_use(vae):
    import copy
    import pickle

    birds = vae.sample(2, seed=3)  # its graphs are open now
    for twin in (pickle.loads(pickle.dumps(vae)), copy.deepcopy(vae)):
        assert np.array_equal(twin.sample(2, seed=3), birds)
    with pytest.raises(ArgumentError, match="name or path is empty"):
        BirdVAE.load("")


def test_an_open_graph_runs_while_another_is_being_opened(tiny_model, monkeypatch):
    """Opening a graph (reading, hashing, building its session) takes the lock; a graph that
    is open already runs without waiting for it."""
    vae = BirdVAE(tiny_model, threads=1)
    vae.decode(np.zeros((1, LATENT), np.float32))  # the decoder is open
    opening, release = threading.Event(), threading.Event()
    real_read = model_module.read_verified

    def slow_read(*args: object):
        opening.set()
        release.wait(30)
        return real_read(*args)

    monkeypatch.setattr(model_module, "read_verified", slow_read)
    encoder = threading.Thread(target=vae.encode, args=(_photos(1),))
    encoder.start()
    assert opening.wait(30)
    try:
        done = threading.Event()
        threading.Thread(target=lambda: (vae.decode(np.zeros((1, LATENT), np.float32)),
                                          done.set())).start()  # fmt: skip
        assert done.wait(10), "decode waited for the encoder's opening"
    finally:
        release.set()
        encoder.join()


class _NoNumpy:
    """What a bfloat16 or GPU tensor is to numpy: an object whose conversion fails."""

    def __array__(self, *_, **__):
        raise TypeError("Got unsupported ScalarType BFloat16")


def test_an_array_numpy_cannot_make_names_numpys_reason(vae):
    """A bfloat16 tensor was told "its rows differ", and one requiring grad escaped as
    torch's RuntimeError."""
    with pytest.raises(ArgumentError, match=r"^images must be an array .*BFloat16"):
        vae.encode(_NoNumpy())
    with pytest.raises(ArgumentError, match="its rows differ"):
        vae.encode(BAD_IMAGES["ragged"][0])


def test_a_flat_array_is_refused_by_its_shape_not_its_size(vae):
    """Codes flattened by mistake were refused as asking for gigabytes."""
    with pytest.raises(ArgumentError, match=r"z must have shape \[N, 8\], got \[800000\]"):
        vae.decode(np.zeros(LATENT * 100_000, np.float32))
    with pytest.raises(ArgumentError, match=r"images must have shape .*got \[3000000\]"):
        vae.reconstruct(np.zeros(3_000_000, np.float32))


def test_paths_of_every_kind_python_has_are_taken_and_the_rest_refused(vae, tiny_model):
    from PIL import Image

    photo = Path(__file__).parents[1] / "fixtures" / "birds"
    first = sorted(photo.iterdir())[0]
    as_bytes = vae.load_photos([bytes(first)])  # one bytes path worked, a list of them did not
    assert np.array_equal(as_bytes, vae.load_photos(first))
    assert BirdVAE(bytes(tiny_model), threads=1).path == tiny_model
    for paths, message in [
        (None, "paths must be a path or a list of paths, not NoneType"),
        ([None], r"paths\[0\] must be a path, not NoneType"),
        (Image.new("RGB", (4, 4)), "not an image in memory"),
        ("a\0b.png", "holds a NUL character"),
    ]:
        with pytest.raises(ArgumentError, match=message):
            vae.load_photos(paths)
    with pytest.raises(ArgumentError, match="the model folder must be a path, not int"):
        BirdVAE(5)
