"""`gais-pipe make-synthetic`: a captioned audio-visual video collection made from nothing.

No captioned video set can be downloaded here, so this makes one whose answers are known. Each video
shows one coloured shape with one motion on one background, and has one soundtrack:
- `tone` family: high beeps, a low hum or a rising whistle; `word` family (where espeak-ng is
  installed): a voice saying a word. Captions name these sounds.
- "sound twins": pairs of videos that look the same (same pixels) and differ only in their sound, so
  their captions can only be told apart by listening.
- `noise` family: random noise, drawn per clip (white, pink or brown; level; frequency band;
  continuous or in bursts). No caption ever names it: the audio is there but carries nothing the
  text asks for, the case a gate should learn to shut out.
- `none` family: no audio stream at all.
Every video gets three paraphrased captions. Captions are unique wherever videos differ: the plan
gives each caption-visible combination (a look and its named sound, or a look alone where the sound is
not named) to one video only. There are 135 looks (3 shapes, 5 colours, 3 motions, 3 backgrounds)
and 135 * 7 such combinations, enough for about 400 videos in the default mix; a larger collection
repeats combinations (see `_Looks`). A factor like shape size would add looks but hides the shape from
a linear read-out of random features (area then says less about shape), so there is none. Same seed,
same bytes.

Files written into OUT:
- `videos/`: the clips (mp4 with AAC, mkv with PCM, webm with Opus; 96x96, 2 s, 12 fps).
- `captions.jsonl`: {"video", "caption", "split"} per line, the generic caption format.
- `videos.json`: a list, one item per video, with
  `video` (file name inside videos/), `split` ("train" | "val" | "test"),
  `shape`, `colour`, `motion`, `background` (the visual factors),
  `sound` ("beep" | "hum" | "whistle" | "word:<w>" | "noise:<white|pink|brown>" | "none"),
  `sound_family` ("tone" | "word" | "noise" | "none"),
  `sound_named` (bool: the video's captions name its sound; true exactly for tone and word),
  `has_audio` (bool: the file has an audio stream), `noise` (the noise's parameters, or null),
  `container` ("mp4" | "mkv" | "webm").
- `gate_probe.jsonl`: the gate test of one clip under two captions. For every test-split video whose
  sound is named, two lines {"video", "caption", "split": "test", "names_sound", "sound",
  "sound_family"}: one caption that names the sound (`names_sound` true; also one of its captions in
  captions.jsonl) and the same sentence without the sound clause (`names_sound` false), which describes
  only what is seen. A gate that listens when the text asks for sound opens more under the first.
"""

from __future__ import annotations

import functools
import json
import shutil
import subprocess
import tempfile
import wave
from dataclasses import asdict, dataclass
from pathlib import Path

import av
import numpy as np

SHAPES = ("circle", "square", "triangle")
COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 180, 60),
    "blue": (50, 80, 230),
    "yellow": (230, 210, 40),
    "purple": (150, 50, 190),
}
MOTIONS = {
    "left to right": "moving from left to right",
    "up and down": "bouncing up and down",
    "still": "standing still",
}
HALF = 20  # half-width of the shape in pixels
BACKGROUNDS = {"black": (16, 16, 16), "grey": (105, 105, 105), "white": (225, 225, 225)}
TONES = {"beep": "high beeps", "hum": "a low hum", "whistle": "a rising whistle"}
WORDS = ("hello", "seven", "banana")
NOISES = ("white", "pink", "brown")
SEEN = "a {colour} {shape} {motion} on a {background} background"
TEMPLATES_HEARD = (  # the first is SEEN plus the sound: the gate probe's pair of captions
    SEEN + ", while {sound} plays",
    "{sound} as a {colour} {shape} is {motion} in front of a {background} background",
    "you can hear {sound}; a {shape} in {colour} is {motion} on {background}",
)
TEMPLATES_SEEN = (
    SEEN,
    "a {shape} in {colour}, {motion}, on {background}",
    "footage of a {colour} {shape} {motion} against a {background} background",
)
SIZE, FPS, SECONDS, RATE = 96, 12, 2.0, 16000


@dataclass(frozen=True)
class Noise:
    """One clip's random noise: its spectrum's slope, peak level, band and on/off bursts."""

    colour: str  # "white" | "pink" | "brown"
    level: float  # peak amplitude
    low_hz: float
    high_hz: float
    bursts: tuple[tuple[float, float], ...]  # (start, end) seconds where it sounds; () = all the time


@dataclass(frozen=True)
class Spec:
    name: str
    shape: str
    colour: str
    motion: str
    background: str
    sound: str  # a TONES key, "word:<w>", "noise:<colour>" or "none"
    container: str  # "mp4" | "mkv" | "webm"
    noise: Noise | None = None

    @property
    def look(self) -> tuple[str, str, str, str]:
        return (self.shape, self.colour, self.motion, self.background)

    @property
    def family(self) -> str:
        if self.sound in TONES:
            return "tone"
        if self.sound.startswith("word:"):
            return "word"
        return "noise" if self.sound.startswith("noise:") else "none"

    def description(self) -> str | None:
        if self.family == "tone":
            return TONES[self.sound]
        if self.family == "word":
            return f"a voice saying {self.sound[5:]}"
        return None  # noise and silence are never named


def _shape_mask(shape: str, half: int, cx: int, cy: int) -> np.ndarray:
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    if shape == "circle":
        return (xx - cx) ** 2 + (yy - cy) ** 2 <= half**2
    if shape == "square":
        return (np.abs(xx - cx) <= half) & (np.abs(yy - cy) <= half)
    return (yy - cy <= half) & (yy - cy >= -half) & (np.abs(xx - cx) <= (yy - cy + half) / 2)


def _frames(spec: Spec) -> np.ndarray:
    """The shape's pixels depend on the look only, so sound twins have the same frames."""
    count, half = int(SECONDS * FPS), HALF
    margin = half + 4
    frames = np.empty((count, SIZE, SIZE, 3), np.uint8)
    for i in range(count):
        phase = i / max(count - 1, 1)
        cx = cy = SIZE // 2
        if spec.motion == "left to right":
            cx = int(margin + phase * (SIZE - 2 * margin))
        elif spec.motion == "up and down":
            cy = int(SIZE / 2 + (SIZE / 2 - margin) * np.sin(2 * np.pi * 2 * phase))
        frame = np.broadcast_to(np.array(BACKGROUNDS[spec.background], np.uint8), (SIZE, SIZE, 3)).copy()
        frame[_shape_mask(spec.shape, half, cx, cy)] = COLOURS[spec.colour]
        frames[i] = frame
    return frames


@functools.cache
def _speech(word: str) -> np.ndarray | None:
    """espeak-ng's voice saying `word` at RATE, made once per word and process."""
    if shutil.which("espeak-ng") is None:
        return None
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "word.wav"
        subprocess.run(["espeak-ng", "-w", str(path), word], check=True, capture_output=True)
        with wave.open(str(path)) as handle:
            rate = handle.getframerate()
            data = np.frombuffer(handle.readframes(handle.getnframes()), np.int16)
    samples = data.astype(np.float32) / 32768
    times = np.arange(0, len(samples) * RATE / rate) * rate / RATE
    speech = np.interp(times, np.arange(len(samples)), samples).astype(np.float32)
    speech.flags.writeable = False  # shared by every call through the cache
    return speech


def draw_noise(rng: np.random.Generator) -> Noise:
    """Random per clip, so that no property of the noise could stand for a caption word."""
    low = float(rng.choice([0.0, rng.uniform(100, 2000)]))
    high = float(min(RATE / 2, low + rng.uniform(800, 8000)))
    bursts: tuple[tuple[float, float], ...] = ()
    if rng.random() < 0.5:
        edges = np.sort(rng.uniform(0, SECONDS, 2 * int(rng.integers(1, 4))))
        bursts = tuple((round(float(a), 3), round(float(b), 3)) for a, b in edges.reshape(-1, 2))
    return Noise(
        str(rng.choice(NOISES)), round(float(rng.uniform(0.05, 0.5)), 3), round(low, 1), round(high, 1), bursts
    )


def _noise(noise: Noise, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(int(SECONDS * RATE)) / RATE
    spectrum = np.fft.rfft(rng.standard_normal(len(t)))
    hz = np.fft.rfftfreq(len(t), 1 / RATE)
    slope = {"white": 1.0, "pink": 1 / np.sqrt(np.maximum(hz, 20.0)), "brown": 1 / np.maximum(hz, 20.0)}
    shaped = spectrum * slope[noise.colour] * ((hz >= noise.low_hz) & (hz <= noise.high_hz))
    track = np.fft.irfft(shaped, n=len(t))
    if noise.bursts:
        track = track * np.any([(t >= a) & (t < b) for a, b in noise.bursts], axis=0)
    return (noise.level * track / (np.abs(track).max() + 1e-9)).astype(np.float32)


def _audio(spec: Spec, rng: np.random.Generator) -> np.ndarray | None:
    t = np.arange(int(SECONDS * RATE)) / RATE
    if spec.sound == "beep":
        return 0.4 * np.sin(2 * np.pi * 1500 * t) * ((t * 4) % 1 < 0.4)
    if spec.sound == "hum":
        return 0.5 * np.sin(2 * np.pi * 120 * t)
    if spec.sound == "whistle":
        return 0.4 * np.sin(2 * np.pi * (400 * t + 300 * t**2))
    if spec.noise is not None:
        return _noise(spec.noise, rng)
    if spec.family == "word":
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


def heard_sounds() -> list[str]:
    """The sounds captions name: tones, and spoken words where espeak-ng can say them."""
    return [*TONES, *(f"word:{w}" for w in WORDS)] if shutil.which("espeak-ng") else list(TONES)


class _Looks:
    """Hands out looks so that no caption-visible combination (look, named sound or None) repeats.

    Looks come in a seeded random order; each request takes the next look whose combinations are all
    still free. Only when every look is spent for a request (a collection larger than the factors
    allow) does a combination repeat, and then videos that share captions are identical in every
    named factor.
    """

    def __init__(self, rng: np.random.Generator):
        looks = [(s, c, m, b) for s in SHAPES for c in COLOURS for m in MOTIONS for b in BACKGROUNDS]
        self.order = [looks[i] for i in rng.permutation(len(looks))]
        self.rng, self.next, self.used = rng, 0, set()

    def take(self, named: list[str | None]) -> tuple[str, ...]:
        for step in range(len(self.order)):
            look = self.order[(self.next + step) % len(self.order)]
            if not any((look, n) in self.used for n in named):
                self.next = (self.next + step + 1) % len(self.order)
                break
        else:
            look = self.order[int(self.rng.integers(len(self.order)))]
        self.used.update((look, n) for n in named)
        return look


def plan(count: int, seed: int) -> list[Spec]:
    """Which videos to make: about 2/3 heard in sound twins, 1/5 noise, the rest without audio."""
    rng = np.random.default_rng(seed)
    sounds, looks = heard_sounds(), _Looks(rng)
    specs: list[Spec] = []
    while len(specs) < count:
        kind, container = rng.random(), str(rng.choice(["mp4", "mp4", "mp4", "mkv", "webm"]))
        if kind < 0.5:  # heard, and a twin that looks the same but sounds different
            group = [str(s) for s in rng.choice(sounds, size=min(2, count - len(specs)), replace=False)]
            named = group
        elif kind < 0.8:
            group, named = ["noise"], [None]
        else:
            group, named = ["none"], [None]
        look = looks.take(named)
        for sound in group:
            noise = draw_noise(rng) if sound == "noise" else None
            if noise is not None:
                sound = f"noise:{noise.colour}"
            specs.append(Spec(f"v{len(specs):05d}.{container}", *look, sound, container, noise))
    return specs


def _words(spec: Spec) -> dict:
    return {
        "colour": spec.colour,
        "shape": spec.shape,
        "motion": MOTIONS[spec.motion],
        "background": spec.background,
        "sound": spec.description(),
    }


def captions_for(spec: Spec) -> list[str]:
    words = _words(spec)
    templates = TEMPLATES_HEARD if words["sound"] else TEMPLATES_SEEN
    return [template.format(**words) for template in templates]


def gate_probe_lines(spec: Spec, split: str) -> list[dict]:
    """The same clip under a caption that names its sound and one that describes only what is seen."""
    if spec.description() is None or split != "test":
        return []
    words = _words(spec)
    common = {"video": spec.name, "split": split, "sound": spec.sound, "sound_family": spec.family}
    return [
        {**common, "caption": TEMPLATES_HEARD[0].format(**words), "names_sound": True},
        {**common, "caption": SEEN.format(**words), "names_sound": False},
    ]


def facts_for(spec: Spec, split: str) -> dict:
    """One videos.json item (fields in the module docstring)."""
    return {
        "video": spec.name,
        "shape": spec.shape,
        "colour": spec.colour,
        "motion": spec.motion,
        "background": spec.background,
        "sound": spec.sound,
        "sound_family": spec.family,
        "sound_named": spec.description() is not None,
        "has_audio": spec.family != "none",
        "noise": asdict(spec.noise) if spec.noise else None,
        "container": spec.container,
        "split": split,
    }


def splits_for(count: int, seed: int) -> list[str]:
    """train / val / test by video, 70 / 15 / 15, in a seeded random order."""
    position = np.random.default_rng(seed + 1).permutation(count) / max(count, 1)
    return ["train" if p < 0.7 else "val" if p < 0.85 else "test" for p in position]


def _make_video(videos: Path, spec: Spec, rng: np.random.Generator) -> None:
    path = videos / spec.name
    if not path.exists():  # a rerun finishes what an interrupted one started
        tmp = path.with_name(f".{spec.name}.tmp.{spec.container}")
        _write(tmp, _frames(spec), _audio(spec, rng), spec.container)
        tmp.replace(path)


def make_synthetic(out: Path, count: int = 240, seed: int = 0, progress=None) -> dict:
    """Write `count` videos, captions.jsonl, videos.json and gate_probe.jsonl into `out`."""
    out = Path(out)
    videos = out / "videos"
    videos.mkdir(parents=True, exist_ok=True)
    specs = plan(count, seed)
    lines, facts, probes = [], [], []
    for i, (spec, split) in enumerate(zip(specs, splits_for(len(specs), seed))):
        _make_video(videos, spec, np.random.default_rng([seed, i]))
        lines += [json.dumps({"video": spec.name, "caption": c, "split": split}) for c in captions_for(spec)]
        facts.append(facts_for(spec, split))
        probes += [json.dumps(line) for line in gate_probe_lines(spec, split)]
        if progress:
            progress(i + 1, len(specs))
    (out / "captions.jsonl").write_text("\n".join(lines) + "\n")
    (out / "videos.json").write_text(json.dumps(facts, indent=1))
    (out / "gate_probe.jsonl").write_text("".join(p + "\n" for p in probes))
    return {
        "videos": len(specs),
        "captions": len(lines),
        "folder": str(videos),
        "captions_file": str(out / "captions.jsonl"),
        "videos_file": str(out / "videos.json"),
        "gate_probe_file": str(out / "gate_probe.jsonl"),
    }
