"""Weights: local checkpoint files, random initialisations saved once, Whisper folders, clear errors."""

import shutil
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
from conftest import extract, features, tiny
from media import make_video, tone

from gais_pipe.extract.audio_encoders import WhisperEncoder, make_audio_encoder
from gais_pipe.extract.clip_model import load_clip, register_bundled_architectures
from gais_pipe.extract.weights import WeightsUnavailable
from gais_pipe.workdir import Workdir
from gais_pipe.workdir.hashing import sha256_file


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_open_clip_weights_from_a_local_checkpoint_file(tmp_path, suffix):
    register_bundled_architectures()
    torch.manual_seed(123)
    name = tiny()["features"]["clip"]["model"]
    model = open_clip.create_model(name).eval()
    checkpoint = tmp_path / f"mine{suffix}"
    if suffix == ".pt":
        torch.save({"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}, checkpoint)
    else:
        from safetensors.torch import save_file

        save_file(model.state_dict(), str(checkpoint))
    make_video(tmp_path / "v/a.mp4", seconds=0.5, frame_value=lambda k: 128)
    extract(tmp_path / "v", tmp_path / "w", f"features.clip.pretrained='{checkpoint}'")

    record = Workdir(tmp_path / "w").identity()
    assert record["clip"]["sha256"] == sha256_file(checkpoint) and record["clip"]["file"] == str(checkpoint)
    stored = features(tmp_path / "w")["frame_features"][0].astype(np.float32)
    loaded = load_clip({"model": name, "pretrained": str(checkpoint)}, tmp_path / "m")
    with torch.no_grad():  # a flat grey frame of 128 through the same weights by hand
        pixels = torch.full((1, 3, loaded.image_size, loaded.image_size), 128 / 255.0)
        mean, std = torch.tensor(loaded.mean).view(1, 3, 1, 1), torch.tensor(loaded.std).view(1, 3, 1, 1)
        expected = model.encode_image((pixels - mean) / std)[0].numpy()
    np.testing.assert_allclose(stored[0], expected, rtol=0.02, atol=0.02)
    assert np.abs(stored - stored[0]).max() < 0.05  # every frame is the same grey


def test_random_weights_are_saved_once_and_identified_by_hash(tmp_path):
    first = load_clip({"model": "gais-tiny-vit", "pretrained": "random", "seed": 7}, tmp_path)
    file = Path(first.identity["file"])
    assert file.parent == tmp_path and first.identity["sha256"] == sha256_file(file)
    mtime = file.stat().st_mtime_ns
    second = load_clip({"model": "gais-tiny-vit", "pretrained": "random", "seed": 7}, tmp_path)
    assert file.stat().st_mtime_ns == mtime and second.identity == first.identity
    for a, b in zip(first.model.state_dict().values(), second.model.state_dict().values()):
        assert torch.equal(a, b)
    other = load_clip({"model": "gais-tiny-vit", "pretrained": "random", "seed": 8}, tmp_path)
    assert other.identity["sha256"] != first.identity["sha256"]


def test_unavailable_weights_say_what_to_download(tmp_path):
    with pytest.raises(WeightsUnavailable, match="HF_HUB_OFFLINE=1"):  # offline: the tag cannot be fetched
        load_clip({"model": "ViT-B-32", "pretrained": "openai"}, tmp_path)
    with pytest.raises(WeightsUnavailable, match="not found"):
        load_clip({"model": "ViT-B-32", "pretrained": str(tmp_path / "missing.safetensors")}, tmp_path)
    with pytest.raises(WeightsUnavailable, match="no pretrained tag"):
        load_clip({"model": "ViT-B-32", "pretrained": "no-such-tag"}, tmp_path)
    wrong = load_clip({"model": "gais-tiny-vit", "pretrained": "random"}, tmp_path).identity["file"]
    with pytest.raises(WeightsUnavailable, match="not a usable ViT-B-32 checkpoint"):
        load_clip({"model": "ViT-B-32", "pretrained": wrong}, tmp_path)
    with pytest.raises(WeightsUnavailable, match="snapshot_download"):
        make_audio_encoder(
            {"encoder": "whisper", "model": "openai/whisper-base", "sample_rate": 16000},
            torch.device("cpu"),
            None,
            4,
        )


@pytest.fixture(scope="module")
def tiny_whisper(tmp_path_factory) -> Path:
    """A randomly initialised Whisper of the real input format (80 mels, 30 s windows), saved as HF does."""
    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperModel

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("whisper-tiny-random")
    config = WhisperConfig(
        d_model=32,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        vocab_size=128,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        decoder_start_token_id=1,
        num_mel_bins=80,
        max_source_positions=1500,
    )
    WhisperModel(config).save_pretrained(folder)
    WhisperFeatureExtractor(feature_size=80).save_pretrained(folder)
    return folder


def test_whisper_encoder_crops_padding_and_spans_windows(tiny_whisper):
    encoder = WhisperEncoder({"model": str(tiny_whisper)}, torch.device("cpu"), None, batch=2)
    assert encoder.dim == 32 and encoder.frame_rate == 50
    assert encoder.identity["sha256"] == sha256_file(tiny_whisper / "model.safetensors")
    short = np.zeros(16000 * 2, np.float32)  # 2 s: 100 real encoder frames, not 1500
    long = np.random.default_rng(0).standard_normal(16000 * 35).astype(np.float32) * 0.1  # 35 s: two windows
    out = encoder.encode([encoder.frontend(short), encoder.frontend(long)])
    assert out[0].shape == (100, 32)
    assert out[1].shape == (1500 + 250, 32)
    np.testing.assert_allclose(encoder.frame_times(3), [0.01, 0.03, 0.05])


def test_extract_with_whisper_audio(tmp_path, tiny_whisper):
    make_video(tmp_path / "v/tone.mkv", seconds=3.0, acodec="pcm_s16le", audio=tone(800.0, start=1.5))
    make_video(tmp_path / "v/silent.mp4", seconds=1.0, acodec=None)
    extract(
        tmp_path / "v",
        tmp_path / "w",
        "features.audio.encoder='whisper'",
        f"features.audio.model='{tiny_whisper}'",
        "features.audio.pool='mean'",  # as in the paper config (tiny pools mean and std)
    )
    stored = features(tmp_path / "w")
    assert stored["audio_features"].shape == (2, 12, 32)
    assert stored["audio_mask"].tolist() == [[False] * 12, [True] * 12]
    assert Workdir(tmp_path / "w").identity()["audio"]["encoder"] == "whisper"


def _put_in_hf_cache(cache: Path, repo: str, files: dict[str, Path]) -> None:
    """Lay files out as huggingface_hub's cache does (refs/main -> snapshots/<rev>/...)."""
    root = cache / f"models--{repo.replace('/', '--')}"
    snapshot = root / "snapshots" / "0123456789abcdef"
    snapshot.mkdir(parents=True)
    (root / "refs").mkdir()
    (root / "refs" / "main").write_text("0123456789abcdef")
    for name, source in files.items():
        (snapshot / name).write_bytes(source.read_bytes())


def test_weights_come_from_the_hf_cache_when_offline(tmp_path, monkeypatch, tiny_whisper):
    import huggingface_hub.constants

    cache = tmp_path / "hub"
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    # An open_clip pretrained tag whose weights live in an HF repo, as open_clip's own tags do.
    checkpoint = Path(
        load_clip({"model": "gais-tiny-vit", "pretrained": "random", "seed": 3}, tmp_path).identity["file"]
    )
    _put_in_hf_cache(cache, "example/tiny-clip", {"open_clip_model.safetensors": checkpoint})
    tags = dict(open_clip.pretrained._PRETRAINED.get("gais-tiny-vit", {}))
    tags["cached"] = open_clip.pretrained._pcfg(hf_hub="example/tiny-clip/")
    monkeypatch.setitem(open_clip.pretrained._PRETRAINED, "gais-tiny-vit", tags)
    loaded = load_clip({"model": "gais-tiny-vit", "pretrained": "cached"}, tmp_path)
    assert loaded.identity["sha256"] == sha256_file(checkpoint)
    assert str(cache) in loaded.identity["file"]
    # Whisper by repo id, from the same cache.
    _put_in_hf_cache(cache, "example/whisper-tiny", {p.name: p for p in tiny_whisper.iterdir() if p.is_file()})
    encoder = WhisperEncoder({"model": "example/whisper-tiny"}, torch.device("cpu"), None, batch=2)
    assert encoder.identity["sha256"] == sha256_file(tiny_whisper / "model.safetensors")


def test_an_fp16_whisper_checkpoint_runs_in_fp32_on_the_cpu(tmp_path, tiny_whisper):
    """Checkpoints on the hub are often fp16; precision = fp32 (and the CPU) must still compute in fp32."""
    from transformers import WhisperModel

    half = tmp_path / "whisper-fp16"
    WhisperModel.from_pretrained(tiny_whisper, dtype=torch.float32).half().save_pretrained(half)
    shutil.copy(tiny_whisper / "preprocessor_config.json", half)
    encoder = WhisperEncoder({"model": str(half)}, torch.device("cpu"), None, batch=2)
    assert next(encoder.encoder.parameters()).dtype == torch.float32
    sound = np.random.default_rng(1).standard_normal(16000).astype(np.float32) * 0.1
    (out,) = encoder.encode([encoder.frontend(sound)])
    assert out.dtype == np.float32 and out.shape == (50, 32) and np.isfinite(out).all()
    full = WhisperEncoder({"model": str(tiny_whisper)}, torch.device("cpu"), None, batch=2)
    np.testing.assert_allclose(out, full.encode([full.frontend(sound)])[0], atol=0.05)  # fp16 rounding only
