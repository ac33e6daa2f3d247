"""WhisperLogMel + whisper_input must rebuild exactly what WhisperFeatureExtractor gives the encoder."""

from __future__ import annotations

import math
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch
from transformers import WhisperFeatureExtractor

from gais_pipe.extract.whisper_input import SILENT_LOG_MEL, WhisperLogMel, WhisperWindows, whisper_input

RATE = 16000
WINDOW = 30 * RATE
FULL_WINDOW_BYTES = 80 * 3000 * 4
SECONDS = [0.2, 2, 15, 30, 31, 65]
SIGNALS = ["noise", "sine", "silence", "quiet"]


@pytest.fixture(scope="module")
def extractor():
    return WhisperFeatureExtractor(feature_size=80)  # the default parameters: no download


@pytest.fixture(scope="module")
def frontend(extractor):
    return WhisperLogMel.from_extractor(extractor)


def make_signal(kind: str, samples: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(samples) / RATE
    if kind == "noise":
        return (0.1 * rng.standard_normal(samples)).astype(np.float32)
    if kind == "sine":  # loud and narrow: most bins, the padding included, are floored at max - 8
        return (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    if kind == "silence":
        return np.zeros(samples, np.float32)
    if kind == "quiet":  # peak log-mel below -2: the max - 8 floor sits under -10, so the padding stays -10 (-1.5)
        return (1e-6 * rng.standard_normal(samples) + 1e-4 * np.sin(2 * np.pi * 3000 * t)).astype(np.float32)
    raise ValueError(kind)


def reference(extractor, waveform: np.ndarray) -> np.ndarray:
    """What WhisperFrontend computes today: the extractor on the 30 s pieces."""
    pieces = [waveform[i : i + WINDOW] for i in range(0, max(len(waveform), 1), WINDOW)]
    return extractor(pieces, sampling_rate=RATE, return_tensors="np").input_features


@pytest.mark.parametrize("kind", SIGNALS)
@pytest.mark.parametrize("seconds", SECONDS)
def test_matches_extractor(extractor, frontend, seconds, kind):
    waveform = make_signal(kind, round(seconds * RATE))
    windows = frontend(waveform)
    rebuilt = whisper_input([windows], "cpu", torch.float32)
    expected = reference(extractor, waveform)
    assert rebuilt.shape == expected.shape == (math.ceil(max(len(waveform), 1) / WINDOW), 80, 3000)
    np.testing.assert_allclose(rebuilt.numpy(), expected, rtol=0, atol=1e-5)
    assert windows.valid.tolist() == [
        max(1, math.ceil(min(WINDOW, len(waveform) - i) / 320)) for i in range(0, max(len(waveform), 1), WINDOW)
    ]


EDGE_LENGTHS = [0, 1, 2, 199, 200, 201, 202, 359, 360, 361, WINDOW - 201, WINDOW - 200, WINDOW - 1]


@pytest.mark.parametrize("samples", EDGE_LENGTHS)
def test_edges_of_the_reflect_padding(extractor, frontend, samples):
    """Lengths where the STFT's reflect padding at either end meets the last real sample."""
    waveform = make_signal("noise", samples, seed=samples)
    np.testing.assert_allclose(
        whisper_input([frontend(waveform)], "cpu").numpy(), reference(extractor, waveform), rtol=0, atol=1e-5
    )


def test_batch_keeps_window_order(extractor, frontend):
    lengths = [31, 2, 0.2, 65]
    waveforms = [make_signal(kind, round(s * RATE), seed=i) for i, (kind, s) in enumerate(zip(SIGNALS, lengths))]
    rebuilt = whisper_input([frontend(w) for w in waveforms], "cpu")
    expected = np.concatenate([reference(extractor, w) for w in waveforms])
    np.testing.assert_allclose(rebuilt.numpy(), expected, rtol=0, atol=1e-5)


def test_dtype_is_applied_last(extractor, frontend):
    waveform = make_signal("noise", 2 * RATE)
    rebuilt = whisper_input([frontend(waveform)], torch.device("cpu"), torch.bfloat16)
    assert rebuilt.dtype == torch.bfloat16
    expected = torch.from_numpy(reference(extractor, waveform)).to(torch.bfloat16)
    assert torch.equal(rebuilt, expected)


def test_only_real_frames_are_sent(frontend):
    """A 2 s clip sends ~7% of a padded window; the frames dropped really are silent."""
    for seconds, frames in [(2, 202), (15, 1502)]:
        windows = frontend(make_signal("noise", seconds * RATE))
        assert [f.shape for f in windows.frames] == [(80, frames)]
    short = frontend(make_signal("noise", 2 * RATE))
    assert short.nbytes < 0.1 * FULL_WINDOW_BYTES
    assert frontend(np.zeros(0, np.float32)).frames[0].shape == (80, 0)


def test_frame_count_is_tight(frontend):
    """The last kept frame does see the last real sample (a loud click there), so none could be dropped."""
    for samples in [1, 161, 2 * RATE, 2 * RATE + 1]:
        waveform = np.zeros(samples, np.float32)
        waveform[-1] = 100.0
        last = frontend(waveform).frames[0][:, -1]
        assert (last > SILENT_LOG_MEL).any(), samples


def test_frontend_pickles(frontend):
    waveform = make_signal("sine", 2 * RATE)
    copy = pickle.loads(pickle.dumps(frontend))
    assert all(np.array_equal(a, b) for a, b in zip(copy(waveform).frames, frontend(waveform).frames))
    assert isinstance(pickle.loads(pickle.dumps(frontend(waveform))), WhisperWindows)


def test_rejects_dither():
    with pytest.raises(ValueError, match="dither"):
        WhisperLogMel.from_extractor(WhisperFeatureExtractor(feature_size=80, dither=1e-4))


def test_import_does_not_load_transformers():
    """Decode workers import this module: it must stay free of transformers."""
    code = "import sys, gais_pipe.extract.whisper_input; print('transformers' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
