import numpy as np
import pytest

from gais_pipe.extract.audio_encoders import pool_segments
from gais_pipe.extract.sampling import centre_crop, frames_at, resize_shape, segment_bounds, segment_centres


def test_segment_centres_split_the_real_duration_evenly():
    np.testing.assert_allclose(segment_centres(12.0, 4), [1.5, 4.5, 7.5, 10.5])
    bounds = segment_bounds(2.0, 2)
    np.testing.assert_allclose(bounds, [[0, 1], [1, 2]])


def test_frames_at_takes_the_frame_on_screen_and_repeats_when_short():
    starts = np.arange(10) / 10  # 10 fps
    assert frames_at(np.array([0.0, 0.05, 0.1, 0.99, 5.0]), starts).tolist() == [0, 0, 1, 9, 9]
    assert frames_at(segment_centres(0.3, 6), np.array([0.0, 0.1, 0.2])).tolist() == [0, 0, 1, 1, 2, 2]


def test_resize_keeps_aspect_and_crop_is_centred():
    assert resize_shape(1920, 1080, 224) == (398, 224)
    assert resize_shape(480, 640, 64) == (64, 85)
    frames = np.arange(2 * 4 * 6 * 1).reshape(2, 4, 6, 1)
    crop = centre_crop(frames, 4)
    assert crop.shape == (2, 4, 4, 1) and crop[0, 0, 0, 0] == frames[0, 0, 1, 0]


def test_pooling_respects_segments_gaps_and_coverage():
    times = np.arange(400) / 100 + 0.005  # 4 s of frames at 100 per second
    features = np.repeat(times[:, None], 2, axis=1)  # feature = its own time
    bounds = segment_bounds(4.0, 4)
    pooled = pool_segments(features, times, [(0.0, 2.5)], bounds, min_coverage=0.5)
    assert pooled.mask.tolist() == [True, True, True, False]  # 2.0-3.0 is half covered, 3.0-4.0 not at all
    np.testing.assert_allclose(pooled.features[0], [0.5, 0.5], atol=0.01)
    np.testing.assert_allclose(pooled.features[2], [2.25, 2.25], atol=0.01)  # only frames inside real audio
    assert not pooled.features[3].any()


def test_pooling_a_segment_shorter_than_an_encoder_frame_takes_the_nearest():
    times = np.array([0.01, 0.03])
    features = np.array([[1.0], [2.0]])
    pooled = pool_segments(features, times, [(0.0, 0.04)], segment_bounds(0.04, 8), 0.5)
    assert pooled.mask.all()
    assert pooled.features[:, 0].tolist() == [1, 1, 1, 1, 2, 2, 2, 2]


def test_mean_and_std_pooling_puts_the_spread_beside_the_mean():
    times = np.arange(200) / 100 + 0.005  # 2 s of frames at 100 per second
    steady = np.ones((200, 1))
    beeping = ((times * 10) % 1 < 0.5).astype(float)[:, None]  # on and off five times a segment
    features = np.concatenate([steady, beeping], axis=1)
    pooled = pool_segments(features, times, [(0.0, 2.0)], segment_bounds(2.0, 2), 0.5, pool="mean+std")
    assert pooled.features.shape == (2, 4) and pooled.mask.all()
    np.testing.assert_allclose(pooled.features[0], [1.0, 0.5, 0.0, 0.5], atol=0.01)  # same mean, other std
    nearest = pool_segments(features[:2], times[:2], [(0.0, 0.02)], segment_bounds(0.02, 4), 0.5, pool="mean+std")
    assert nearest.mask.all() and not nearest.features[:, 2:].any()  # one frame has no spread
    with pytest.raises(ValueError, match="pool"):
        pool_segments(features, times, [(0.0, 2.0)], segment_bounds(2.0, 2), 0.5, pool="max")
