"""The command line as a user meets it: exit codes, one-line errors, the summary and `info`."""

import json

import pytest
from media import make_video
from typer.testing import CliRunner

from gais_pipe.cli import app

runner = CliRunner()
FAST = ["--set", "runtime.decode_workers=0", "--quiet"]


def test_extract_then_info(tmp_path):
    make_video(tmp_path / "v/a clip.mp4", seconds=0.5)
    (tmp_path / "v/broken.mp4").write_text("no")
    result = runner.invoke(app, ["extract", str(tmp_path / "v"), "-w", str(tmp_path / "w"), *FAST])
    assert result.exit_code == 0, result.output
    assert "failed broken.mp4: probe: not a readable video" in result.output
    strict = runner.invoke(app, ["extract", str(tmp_path / "v"), "-w", str(tmp_path / "w"), "--strict", *FAST])
    assert strict.exit_code == 1
    info = runner.invoke(app, ["info", str(tmp_path / "w")])
    assert info.exit_code == 0, info.output
    for expected in ("gais-tiny", "logmel", "videos", "failures"):
        assert expected in info.output
    record = json.loads((tmp_path / "w/workdir.json").read_text())
    assert f"sha256 {record['clip']['sha256'][:12]}, {record['identity']['embed_dim']}-d" in info.output
    assert "{" not in info.output  # no template left unfilled
    assert "broken.mp4" in info.output


@pytest.mark.parametrize(
    "args,message",
    [
        (["extract", "{tmp}/nowhere"], "nowhere: no such folder or list file"),
        (["extract", "{tmp}", "--set", "features.nope=1"], "unknown key"),
        (["extract", "{tmp}", "--config", "nope"], "unknown config"),
        (
            ["extract", "{tmp}", "--set", "features.clip.pretrained='{tmp}/none.safetensors'"],
            "checkpoint file not found",
        ),
        (["info", "{tmp}"], "not a gais-pipe workdir"),
    ],
)
def test_bad_input_is_one_clear_line(tmp_path, args, message):
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    if args[0] == "extract":
        args += ["-w", str(tmp_path / "w"), *FAST]
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output


def test_describing_a_folder_without_a_workdir_record_is_a_workdir_error(tmp_path):
    """`info` checks for workdir.json first; `describe` itself says the same instead of an AttributeError."""
    from rich.console import Console

    from gais_pipe.workdir import WorkdirError
    from gais_pipe.workdir_info import describe

    with pytest.raises(WorkdirError, match="not a gais-pipe workdir"):
        describe(tmp_path, Console(quiet=True))


def test_later_runs_reuse_the_workdirs_config(tmp_path):
    make_video(tmp_path / "v/a.mp4", seconds=0.5)
    first = runner.invoke(
        app, ["extract", str(tmp_path / "v"), "-w", str(tmp_path / "w"), "--set", "features.frames=4", *FAST]
    )
    assert first.exit_code == 0, first.output
    make_video(tmp_path / "v/b.mp4", seconds=0.5)
    second = runner.invoke(app, ["extract", str(tmp_path / "v"), "-w", str(tmp_path / "w"), *FAST])
    assert second.exit_code == 0, second.output  # no --config: the workdir's own (frames=4), not tiny's 12
    mismatch = runner.invoke(
        app, ["extract", str(tmp_path / "v"), "-w", str(tmp_path / "w"), "--config", "tiny", *FAST]
    )
    assert mismatch.exit_code == 2 and "features.frames" in mismatch.output
