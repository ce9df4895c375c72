"""BirdVAE over the committed tiny model: shapes, determinism, chunking, and refused models."""

from __future__ import annotations

import json
import os
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest

from birdvae.runtime import BirdVAE
from birdvae.runtime.cpus import usable_cpus
from birdvae.runtime.errors import ArgumentError
from birdvae.runtime.format import (
    DECODER_FILE,
    ENCODER_FILE,
    MANIFEST_FILE,
    MIXTURE_FILE,
    SAMPLER_FILE,
    Manifest,
    ModelFormatError,
)
from birdvae.runtime.model import (
    SHIPPED_MODELS,
    real_folder,
    resolve_model,
    shipped_model_dir,
    slerp,
)


@pytest.fixture
def vae(tiny_model: Path) -> BirdVAE:
    return BirdVAE(tiny_model, threads=1)


def test_properties(vae: BirdVAE, tiny_model: Path) -> None:
    assert (vae.image_size, vae.latent_dim) == (16, 8)
    assert vae.path == tiny_model
    assert isinstance(vae.manifest, Manifest) and "fitted" in vae.manifest.priors
    assert "image_size=16" in repr(vae)
    assert BirdVAE.load(str(tiny_model)).path == tiny_model


def test_sample_shape_range_and_seed(vae: BirdVAE) -> None:
    birds = vae.sample(5, seed=1)
    assert birds.shape == (5, 3, 16, 16) and birds.dtype == np.float32
    assert birds.min() >= 0.0 and birds.max() <= 1.0
    np.testing.assert_array_equal(vae.sample(5, seed=1), birds)
    assert not np.array_equal(vae.sample(5, seed=2), birds)


def test_pixel_noise_draws_around_the_same_birds(vae: BirdVAE) -> None:
    smooth = vae.sample(6, seed=4, noise=0)
    grainy = vae.sample(6, seed=4, noise=1.0)
    assert grainy.shape == smooth.shape and grainy.min() >= 0 and grainy.max() <= 1
    assert not np.array_equal(grainy, smooth)
    assert np.abs(grainy - smooth).mean() < 0.1  # the same codes underneath, plus grain
    np.testing.assert_array_equal(vae.sample(6, seed=4, noise=1.0), grainy)
    chunks = np.concatenate(list(vae.sample_batches(6, seed=4, batch=4, noise=1.0)))
    np.testing.assert_allclose(chunks, grainy, atol=1e-6)  # batch size changes nothing
    assert vae.default_noise() == 0
    np.testing.assert_array_equal(vae.sample(6, seed=4), smooth)


def test_pixel_noise_needs_a_decoder_with_scales(mean_only_model: Path) -> None:
    vae = BirdVAE(mean_only_model, threads=1)
    assert vae.sample(2, seed=0).shape == (2, 3, 16, 16)  # the mean, always
    with pytest.raises(ValueError, match=r"no pixel scales.*use noise 0"):
        vae.sample(2, seed=0, noise=0.5)


def test_default_noise_on_a_decoder_without_pixel_outputs_is_a_format_error(
    mean_only_model: Path, tmp_path: Path
) -> None:
    folder = Path(shutil.copytree(mean_only_model, tmp_path / "m"))
    manifest = Manifest.load(folder)
    manifest.default_noise = 0.4
    manifest.save(folder)
    vae = BirdVAE(folder, threads=1)
    assert vae.encode(np.zeros((1, 3, 16, 16), np.float32))[0].shape == (1, 8)  # encoder fine
    with pytest.raises(ModelFormatError, match=r"defaults to pixel noise, but decoder\.onnx"):
        vae.sample(2, seed=0)
    with pytest.raises(ModelFormatError, match="defaults to pixel noise"):
        vae.sample(2, seed=0, noise=0)  # the folder is broken, not just this request


def test_manifest_default_noise_is_used_and_checked(model_copy: Path) -> None:
    manifest = Manifest.load(model_copy)
    manifest.default_noise = 0.5
    manifest.save(model_copy)
    vae = BirdVAE(model_copy, threads=1)
    np.testing.assert_array_equal(vae.sample(3, seed=2), vae.sample(3, seed=2, noise=0.5))
    manifest.default_noise = -1.0
    manifest.save(model_copy)
    with pytest.raises(ModelFormatError, match="default noise must be"):
        BirdVAE(model_copy)


@pytest.mark.parametrize("prior", ["standard", "fitted"])
def test_chunked_sampling_equals_unchunked(vae: BirdVAE, prior: str) -> None:
    whole_z = np.concatenate(list(vae.latent_batches(7, seed=3, prior=prior, batch=64)))
    chunks_z = list(vae.latent_batches(7, seed=3, prior=prior, batch=3))
    assert [len(z) for z in chunks_z] == [3, 3, 1]
    np.testing.assert_array_equal(np.concatenate(chunks_z), whole_z)
    whole = vae.sample(7, seed=3, prior=prior, batch=64)
    chunks = list(vae.sample_batches(7, seed=3, prior=prior, batch=3))
    assert [len(c) for c in chunks] == [3, 3, 1]
    np.testing.assert_allclose(np.concatenate(chunks), whole, atol=1e-6)
    np.testing.assert_allclose(vae.decode(whole_z), whole, atol=1e-6)


def test_defaults_come_from_the_manifest(vae: BirdVAE) -> None:
    assert vae.manifest.default_prior == "fitted"
    assert vae.default_temperature() == vae.default_temperature("fitted") == 0.8
    assert vae.default_temperature("standard") == 1.0
    np.testing.assert_array_equal(
        vae.sample(3, seed=0), vae.sample(3, seed=0, prior="fitted", temperature=0.8)
    )
    assert not np.array_equal(vae.sample(3, seed=0), vae.sample(3, seed=0, prior="standard"))
    assert not np.array_equal(vae.sample(3, seed=0), vae.sample(3, seed=0, temperature=1.5))


def test_encode_decode_reconstruct(vae: BirdVAE) -> None:
    images = vae.sample(4, seed=0)
    mean, logvar = vae.encode(images)
    assert mean.shape == logvar.shape == (4, 8) and mean.dtype == np.float32
    mean_in_chunks, _ = vae.encode(images, batch=3)
    np.testing.assert_allclose(mean_in_chunks, mean, atol=1e-6)
    np.testing.assert_allclose(vae.reconstruct(images), vae.decode(mean), atol=1e-6)
    assert vae.decode(mean[:1]).shape == (1, 3, 16, 16)


def test_interpolate_ends_at_both_images(vae: BirdVAE) -> None:
    images = vae.sample(2, seed=4)
    path = vae.interpolate(images[0], images[1], steps=5)
    assert path.shape == (5, 3, 16, 16)
    np.testing.assert_allclose(path[[0, -1]], vae.reconstruct(images), atol=1e-5)
    with pytest.raises(ValueError, match="steps"):
        vae.interpolate(images[0], images[1], steps=1)


def test_slerp() -> None:
    a, b = np.array([3.0, 0.0]), np.array([0.0, 3.0])
    path = slerp(a, b, np.linspace(0, 1, 5))
    np.testing.assert_allclose(path[[0, -1]], [a, b], atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(path, axis=1), 3.0, rtol=1e-6)  # on the arc
    np.testing.assert_allclose(path[2], [3 / np.sqrt(2)] * 2, rtol=1e-6)
    np.testing.assert_allclose(slerp(a, 2 * a, [0.5]), [1.5 * a])  # parallel: the line


@pytest.mark.parametrize(
    ("images", "message"),
    [
        (np.zeros((1, 3, 16, 16), np.uint8), "uint8"),
        (np.zeros((3, 16, 16), np.float32), "shape"),
        (np.zeros((1, 3, 8, 8), np.float32), "shape"),
    ],
)
def test_encode_refuses_bad_arrays(vae: BirdVAE, images: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        vae.encode(images)


def test_threads_must_be_a_count(tiny_model: Path) -> None:
    with pytest.raises(ValueError, match="threads"):
        BirdVAE(tiny_model, threads=-1)
    with pytest.raises(ArgumentError, match="CPUs"):  # more would only wait on each other
        BirdVAE(tiny_model, threads=usable_cpus() + 1)


def test_sampling_settings_are_resolved_once_and_draw_the_same_birds(
    vae: BirdVAE, model_without_prior: Path
) -> None:
    settings = vae.sampling(seed=3)
    assert (settings.prior, settings.temperature, settings.noise) == ("fitted", 0.8, 0.0)
    assert str(settings) == "seed 3, fitted prior, temperature 0.8, noise 0"
    drawn = np.concatenate(list(vae.draw(5, settings)))
    np.testing.assert_array_equal(drawn, vae.sample(5, seed=3))
    with pytest.raises(ArgumentError, match="no learned prior"):
        BirdVAE(model_without_prior, threads=1).sampling(prior="learned")
    with pytest.raises(ArgumentError, match="batch 100000 is too large"):
        vae.sampling(batch=100_000)


def test_sampling_settings_are_named_not_placed(vae: BirdVAE) -> None:
    """The settings come in different orders in different methods; by position, a batch size
    would have been taken for a pixel noise."""
    for call in (vae.sampling, lambda *a: vae.sample(1, *a), lambda *a: vae.sample_batches(1, *a)):
        with pytest.raises(TypeError):
            call(3, 0.8)


def test_sessions_are_made_once_and_reused(vae: BirdVAE) -> None:
    vae.sample(1, seed=0)
    session = vae._session(DECODER_FILE)
    vae.sample(1, seed=1)
    assert vae._session(DECODER_FILE) is session


def test_none_asked_for_is_none_returned_in_the_shape_asked_for(vae: BirdVAE) -> None:
    """A caller whose filter left no photos or birds gets empty arrays, as numpy would, not an
    error; the arguments are still checked."""
    size, dim = vae.image_size, vae.latent_dim
    none = np.zeros((0, 3, size, size), np.float32)
    assert vae.sample(0, seed=1).shape == (0, 3, size, size)
    assert list(vae.sample_batches(0)) == [] and list(vae.latent_batches(0)) == []
    mean, logvar = vae.encode(none)
    assert mean.shape == logvar.shape == (0, dim) and mean.dtype == np.float32
    assert vae.decode(np.zeros((0, dim), np.float32)).shape == none.shape
    assert vae.reconstruct(none).shape == none.shape and vae.load_photos([]).shape == none.shape
    with pytest.raises(ArgumentError, match="temperature"):
        vae.sample(0, temperature=-1.0)


def test_a_graph_running_out_of_memory_is_not_blamed_on_the_model(vae: BirdVAE) -> None:
    class Starved:
        def run(self, *_args: object) -> None:
            raise MemoryError

    vae._sessions[DECODER_FILE] = Starved()
    with pytest.raises(MemoryError):
        vae.decode(np.zeros((1, vae.latent_dim), np.float32))
    vae.close()


def test_close_lets_go_of_the_graphs_and_a_later_call_opens_them_again(tiny_model: Path) -> None:
    with BirdVAE(tiny_model, threads=1) as vae:
        before = vae.sample(3, seed=2)
        assert vae._sessions and vae._priors
    assert not vae._sessions and not vae._priors  # the with block closed it
    assert np.array_equal(vae.sample(3, seed=2), before)
    vae.close()
    vae.close()  # twice is nothing
    assert not vae._sessions


def test_wrong_input_names_are_refused(wrong_names_model: Path) -> None:
    vae = BirdVAE(wrong_names_model, threads=1)  # the manifest and hashes are fine
    vae.encode(np.zeros((1, 3, 16, 16), np.float32))  # and so is the encoder
    with pytest.raises(ModelFormatError, match=r"takes inputs \['latent'\].*'z'"):
        vae.sample(1)


def test_a_full_verify_opens_every_graph_only_when_asked(wrong_names_model: Path) -> None:
    vae = BirdVAE(wrong_names_model, threads=1)
    vae.verify()  # hashes only: the decoder's wrong input name is not seen
    assert not vae._sessions
    with pytest.raises(ModelFormatError, match=r"decoder\.onnx takes inputs \['latent'\]"):
        vae.verify(full=True)  # what vae-export checks a new folder with


def test_a_full_verify_reads_a_mixture_the_hashes_pass(model_copy: Path, refresh_manifest) -> None:
    arrays = dict(np.load(model_copy / MIXTURE_FILE))
    arrays["means"] = arrays["means"][:, :-1]  # one latent dimension short of the model's
    np.savez(model_copy / MIXTURE_FILE, **arrays)
    refresh_manifest(model_copy)
    vae = BirdVAE(model_copy, threads=1)
    vae.verify()
    with pytest.raises(ModelFormatError, match="means has shape"):
        vae.verify(full=True)


def test_a_full_verify_loads_everything_of_a_sound_model(model_copy: Path) -> None:
    vae = BirdVAE(model_copy, threads=1)
    vae.verify(full=True)
    assert set(vae._sessions) == {ENCODER_FILE, DECODER_FILE, SAMPLER_FILE}
    assert set(vae._priors) == set(vae.prior_names) == {"learned", "fitted", "standard"}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"\x08\x07garbage that is no protobuf graph", "not a well-formed ONNX file"),
        (b"\x08\x07", "cannot be loaded by onnxruntime"),  # a model of no graph
    ],
)
def test_corrupt_onnx_is_refused(model_copy: Path, refresh_manifest, content, message) -> None:
    (model_copy / DECODER_FILE).write_bytes(content)
    refresh_manifest(model_copy)
    vae = BirdVAE(model_copy)
    with pytest.raises(ModelFormatError, match=message):
        vae.decode(np.zeros((1, 8), np.float32))


@pytest.mark.parametrize(
    ("damaged", "use"),
    [
        (DECODER_FILE, lambda vae: vae.decode(np.zeros((1, vae.latent_dim), np.float32))),
        (ENCODER_FILE, lambda vae: vae.encode(np.zeros((1, 3, 16, 16), np.float32))),
        (MIXTURE_FILE, lambda vae: vae.sample(1, prior="fitted")),
        (DECODER_FILE, lambda vae: vae.verify()),
    ],
)
def test_hash_mismatch_is_refused_before_use(model_copy: Path, damaged: str, use) -> None:
    data = bytearray((model_copy / damaged).read_bytes())
    data[-1] ^= 0xFF
    (model_copy / damaged).write_bytes(bytes(data))
    vae = BirdVAE(model_copy, threads=1)  # sizes match, so only the hash can tell
    with pytest.raises(ModelFormatError, match=f"{damaged} does not match its sha256"):
        use(vae)
    assert not vae._sessions, "onnxruntime must never see a file whose hash is wrong"


def test_files_are_hashed_only_when_used(model_copy: Path) -> None:
    data = bytearray((model_copy / ENCODER_FILE).read_bytes())
    data[-1] ^= 0xFF
    (model_copy / ENCODER_FILE).write_bytes(bytes(data))
    birds = BirdVAE(model_copy, threads=1).sample(2, seed=0)  # sampling never reads the encoder
    assert birds.shape == (2, 3, 16, 16)


def test_changed_size_is_refused_at_once(model_copy: Path) -> None:
    with open(model_copy / ENCODER_FILE, "ab") as handle:
        handle.write(b"\0")
    with pytest.raises(ModelFormatError, match="bytes, the manifest says"):
        BirdVAE(model_copy)


def _edit_manifest(folder: Path, **changes: object) -> None:
    path = folder / MANIFEST_FILE
    data = json.loads(path.read_text())
    for key, value in changes.items():
        if isinstance(value, dict):
            data[key].update(value)
        else:
            data[key] = value
    path.write_text(json.dumps(data))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"default_prior": "uniform"}, "defaults to the 'uniform' prior"),
        ({"priors": {"flow": {"kind": "flow", "file": "prior.npz"}}}, "unknown prior 'flow'"),
        (
            {"priors": {"fitted": {"kind": "flow", "file": "prior.npz", "components": 2}}},
            "must be kind 'gaussian-mixture'",
        ),
        (
            {
                "priors": {
                    "fitted": {"kind": "gaussian-mixture", "file": "../prior.npz", "components": 2}
                }
            },
            "must be kind",
        ),
        (
            {"priors": {"fitted": {"kind": "gaussian-mixture", "file": "prior.npz"}}},
            "positive components",
        ),
        ({"default_temperature": -1}, "temperature"),
        ({"default_temperature": 50}, "default temperature must be 0 to 10"),
        (
            {
                "priors": {
                    "fitted": {
                        "kind": "gaussian-mixture",
                        "file": "prior.npz",
                        "components": 2,
                        "default_temperature": 11,
                    }
                }
            },
            "default temperature must be 0 to 10",
        ),
        ({"default_noise": 10.5}, "default noise must be 0 to 10"),
        (
            {
                "priors": {
                    "fitted": {"kind": "gaussian-mixture", "file": "prior.npz", "components": 3}
                }
            },
            "3 components",
        ),
    ],
)
def test_inconsistent_prior_settings_are_refused(model_copy: Path, changes, message) -> None:
    _edit_manifest(model_copy, **changes)
    with pytest.raises(ModelFormatError, match=message):
        BirdVAE(model_copy).sample(1, prior="fitted")


def test_model_without_fitted_prior(model_without_prior: Path) -> None:
    vae = BirdVAE(model_without_prior, threads=1)
    assert vae.default_temperature() == 1.0
    assert vae.sample(2, seed=0).shape == (2, 3, 16, 16)
    with pytest.raises(ValueError, match="no fitted prior"):
        vae.sample(2, prior="fitted")
    _edit_manifest(model_without_prior, default_prior="fitted")
    with pytest.raises(ModelFormatError, match="'fitted' prior, which it does not have"):
        BirdVAE(model_without_prior)


def test_names_and_paths(tmp_path: Path) -> None:
    assert resolve_model(tmp_path) == tmp_path
    assert resolve_model("some/folder") == Path("some/folder")
    with pytest.raises(ValueError, match="not a shipped model"):
        shipped_model_dir("birds16")
    with pytest.raises(ModelFormatError, match="does not exist"):
        BirdVAE.load(tmp_path / "missing")


def test_real_folder_extracts_a_zipped_model(tiny_model: Path, tmp_path: Path) -> None:
    archive = tmp_path / "models.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        for path in tiny_model.iterdir():
            zipped.write(path, f"birds32/{path.name}")
    folder = real_folder(zipfile.Path(archive, "birds32/"))
    assert sorted(p.name for p in folder.iterdir()) == sorted(p.name for p in tiny_model.iterdir())
    assert BirdVAE(folder, threads=1).sample(1, seed=0).shape == (1, 3, 16, 16)
    assert real_folder(tiny_model) == tiny_model  # on disk: used in place


def test_a_shipped_name_missing_from_the_installation_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setattr("birdvae.runtime.model.files", lambda package: tmp_path)
    with pytest.raises(ModelFormatError, match="birds64 is not in this installation"):
        BirdVAE.load("birds64")


@pytest.mark.parametrize("name", SHIPPED_MODELS)
def test_shipped_model_loads_and_samples(name: str) -> None:
    vae = BirdVAE.load(name, threads=1)
    assert vae.image_size == int(name.removeprefix("birds"))
    birds = vae.sample(2, seed=0)
    assert birds.shape == (2, 3, vae.image_size, vae.image_size)
    assert birds.min() >= 0.0 and birds.max() <= 1.0
    assert birds.std() > 0.05  # a picture, not a flat colour


@pytest.mark.parametrize("name", SHIPPED_MODELS)
def test_shipped_models_pixel_noise_sits_on_the_same_birds(name: str) -> None:
    vae = BirdVAE.load(name, threads=1)
    grainy, smooth = vae.sample(8, seed=0, noise=0.5), vae.sample(8, seed=0, noise=0)
    assert not np.array_equal(grainy, smooth)
    assert np.abs(grainy - smooth).mean() < 0.05


def test_birds32_samples_its_learned_prior_without_pixel_noise_by_default() -> None:
    """The sharpened decoder draws its own texture; the README's grid is this default."""
    vae = BirdVAE.load("birds32", threads=1)
    settings = vae.sampling()
    assert (settings.prior, settings.temperature, settings.noise) == ("learned", 1.0, 0.0)
    np.testing.assert_array_equal(
        vae.sample(4, seed=0), vae.sample(4, seed=0, prior="learned", noise=0)
    )


def test_no_argument_means_birds32() -> None:
    assert BirdVAE(threads=1).path == BirdVAE.load("birds32").path


@pytest.mark.parametrize("name", SHIPPED_MODELS)
def test_shipped_model_reconstructs_a_photo(name: str, birds: list[Path]) -> None:
    from birdvae.runtime import images, photos

    vae = BirdVAE.load(name, threads=1)
    photo = photos.load_image(birds[0], vae.image_size)
    recon = images.to_uint8_hwc(vae.reconstruct(images.from_uint8_hwc(photo[None])))[0]
    assert images.psnr(photo, recon) > 15.0  # a trained model, not noise


@pytest.mark.parametrize("name", SHIPPED_MODELS)
def test_a_shipped_model_draws_a_seeds_birds_whatever_n_and_batch(name: str) -> None:
    """The shipped samplers are int8 with activations quantized per run, so this fails if the
    runtime hands the graph batches of whatever size the caller asked for."""
    vae = BirdVAE.load(name, threads=1)
    assert vae.manifest.default_prior == "learned"
    birds = vae.sample(70, seed=11)
    np.testing.assert_array_equal(vae.sample(5, seed=11), birds[:5])
    np.testing.assert_array_equal(vae.sample(70, seed=11, batch=9), birds)


def test_the_learned_prior_samples_through_prior_onnx(vae: BirdVAE) -> None:
    assert vae.prior_names == ("fitted", "learned", "standard")
    assert vae.default_temperature("learned") == 0.9
    birds = vae.sample(70, seed=3, prior="learned")
    assert birds.shape == (70, 3, 16, 16)
    np.testing.assert_array_equal(vae.sample(70, seed=3, prior="learned", batch=16), birds)
    assert not np.array_equal(vae.sample(70, seed=3, prior="fitted"), birds)
    codes = np.concatenate(list(vae.latent_batches(5, seed=1, prior="learned")))
    cold = np.concatenate(list(vae.latent_batches(5, seed=1, prior="learned", temperature=0.1)))
    assert codes.shape == (5, 8) and not np.allclose(codes, cold)


def test_a_learned_prior_of_the_wrong_width_is_refused(model_copy: Path) -> None:
    _edit_manifest(
        model_copy,
        priors={
            "learned": {
                "kind": "sampler",
                "file": "prior.onnx",
                "noise_dim": 9,
                "default_temperature": 1.0,
            }
        },
    )
    with pytest.raises(ModelFormatError, match=r"prior\.onnx input 'noise' has shape"):
        BirdVAE(model_copy).sample(1, prior="learned")


@pytest.mark.parametrize("name", ["birds32", "birds64"])
def test_a_shipped_manifest_names_its_data_without_paths(name: str) -> None:
    """Where the trainer's data lay is the trainer's business: a manifest names the sets."""
    data = Manifest.load(shipped_model_dir(name)).source["data"]
    assert data["names"] and all("/" not in n and "\\" not in n for n in data["names"])
    assert "shared" not in json.dumps(data)


def test_a_version_1_folder_draws_what_its_version_2_form_draws(model_copy: Path) -> None:
    """Version 1 (one mixture under ``prior``, no learned prior) is still read, as the mixture
    it was: the same birds for a seed as the same folder written as version 2."""
    want = BirdVAE(model_copy).sample(3, seed=5, prior="fitted")
    data = json.loads((model_copy / MANIFEST_FILE).read_text())
    fitted = data.pop("priors")["fitted"]
    del fitted["kind"], data["files"][SAMPLER_FILE]
    (model_copy / SAMPLER_FILE).unlink()
    data.update(format_version=1, prior=fitted, default_prior="fitted")
    (model_copy / MANIFEST_FILE).write_text(json.dumps(data))
    old = BirdVAE(model_copy)
    assert tuple(old.prior_names) == ("fitted", "standard")
    np.testing.assert_array_equal(old.sample(3, seed=5), want)


def test_the_int8_sampler_runs_unfused_where_arm_cpus_with_sme_got_it_wrong(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The graph onnxruntime runs (its optimized copy, written out) holds no
    DynamicQuantizeMatMul; the same options without UNSAFE_FUSIONS give one, so the check sees
    the fusion when it is there. CI's aarch64 stage compares the codes themselves."""
    import onnxruntime

    from birdvae.runtime import graphs

    written = iter(tmp_path / f"optimized-{i}.onnx" for i in range(2))

    class WritingOptions(onnxruntime.SessionOptions):
        def __init__(self) -> None:
            super().__init__()
            self.optimized_model_filepath = str(next(written))

    monkeypatch.setattr(onnxruntime, "SessionOptions", WritingOptions)
    sampler = shipped_model_dir() / SAMPLER_FILE
    graphs.open_session(sampler.read_bytes(), sampler, threads=1)
    unfused = (tmp_path / "optimized-0.onnx").read_bytes()
    onnxruntime.InferenceSession(
        sampler.read_bytes(), WritingOptions(), providers=["CPUExecutionProvider"]
    )
    fused = (tmp_path / "optimized-1.onnx").read_bytes()
    assert b"DynamicQuantizeMatMul" in fused
    assert b"DynamicQuantizeMatMul" not in unfused


@pytest.mark.parametrize("kind", ["missing", "folder", "pipe"])
def test_a_manifest_that_is_no_file_is_named_for_what_it_is(model_copy: Path, kind: str) -> None:
    """A folder or a pipe called manifest.json was reported as no manifest at all."""
    manifest = model_copy / MANIFEST_FILE
    manifest.unlink()
    if kind == "folder":
        manifest.mkdir()
    elif kind == "pipe":
        os.mkfifo(manifest)
    expected = "it has no manifest.json" if kind == "missing" else "manifest.json is not a regular"
    with pytest.raises(ModelFormatError, match=expected):
        BirdVAE(model_copy)
