"""A captioned audio-visual collection designed apart from make-synthetic, to check that the defaults
generalise beyond the generator they were tuned on (a trainer's own generator can fool it).

    .venv/bin/python benchmarks/heldout_collection.py OUT [SEED]

420 clips of 3 s at 128 px, 10 fps: textured squares (5 patterns x 4 colours x 2 motions x 3 backgrounds);
300 clips carry one of 6 named sounds (chord, ticking, siren sweep, drone, trill, knocking), so clips of one
look differ only in sound; 120 carry random filtered noise that no caption names. 84 test clips with one
caption each, 42 val, 294 train with two captions each; every caption is unique. Writes OUT/videos/,
OUT/captions.jsonl (generic format) and OUT/videos.json (the fields benchmarks/gate_auc.py reads).
"""

import json
import sys
from pathlib import Path

import av
import numpy as np

from gais_pipe.synthetic import encode_frames, encode_mono_audio

PATTERNS = ["striped", "checkered", "dotted", "ringed", "plain"]
COLOURS = {"purple": (150, 60, 200), "orange": (250, 140, 20), "cyan": (30, 210, 220), "white": (240, 240, 240)}
MOTIONS = ["drifting upward", "sitting still"]
BACKS = {"dark": (15, 15, 15), "grey": (110, 110, 110), "beige": (200, 185, 150)}
SOUNDS = {
    "chord": "a piano chord",
    "clicks": "a ticking clock",
    "sweep": "a siren sweeping up",
    "drone": "a deep drone",
    "trill": "a bird-like trill",
    "knock": "knocking on a door",
}
SIZE, FPS, SEC, RATE = 128, 10, 3.0, 16000


def frames(pattern, colour, motion, back):
    n = int(SEC * FPS)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    out = np.empty((n, SIZE, SIZE, 3), np.uint8)
    for i in range(n):
        dy = int(i * 2) if motion == "drifting upward" else 0
        img = np.empty((SIZE, SIZE, 3), np.uint8)
        img[:] = BACKS[back]
        cy, cx = 64 - dy // 2 + 20, 64
        inside = (abs(yy - cy) < 30) & (abs(xx - cx) < 30)
        y, x = yy + dy, xx
        tex = {
            "striped": (y // 6) % 2 == 0,
            "checkered": ((y // 8) + (x // 8)) % 2 == 0,
            "dotted": ((y % 10 - 5) ** 2 + (x % 10 - 5) ** 2) < 9,
            "ringed": (np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2).astype(int) // 5) % 2 == 0,
            "plain": np.ones_like(inside),
        }[pattern]
        img[inside & tex] = COLOURS[colour]
        img[inside & ~tex] = (np.array(COLOURS[colour]) * 0.4).astype(np.uint8)
        out[i] = img
    return out


def sound(kind, rng):
    t = np.arange(int(SEC * RATE)) / RATE
    if kind == "chord":
        s = sum(np.sin(2 * np.pi * f * t) for f in (261.6, 329.6, 392.0)) / 3 * np.exp(-t % 1.0)
    elif kind == "clicks":
        s = ((t * 4) % 1 < 0.01) * np.sin(2 * np.pi * 2000 * t)
    elif kind == "sweep":
        s = np.sin(2 * np.pi * (400 * t + 300 * t**2))
    elif kind == "drone":
        s = np.sin(2 * np.pi * 70 * t) + 0.5 * np.sin(2 * np.pi * 140 * t)
    elif kind == "trill":
        s = np.sin(2 * np.pi * (3000 + 400 * np.sin(2 * np.pi * 12 * t)) * t) * ((t * 3) % 1 < 0.6)
    elif kind == "knock":
        s = np.sum([np.exp(-(((t - k) * 60) ** 2)) for k in np.arange(0.2, SEC, 0.5)], 0) * np.sin(2 * np.pi * 180 * t)
    elif kind == "noise":
        w = rng.standard_normal(len(t))
        k = rng.integers(1, 60)
        s = (
            np.convolve(w, np.ones(k) / k, "same")
            * rng.uniform(0.3, 1.0)
            * (1 + (rng.random() < 0.5) * np.sin(2 * np.pi * rng.uniform(0.2, 3) * t))
        )
    s = s / (np.abs(s).max() + 1e-9) * rng.uniform(0.3, 0.8)
    return s.astype(np.float32)


def write(path, fr, au):
    with av.open(str(path), "w") as c:
        v = c.add_stream("libx264", rate=FPS)
        v.width = v.height = SIZE
        v.pix_fmt = "yuv420p"
        a = c.add_stream("aac", rate=RATE)
        encode_frames(c, v, fr)
        encode_mono_audio(c, a, au)


T_SEEN = [
    "a {colour} {pattern} square {motion} on a {back} background",
    "on {back}, a {pattern} {colour} block is {motion}",
]
T_HEARD = [
    "a {colour} {pattern} square {motion} on a {back} background, with {sound}",
    "{sound} while a {pattern} {colour} block on {back} is {motion}",
]


def main(out: Path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    visual = [(p, c, m, b) for p in PATTERNS for c in COLOURS for m in MOTIONS for b in BACKS]  # 120
    clips = [(v, s) for v in visual for s in SOUNDS]
    order = rng.permutation(len(clips))[:300]
    plan = [clips[i] for i in order] + [(v, "noise") for v in visual]  # 300 named + 120 noise
    perm = rng.permutation(len(plan))
    plan = [plan[i] for i in perm]
    (out / "videos").mkdir(parents=True, exist_ok=True)
    caps, meta = [], []
    for i, ((p, c, m, b), s) in enumerate(plan):
        name = f"h{i:04d}.mp4"
        write(out / "videos" / name, frames(p, c, m, b), sound(s, rng))
        split = "test" if i < 84 else ("val" if i < 126 else "train")
        fields = dict(colour=c, pattern=p, motion=m, back=b, sound=SOUNDS.get(s, ""))
        temps = T_HEARD if s != "noise" else T_SEEN
        texts = [temps[0].format(**fields)] if split != "train" else [t.format(**fields) for t in temps]
        caps += [{"video": name, "caption": t, "split": split} for t in texts]
        meta.append(
            {
                "video": name,
                "split": split,
                "sound": s,
                "sound_family": "noise" if s == "noise" else "tone",
                "sound_named": s != "noise",
            }
        )
    (out / "captions.jsonl").write_text("".join(json.dumps(x) + "\n" for x in caps))
    (out / "videos.json").write_text(json.dumps(meta))
    texts = [c["caption"] for c in caps]
    print(len(plan), "clips,", len(caps), "captions, unique:", len(set(texts)) == len(texts))


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 7)
