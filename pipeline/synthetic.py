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
With `unnamed="same-kinds"` (`--unnamed same-kinds`) the clips that would carry noise carry instead an
unnamed sound of a named kind (see `draw_variant`): beeps at another pitch and rate, a hum at another
frequency, a faster, wider whistle sweeping up or down, or a voice saying another word
(`OTHER_WORDS`), at the named sounds' loudness and length. No caption names them, so only the caption
tells whether a clip's sound is the one asked for. The named sounds, the twins and the silent clips are
the same as in the default mix; no clip has noise (noise is never named, so it has no named kind).
Every video gets three paraphrased captions, or with `caption_style="aspects"` (`--caption-style aspects`)
five that each tell a different part of it (`ASPECTS_HEARD`, `ASPECTS_SEEN`): a heard clip's sound named in
three of them, not in the other two, and each leaving some factor out, so that captions of one video really
vary (the case of SVSP) and one clip's sound is relevant to some of its captions only (the case of a
text-guided gate). With paraphrases, captions are unique wherever videos differ: the plan
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
  Only in a `same-kinds` collection, also `sound_kind` ("beep" | "hum" | "whistle" | "word" | "none") and
  `sound_params` (the sound's parameters, named or not: `NAMED_PARAMS`, `draw_variant`; null without
  sound); its unnamed clips have `sound` "<tone>:other" or "word:<w>" with `sound_named` false.
- `gate_probe.jsonl`: the gate test of one clip under two captions. For every test-split video whose
  sound is named, two lines {"video", "caption", "split": "test", "names_sound", "sound",
  "sound_family"}: one caption that names the sound (`names_sound` true; also one of its captions in
  captions.jsonl) and the same sentence without the sound clause (`names_sound` false), which describes
  only what is seen. A gate that listens when the text asks for sound opens more under the first.
  In a `same-kinds` collection every test clip with an unnamed sound gets a pair too: its visual
  caption with the clause that names the named sound of its kind (`caption_sound`; for words the named
  word of `probe_sound`), which is not its sound (`names_sound` false on both lines), and without it. Its
  lines also carry `sound_named`, `sound_kind` and `caption_sound` (the sound the caption names, or null).
"""

from __future__ import annotations

import functools
import json
import shutil
import subprocess
import tempfile
import wave
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

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
# Spoken words that no caption names (same-kinds collections): not a caption word, not a named word.
OTHER_WORDS = ("table", "river", "pocket", "thunder", "lemon", "window", "forty", "garden")
# The named tones' parameters, as `_audio` makes them (a whistle sweeps linearly from start to end).
NAMED_PARAMS: dict[str, dict[str, float]] = {
    "beep": {"pitch_hz": 1500.0, "rate_hz": 4.0, "duty": 0.4, "level": 0.4},
    "hum": {"pitch_hz": 120.0, "level": 0.5},
    "whistle": {"start_hz": 400.0, "end_hz": 1600.0, "level": 0.4},
}
WORD_LEVEL = 0.8  # a spoken word's gain, said twice, at 0.2 s and 1.1 s
UNNAMED = ("noise", "same-kinds")  # what the sounds that no caption names are (make-synthetic --unnamed)
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
# `--caption-style aspects`: five captions a video, each telling another part of it, as MSR-VTT's annotators
# and DiDeMo's moments do. A heard clip's sound is named in three and left out of two, so one clip is
# relevant to some of its captions for its sound and not to others; every caption drops some factor.
ASPECTS_HEARD = (
    SEEN + ", while {sound} plays",
    SEEN,
    "{sound}, and a {shape} {motion}",
    "a {colour} {shape} on {background}, with {sound}",
    "a {colour} {shape} {motion}",
)
ASPECTS_SEEN = (
    SEEN,
    "a {shape} in {colour}, {motion}, on {background}",
    "a {colour} {shape} {motion}",
    "a {colour} {shape} on {background}",
    "a {shape} {motion} on a {background} background",
)
CAPTION_STYLES = ("paraphrase", "aspects")  # make-synthetic --caption-style
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
class Variant:
    """One clip's unnamed sound of a named kind: the kind and its drawn parameters (`draw_variant`)."""

    kind: str  # "beep" | "hum" | "whistle" | "word"
    params: tuple[tuple[str, float | str], ...]  # (name, value), as in NAMED_PARAMS; a word: (("word", w), ...)

    def value(self, name: str) -> float:
        return float(dict(self.params)[name])


Look = tuple[str, str, str, str]  # shape, colour, motion, background


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
    variant: Variant | None = None  # an unnamed sound of a named kind ("<tone>:other" or "word:<w>")

    @property
    def look(self) -> Look:
        return (self.shape, self.colour, self.motion, self.background)

    @property
    def family(self) -> str:
        if self.variant is not None:
            return "word" if self.variant.kind == "word" else "tone"
        if self.sound in TONES:
            return "tone"
        if self.sound.startswith("word:"):
            return "word"
        return "noise" if self.sound.startswith("noise:") else "none"

    @property
    def kind(self) -> str:
        """The acoustic kind: a TONES key, "word", "noise" or "none", named or not."""
        if self.variant is not None:
            return self.variant.kind
        return self.sound if self.sound in TONES else self.family

    def description(self) -> str | None:
        if self.variant is not None:
            return None  # the point of a variant: of a named kind, but never named
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


def _either(rng: np.random.Generator, below: tuple[float, float], above: tuple[float, float]) -> float:
    """Log-uniform in one of two ranges, either side of a named parameter (each side half the time)."""
    low, high = below if rng.random() < 0.5 else above
    return float(np.exp(rng.uniform(np.log(low), np.log(high))))


def draw_variant(rng: np.random.Generator, kinds: Sequence[str]) -> Variant:
    """An unnamed sound of a kind drawn from `kinds` (TONES keys, "word"), with parameters drawn per clip
    clear of the named one's (NAMED_PARAMS), so that the log-mel features can tell them apart, and at its
    loudness and length (a whole clip; a word said twice). A whistle sweeps up or down across the named
    band and beyond it, at least twice as fast (1200-1600 Hz a second against 600): a sweep at the named
    speed, falling or shifted, would sound segment by segment like some part of the named one, which no
    per-frame gate could tell apart."""
    sound = str(rng.choice(list(kinds)))
    if sound == "word":
        return Variant("word", (("word", str(rng.choice(OTHER_WORDS))), ("level", WORD_LEVEL)))
    params: dict[str, float] = {}
    if sound == "beep":  # named: 1500 Hz, 4 per second
        params["pitch_hz"] = _either(rng, (700, 1050), (2100, 3000))
        params["rate_hz"] = _either(rng, (2.0, 3.0), (5.5, 7.0))
        params["duty"] = rng.uniform(0.3, 0.5)
    elif sound == "hum":  # named: 120 Hz
        params["pitch_hz"] = _either(rng, (60, 85), (170, 250))
    else:  # whistle; named: rising from 400 to 1600 Hz in the 2 s
        low = rng.uniform(200, 500)
        high = low + rng.uniform(2400, 3200)
        params["start_hz"], params["end_hz"] = (low, high) if rng.random() < 0.5 else (high, low)
    named_level = NAMED_PARAMS[sound]["level"]
    params["level"] = rng.uniform(named_level - 0.05, named_level + 0.05)
    digits = {"duty": 3, "level": 3, "rate_hz": 2}
    return Variant(sound, tuple((k, round(float(v), digits.get(k, 1))) for k, v in params.items()))


def tone(kind: str, params: dict[str, float]) -> np.ndarray:
    """A beep, hum or whistle with the given parameters (NAMED_PARAMS gives the named ones)."""
    t = np.arange(int(SECONDS * RATE)) / RATE
    if kind == "beep":
        carrier = np.sin(2 * np.pi * params["pitch_hz"] * t) * ((t * params["rate_hz"]) % 1 < params["duty"])
    elif kind == "hum":
        carrier = np.sin(2 * np.pi * params["pitch_hz"] * t)
    else:  # the frequency goes linearly from start to end over the clip
        start, end = params["start_hz"], params["end_hz"]
        carrier = np.sin(2 * np.pi * (start * t + (end - start) * t**2 / (2 * SECONDS)))
    return params["level"] * carrier


def _said_twice(word: str, level: float) -> np.ndarray:
    """A voice saying `word` at 0.2 s and 1.1 s; silence where espeak-ng is missing."""
    t = np.arange(int(SECONDS * RATE)) / RATE
    speech = _speech(word)
    track = np.zeros(len(t), np.float32)
    if speech is not None:  # said twice, at 0.2 s and 1.1 s
        for start in (int(0.2 * RATE), int(1.1 * RATE)):
            piece = speech[: len(t) - start]
            track[start : start + len(piece)] += level * piece
    return track


def _audio(spec: Spec, rng: np.random.Generator) -> np.ndarray | None:
    t = np.arange(int(SECONDS * RATE)) / RATE
    if spec.variant is not None:
        if spec.variant.kind == "word":
            return _said_twice(str(dict(spec.variant.params)["word"]), spec.variant.value("level"))
        return tone(spec.variant.kind, {k: float(v) for k, v in spec.variant.params})
    if spec.sound == "beep":
        return 0.4 * np.sin(2 * np.pi * 1500 * t) * ((t * 4) % 1 < 0.4)
    if spec.sound == "hum":
        return 0.5 * np.sin(2 * np.pi * 120 * t)
    if spec.sound == "whistle":
        return 0.4 * np.sin(2 * np.pi * (400 * t + 300 * t**2))
    if spec.noise is not None:
        return _noise(spec.noise, rng)
    if spec.family == "word":
        return _said_twice(spec.sound[5:], WORD_LEVEL)
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
    codecs: dict[str, tuple[Literal["libx264", "libvpx"], Literal["aac", "pcm_s16le", "libopus"]]] = {
        "mp4": ("libx264", "aac"),
        "mkv": ("libx264", "pcm_s16le"),
        "webm": ("libvpx", "libopus"),
    }
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
        if sound is not None and audio is not None:
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
        self.rng, self.next = rng, 0
        self.used: set[tuple[Look, str | None]] = set()

    def take(self, named: Sequence[str | None]) -> Look:
        for step in range(len(self.order)):
            look = self.order[(self.next + step) % len(self.order)]
            if not any((look, n) in self.used for n in named):
                self.next = (self.next + step + 1) % len(self.order)
                break
        else:
            look = self.order[int(self.rng.integers(len(self.order)))]
        self.used.update((look, n) for n in named)
        return look


def check_unnamed(unnamed: str) -> str:
    if unnamed not in UNNAMED:
        raise ValueError(f"unknown kind of unnamed sound {unnamed!r} (choose from: {', '.join(UNNAMED)})")
    return unnamed


def plan(count: int, seed: int, unnamed: str = "noise") -> list[Spec]:
    """Which videos to make: about 2/3 heard in sound twins, 1/5 with a sound no caption names, the rest
    without audio. The sound no caption names is random noise, or with `unnamed="same-kinds"` a variant of a
    named kind (`draw_variant`, the kind drawn uniformly, from its own random stream): the same plan as the
    default's for the same seed (looks, splits, named sounds, containers), but for what the noise clips hear."""
    check_unnamed(unnamed)
    rng = np.random.default_rng(seed)
    sounds, looks = heard_sounds(), _Looks(rng)
    kinds = [*TONES, *(["word"] if any(s.startswith("word:") for s in sounds) else [])]
    others = np.random.default_rng([seed, 0, 1])  # the variants' own draws: the plan's stay as in the default
    specs: list[Spec] = []
    while len(specs) < count:
        kind, container = rng.random(), str(rng.choice(["mp4", "mp4", "mp4", "mkv", "webm"]))
        named: Sequence[str | None]
        if kind < 0.5:  # heard, and a twin that looks the same but sounds different
            group = [str(s) for s in rng.choice(sounds, size=min(2, count - len(specs)), replace=False)]
            named = group
        elif kind < 0.8:
            group, named = [unnamed], [None]
        else:
            group, named = ["none"], [None]
        look = looks.take(named)
        for sound in group:
            noise = draw_noise(rng) if sound in UNNAMED else None  # drawn either way: the same plan otherwise
            variant = draw_variant(others, kinds) if sound == "same-kinds" else None
            if variant is not None:
                noise, word = None, dict(variant.params).get("word")
                sound = f"word:{word}" if word else f"{variant.kind}:other"
            elif noise is not None:
                sound = f"noise:{noise.colour}"
            specs.append(Spec(f"v{len(specs):05d}.{container}", *look, sound, container, noise, variant))
    return specs


def _words(spec: Spec) -> dict:
    return {
        "colour": spec.colour,
        "shape": spec.shape,
        "motion": MOTIONS[spec.motion],
        "background": spec.background,
        "sound": spec.description(),
    }


def captions_for(spec: Spec, style: str = "paraphrase") -> list[str]:
    """The video's captions: three paraphrases of all it shows (and its named sound), or with `style`
    "aspects" five that each tell a part of it (ASPECTS_HEARD, ASPECTS_SEEN)."""
    words = _words(spec)
    templates: tuple[str, ...]
    if style == "aspects":
        templates = ASPECTS_HEARD if words["sound"] else ASPECTS_SEEN
    else:
        templates = TEMPLATES_HEARD if words["sound"] else TEMPLATES_SEEN
    return [template.format(**words) for template in templates]


def check_caption_style(style: str) -> str:
    if style not in CAPTION_STYLES:
        raise ValueError(f"unknown caption style {style!r} (choose from: {', '.join(CAPTION_STYLES)})")
    return style


def probe_sound(spec: Spec) -> str | None:
    """The named sound a gate probe's caption names for this clip: its own where it is named; for an unnamed
    sound of a named kind the named sound of that kind (a tone's namesake; for a word, the named word at
    the same place in WORDS as the word's in OTHER_WORDS, cyclically); else None."""
    if spec.variant is None:
        return spec.sound if spec.description() is not None else None
    if spec.variant.kind != "word":
        return spec.variant.kind
    return f"word:{WORDS[OTHER_WORDS.index(str(dict(spec.variant.params)['word'])) % len(WORDS)]}"


def sound_params(spec: Spec) -> dict | None:
    """The parameters of the clip's sound, named (NAMED_PARAMS) or drawn (`draw_variant`, `draw_noise`)."""
    if spec.variant is not None:
        return dict(spec.variant.params)
    if spec.sound in NAMED_PARAMS:
        return dict(NAMED_PARAMS[spec.sound])
    if spec.family == "word":
        return {"word": spec.sound[5:], "level": WORD_LEVEL}
    return asdict(spec.noise) if spec.noise else None


def gate_probe_lines(spec: Spec, split: str, kinds: bool = False) -> list[dict]:
    """The same clip under a caption that names its sound and one that describes only what is seen. With
    `kinds` (a same-kinds collection) also the clips whose sound is unnamed but of a named kind, under the
    caption naming the named sound of their kind, and every line tells the clip's kind and the caption's
    sound (module docstring)."""
    asked = probe_sound(spec) if kinds else (spec.sound if spec.description() is not None else None)
    if asked is None or split != "test":
        return []
    named = spec.description() is not None
    namesake = Spec(spec.name, *spec.look, asked, spec.container)  # the same look with the named sound
    words = _words(namesake)
    common = {"video": spec.name, "split": split, "sound": spec.sound, "sound_family": spec.family}
    lines = [
        {**common, "caption": TEMPLATES_HEARD[0].format(**words), "names_sound": named},
        {**common, "caption": SEEN.format(**words), "names_sound": False},
    ]
    if kinds:
        for line, caption_sound in zip(lines, (asked, None)):
            line.update(sound_named=named, sound_kind=spec.kind, caption_sound=caption_sound)
    return lines


def facts_for(spec: Spec, split: str, kinds: bool = False) -> dict:
    """One videos.json item (fields in the module docstring; `kinds`: a same-kinds collection's, with
    `sound_kind` and `sound_params`)."""
    extra = {"sound_kind": spec.kind, "sound_params": sound_params(spec)} if kinds else {}
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
        **extra,
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


def make_synthetic(
    out: Path, count: int = 240, seed: int = 0, progress=None, unnamed: str = "noise", caption_style: str = "paraphrase"
) -> dict:
    """Write `count` videos, captions.jsonl, videos.json and gate_probe.jsonl into `out`. `unnamed`: what the
    sounds no caption names are, "noise" (the default) or "same-kinds"; `caption_style`: "paraphrase" (the
    default) or "aspects" (module docstring). The videos do not depend on the caption style."""
    check_caption_style(caption_style)
    specs = plan(count, seed, unnamed)  # checks `unnamed` before anything is written
    kinds = unnamed == "same-kinds"
    out = Path(out)
    videos = out / "videos"
    videos.mkdir(parents=True, exist_ok=True)
    lines, facts, probes = [], [], []
    for i, (spec, split) in enumerate(zip(specs, splits_for(len(specs), seed))):
        _make_video(videos, spec, np.random.default_rng([seed, i]))
        lines += [
            json.dumps({"video": spec.name, "caption": c, "split": split}) for c in captions_for(spec, caption_style)
        ]
        facts.append(facts_for(spec, split, kinds))
        probes += [json.dumps(line) for line in gate_probe_lines(spec, split, kinds)]
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
