"""`gais-pipe make-synthetic`: a captioned audio-visual video collection made from nothing.

No captioned video set can be downloaded here, so this makes one whose answers are known. Each video
shows one coloured shape with one motion and has one soundtrack; captions name what is seen and,
for most videos, what is heard:
- tones (beeps, a hum, a rising whistle) and, where espeak-ng is installed, a spoken word;
- "sound twins": videos that look the same and differ only in their sound, so their captions can
  only be told apart by listening;
- distractors whose audio is pure noise (white, pink or brown) and whose captions never mention
  sound; and some videos without an audio stream at all.
Every video gets several paraphrased captions, so captions of one video vary as real ones do.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import wave
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

SHAPES = ("circle", "square", "triangle")
COLOURS = {"red": (220, 40, 40), "green": (40, 180, 60), "blue": (50, 80, 230), "yellow": (230, 210, 40)}
MOTIONS = {
    "left to right": "moving from left to right",
    "up and down": "bouncing up and down",
    "still": "standing still",
}
TONES = {"beep": "high beeps", "hum": "a low hum", "whistle": "a rising whistle"}
WORDS = ("hello", "seven", "banana")
NOISES = ("white", "pink", "brown")
TEMPLATES_HEARD = (
    "a {colour} {shape} {motion} while {sound} plays",
    "{sound} as a {colour} {shape} is {motion}",
    "you can hear {sound}; a {colour} {shape} is {motion}",
)
TEMPLATES_SEEN = (
    "a {colour} {shape} {motion}",
    "a {shape} in {colour}, {motion}",
    "footage of a {colour} {shape} {motion}",
)
SIZE, FPS, SECONDS, RATE = 96, 12, 2.0, 16000


@dataclass(frozen=True)
class Spec:
    name: str
    shape: str
    colour: str
    motion: str
    sound: str  # a TONES key, "word:<w>", "noise:<colour>" or "none"
    container: str  # "mp4" | "mkv" | "webm"

    def description(self) -> str | None:
        if self.sound in TONES:
            return TONES[self.sound]
        if self.sound.startswith("word:"):
            return f"a voice saying {self.sound[5:]}"
        return None  # noise and silence are never named


def _frames(spec: Spec, rng: np.random.Generator) -> np.ndarray:
    count = int(SECONDS * FPS)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    background = (rng.integers(20, 60, 3)).astype(np.uint8)
    frames = np.empty((count, SIZE, SIZE, 3), np.uint8)
    radius = 16
    for i in range(count):
        phase = i / max(count - 1, 1)
        cx, cy = SIZE // 2, SIZE // 2
        if spec.motion == "left to right":
            cx = int(20 + phase * (SIZE - 40))
        elif spec.motion == "up and down":
            cy = int(SIZE / 2 + (SIZE / 2 - 22) * np.sin(2 * np.pi * 2 * phase))
        if spec.shape == "circle":
            inside = (xx - cx) ** 2 + (yy - cy) ** 2 <= radius**2
        elif spec.shape == "square":
            inside = (np.abs(xx - cx) <= radius) & (np.abs(yy - cy) <= radius)
        else:
            inside = (yy - cy <= radius) & (yy - cy >= -radius) & (np.abs(xx - cx) <= (yy - cy + radius) / 2)
        frame = np.broadcast_to(background, (SIZE, SIZE, 3)).copy()
        frame[inside] = COLOURS[spec.colour]
        frames[i] = frame
    return frames


def _speech(word: str) -> np.ndarray | None:
    if shutil.which("espeak-ng") is None:
        return None
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "word.wav"
        subprocess.run(["espeak-ng", "-w", str(path), word], check=True, capture_output=True)
        with wave.open(str(path)) as handle:
            rate, data = (
                handle.getframerate(),
                np.frombuffer(handle.readframes(handle.getnframes()), np.int16),
            )
    samples = data.astype(np.float32) / 32768
    return np.interp(np.arange(0, len(samples) * RATE / rate) * rate / RATE, np.arange(len(samples)), samples).astype(
        np.float32
    )


def _audio(spec: Spec, rng: np.random.Generator) -> np.ndarray | None:
    t = np.arange(int(SECONDS * RATE)) / RATE
    if spec.sound == "beep":
        return 0.4 * np.sin(2 * np.pi * 1500 * t) * ((t * 4) % 1 < 0.4)
    if spec.sound == "hum":
        return 0.5 * np.sin(2 * np.pi * 120 * t)
    if spec.sound == "whistle":
        return 0.4 * np.sin(2 * np.pi * (400 * t + 300 * t**2))
    if spec.sound.startswith("noise:"):
        white = rng.standard_normal(len(t))
        spectrum = np.fft.rfft(white)
        f = np.maximum(np.fft.rfftfreq(len(t)), 1e-3)
        shaped = {"white": spectrum, "pink": spectrum / np.sqrt(f), "brown": spectrum / f}[spec.sound[6:]]
        noise = np.fft.irfft(shaped, n=len(t))
        return (0.3 * noise / (np.abs(noise).max() + 1e-9)).astype(np.float32)
    if spec.sound.startswith("word:"):
        speech = _speech(spec.sound[5:])
        track = np.zeros(len(t), np.float32)
        if speech is not None:  # said twice, at 0.2 s and 1.1 s
            for start in (int(0.2 * RATE), int(1.1 * RATE)):
                piece = speech[: len(t) - start]
                track[start : start + len(piece)] += 0.8 * piece
        return track
    return None


def encode_frames(container, stream, frames) -> None:
    """Encode RGB frames (an iterable of [H, W, 3] uint8) into `stream`, frame i at pts i."""
    for i, frame in enumerate(frames):
        picture = av.VideoFrame.from_ndarray(frame, format="rgb24")
        picture.pts = i
        for packet in stream.encode(picture):
            container.mux(packet)
    for packet in stream.encode(None):
        container.mux(packet)


def encode_mono_audio(container, stream, samples: np.ndarray) -> None:
    """Encode float samples in [-1, 1] at the stream's rate, in the codec's own sample format."""
    ctx = stream.codec_context
    chunk = ctx.frame_size or 1024
    fmt = ctx.format.name
    scale = {"s16": (np.int16, 32767), "s32": (np.int32, 2147483647)}.get(fmt[:3])
    for start in range(0, len(samples), chunk):
        piece = np.asarray(samples[start : start + chunk], np.float32)
        if len(piece) < chunk and ctx.frame_size:
            piece = np.pad(piece, (0, chunk - len(piece)))
        data = (np.clip(piece, -1, 1) * scale[1]).astype(scale[0]) if scale else piece
        block = av.AudioFrame.from_ndarray(data.reshape(1, -1), format=fmt, layout="mono")
        block.sample_rate, block.pts = stream.rate, start
        for packet in stream.encode(block):
            container.mux(packet)
    for packet in stream.encode(None):
        container.mux(packet)


def _write(path: Path, frames: np.ndarray, audio: np.ndarray | None, container: str) -> None:
    codecs = {"mp4": ("libx264", "aac"), "mkv": ("libx264", "pcm_s16le"), "webm": ("libvpx", "libopus")}
    vcodec, acodec = codecs[container]
    with av.open(
        str(path), "w", container_options={"fflags": "+bitexact"}
    ) as out:  # no random ids: same seed, same bytes
        video = out.add_stream(vcodec, rate=FPS)
        video.width = video.height = SIZE
        video.pix_fmt = "yuv420p"
        if vcodec == "libx264":
            video.options = {"preset": "ultrafast", "crf": "18", "threads": "1"}
        sound = None
        if audio is not None:  # every stream is added before the first packet is written
            rate = 48000 if acodec == "libopus" else RATE
            sound = out.add_stream(acodec, rate=rate)
            sound.layout = "mono"
            if rate != RATE:
                audio = np.interp(
                    np.arange(int(len(audio) * rate / RATE)) * RATE / rate, np.arange(len(audio)), audio
                ).astype(np.float32)
        encode_frames(out, video, frames)
        if sound is not None:
            encode_mono_audio(out, sound, audio)


def plan(count: int, seed: int) -> list[Spec]:
    """Which videos to make: half heard (with sound twins), a quarter noise, the rest silent or without audio."""
    rng = np.random.default_rng(seed)
    sounds = [*TONES, *(f"word:{w}" for w in WORDS)] if shutil.which("espeak-ng") else list(TONES)
    specs: list[Spec] = []
    while len(specs) < count:
        shape, colour, motion = rng.choice(SHAPES), rng.choice(list(COLOURS)), rng.choice(list(MOTIONS))
        kind = rng.random()
        container = rng.choice(["mp4", "mp4", "mp4", "mkv", "webm"])
        index = len(specs)
        if kind < 0.5:  # heard, and a twin that looks the same but sounds different
            first, second = rng.choice(sounds, size=2, replace=False)
            specs.append(Spec(f"v{index:05d}.{container}", shape, colour, motion, str(first), container))
            if len(specs) < count:
                specs.append(Spec(f"v{index + 1:05d}.{container}", shape, colour, motion, str(second), container))
        elif kind < 0.8:
            specs.append(
                Spec(
                    f"v{index:05d}.{container}",
                    shape,
                    colour,
                    motion,
                    f"noise:{rng.choice(NOISES)}",
                    container,
                )
            )
        else:
            specs.append(Spec(f"v{index:05d}.{container}", shape, colour, motion, "none", container))
    return specs


def captions_for(spec: Spec) -> list[str]:
    words = {
        "colour": spec.colour,
        "shape": spec.shape,
        "motion": MOTIONS[spec.motion],
        "sound": spec.description(),
    }
    templates = TEMPLATES_HEARD if words["sound"] else TEMPLATES_SEEN
    return [template.format(**words) for template in templates]


def make_synthetic(out: Path, count: int = 240, seed: int = 0, progress=None) -> dict:
    """Write `count` videos and captions.jsonl (train / val / test by video, 70 / 15 / 15) into `out`."""
    out = Path(out)
    videos = out / "videos"
    videos.mkdir(parents=True, exist_ok=True)
    specs = plan(count, seed)
    split_of = np.random.default_rng(seed + 1).permutation(len(specs))
    lines, facts = [], []
    for i, spec in enumerate(specs):
        rng = np.random.default_rng([seed, i])
        path = videos / spec.name
        if not path.exists():  # a rerun finishes what an interrupted one started
            tmp = path.with_name(f".{spec.name}.tmp.{spec.container}")
            _write(tmp, _frames(spec, rng), _audio(spec, rng), spec.container)
            tmp.replace(path)
        position = split_of[i] / len(specs)
        split = "train" if position < 0.7 else "val" if position < 0.85 else "test"
        lines += [json.dumps({"video": spec.name, "caption": c, "split": split}) for c in captions_for(spec)]
        facts.append(
            {
                "video": spec.name,
                "shape": spec.shape,
                "colour": spec.colour,
                "motion": spec.motion,
                "sound": spec.sound,
                "split": split,
            }
        )
        if progress:
            progress(i + 1, len(specs))
    (out / "captions.jsonl").write_text("\n".join(lines) + "\n")
    (out / "videos.json").write_text(json.dumps(facts, indent=1))
    return {
        "videos": len(specs),
        "captions": len(lines),
        "folder": str(videos),
        "captions_file": str(out / "captions.jsonl"),
    }
