"""Decoding real and generated media: which frames are taken, and where sound lands in time."""

import av
import numpy as np
import pytest
from conftest import OPENCV_DATA
from media import index_grey, make_video, tone

from gais_pipe.extract import soundtrack
from gais_pipe.extract.probe import open_input, open_options, probe
from gais_pipe.extract.soundtrack import decode_soundtrack
from gais_pipe.extract.video_frames import sample_frames


@pytest.mark.parametrize("decoder", ["decord", "pyav"])
@pytest.mark.parametrize(
    "suffix,vcodec,acodec",
    [
        ("mp4", "libx264", "aac"),
        ("avi", "mjpeg", "pcm_s16le"),
        ("mkv", "libx264", "pcm_s16le"),
        ("webm", "libvpx", "libopus"),
    ],
)
def test_frames_come_from_the_centres_of_equal_segments(tmp_path, decoder, suffix, vcodec, acodec):
    # 60 frames at 30 fps: the centres of T=12 segments fall mid-frame in frames 2, 7, 12, ... 57.
    path = make_video(
        tmp_path / f"v.{suffix}",
        seconds=2.0,
        fps=30,
        vcodec=vcodec,
        acodec=acodec,
        sample_rate=48000 if acodec == "libopus" else 16000,
    )
    frames = sample_frames(path, probe(path), 12, 32, decoder)
    assert frames.pixels.shape == (12, 32, 32, 3)
    expected = np.array([index_grey(k) for k in range(2, 60, 5)])
    np.testing.assert_allclose(frames.pixels.mean(axis=(1, 2, 3)), expected, atol=1.5)
    np.testing.assert_allclose(frames.times, np.arange(2, 60, 5) / 30, atol=1e-3)
    assert frames.duration == pytest.approx(2.0, abs=0.05)
    assert frames.fps == pytest.approx(30, rel=0.01)


@pytest.mark.parametrize("decoder", ["decord", "pyav"])
def test_fewer_frames_than_t_repeats_real_frames(tmp_path, decoder):
    path = make_video(tmp_path / "short.mp4", frames=3, fps=24, acodec=None)
    frames = sample_frames(path, probe(path), 12, 16, decoder)
    index = (frames.pixels.mean(axis=(1, 2, 3)) / 4).round()  # the grey level encodes the frame index
    assert index.tolist() == [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2]


def test_very_large_frames_are_resized_inside_the_decoder(tmp_path):
    path = make_video(tmp_path / "big.mp4", frames=2, fps=2, size=(4000, 3000), acodec=None)
    frames = sample_frames(path, probe(path), 4, 64)
    assert frames.pixels.shape == (4, 64, 64, 3)


def test_odd_frame_sizes_are_centre_cropped(tmp_path):
    path = make_video(tmp_path / "odd.mkv", seconds=0.5, fps=10, size=(97, 41), acodec=None, pix_fmt="yuv444p")
    frames = sample_frames(path, probe(path), 3, 24)
    assert frames.pixels.shape == (3, 24, 24, 3)


def test_soundtrack_is_mono_at_the_asked_rate_on_the_video_clock(tmp_path):
    path = make_video(tmp_path / "a.mp4", seconds=2.0, acodec="aac", sample_rate=44100, audio=tone(440.0))
    sound, problem = decode_soundtrack(path, probe(path), 16000)
    assert problem is None and sound.rate == 16000
    assert len(sound.samples) / 16000 == pytest.approx(2.0, abs=0.1)
    assert abs(sound.start) < 0.1
    assert sound.covered[0][0] == pytest.approx(sound.start) and sound.covered[-1][1] == pytest.approx(sound.end)
    spectrum = np.abs(np.fft.rfft(sound.samples[4000:20000]))
    assert np.argmax(spectrum) * 16000 / 16000 == pytest.approx(440, abs=2)


def test_no_audio_stream_gives_no_soundtrack(tmp_path):
    path = make_video(tmp_path / "silent.mp4", acodec=None)
    assert decode_soundtrack(path, probe(path), 16000) == (None, None)


@pytest.mark.skipif(not (OPENCV_DATA / "Megamind.avi").exists(), reason="opencv-doc not installed")
def test_megamind_bad_audio_packet_keeps_frames_and_the_rest_of_the_sound():
    path = OPENCV_DATA / "Megamind.avi"
    info = probe(path)
    frames = sample_frames(path, info, 12, 32)
    assert frames.duration == pytest.approx(11.26, abs=0.1)  # decord's broken AVI timestamps are not trusted
    sound, problem = decode_soundtrack(path, info, 16000)
    assert problem is None
    assert sound.dropped_packets >= 1
    assert len(sound.samples) / 16000 > 10.0


@pytest.mark.parametrize(("version", "expected"), [("18.1.0", {"metadata_errors": "ignore"}), ("19.0.2", {})])
def test_av_open_gets_only_the_options_this_pyav_takes(version, expected):
    """PyAV 19 dropped av.open's metadata_errors: passing it there failed every video of a Python 3.12 install."""
    assert open_options(version) == expected


def test_open_input_opens_with_this_pyavs_options(tmp_path):
    path = make_video(tmp_path / "v.mp4", seconds=0.5, fps=10)
    with open_input(path) as container:
        assert container.streams.video


def drop_audio_packets(source, target, dropped: set[int]):
    """A copy of `source` without the audio packets whose numbers are in `dropped`: lost sound, as a damaged
    file has it (the timestamps of the packets that remain jump over the hole)."""
    with av.open(str(source)) as src, av.open(str(target), "w") as dst:
        video = dst.add_stream_from_template(src.streams.video[0])
        audio = dst.add_stream_from_template(src.streams.audio[0])
        count = 0
        for packet in src.demux():
            if packet.dts is None:
                continue
            if packet.stream.type == "audio":
                count += 1
                if count in dropped:
                    continue
            packet.stream = audio if packet.stream.type == "audio" else video
            dst.mux(packet)
    return target


@pytest.mark.parametrize("rate", [16000, 22050])
def test_sound_resampled_in_runs_is_the_frame_by_frame_waveform_with_its_gaps(tmp_path, monkeypatch, rate):
    """Decoded sound is resampled a second at a time; the waveform, its spans of real sound and the holes
    left by lost packets must be those of resampling every decoded frame on its own."""
    whole = make_video(tmp_path / "a.mp4", seconds=6.0, acodec="aac", sample_rate=44100, audio=tone(440.0))
    path = drop_audio_packets(whole, tmp_path / "holes.mp4", {*range(60, 70), *range(150, 152), *range(200, 203)})
    runs, problem = decode_soundtrack(path, probe(path), rate)
    assert problem is None
    monkeypatch.setattr(soundtrack, "RESAMPLE_SECONDS", 0.0)  # every frame through the resampler alone
    frame_by_frame, _ = decode_soundtrack(path, probe(path), rate)
    np.testing.assert_array_equal(runs.samples, frame_by_frame.samples)
    assert runs.covered == frame_by_frame.covered and runs.start == frame_by_frame.start
    # 10 lost AAC packets (232 ms) make a hole; 2 (46 ms) are within the jitter allowed, so the clock is
    # set right at the next hole, 3 packets later: 5 packets of silence there
    assert len(runs.covered) == 3
    holes = [b[0] - a[1] for a, b in zip(runs.covered, runs.covered[1:])]
    assert holes == [pytest.approx(10 * 1024 / 44100, abs=0.01), pytest.approx(5 * 1024 / 44100, abs=0.01)]


def test_ffmpeg_logs_nothing_and_never_takes_the_gil_from_a_decoding_thread():
    """PyAV's log callback (any level but None) takes the GIL for each ERROR line, from FFmpeg's decoding
    threads too; freeing a threaded decoder while one of them logs then hangs the process for ever."""
    assert av.logging.get_level() is None
