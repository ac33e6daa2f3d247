import pytest

from gais_pipe.config import ConfigError, bundled_config_names, differing_keys, load_config, short_hash


def test_bundled_configs_load_with_the_papers_settings():
    assert {"tiny", "paper"} <= set(bundled_config_names())
    paper = load_config("paper")
    assert paper["features"]["frames"] == 12
    assert paper["features"]["clip"] == {"model": "ViT-B-32", "pretrained": "openai", "seed": 0}
    assert paper["features"]["audio"]["encoder"] == "whisper"


def test_overrides_parse_values_as_toml_literals():
    config = load_config("tiny", ["features.frames=8", "features.clip.pretrained=/tmp/x.pt", "runtime.precision=bf16"])
    assert config["features"]["frames"] == 8
    assert config["features"]["clip"]["pretrained"] == "/tmp/x.pt"
    assert config["runtime"]["precision"] == "bf16"


@pytest.mark.parametrize("override", ["features.frame=8", "nosection.x=1", "features.frames", "=3"])
def test_bad_overrides_are_errors_not_no_ops(override):
    with pytest.raises(ConfigError):
        load_config("tiny", [override])


def test_unknown_config_names_the_bundled_ones(tmp_path):
    with pytest.raises(ConfigError, match="tiny"):
        load_config("nope")
    (tmp_path / "mine.toml").write_text("name = 'mine'\n[features]\nframes = 4\n")
    assert load_config(str(tmp_path / "mine.toml"))["features"]["frames"] == 4
    (tmp_path / "bad.toml").write_text("[features\n")
    with pytest.raises(ConfigError, match="bad.toml"):
        load_config(str(tmp_path / "bad.toml"))


def test_hash_is_stable_and_differences_are_named():
    a, b = load_config("tiny"), load_config("tiny", ["features.frames=8"])
    assert short_hash(a) == short_hash(load_config("tiny")) != short_hash(b)
    assert differing_keys(a, b) == ["features.frames"]


def test_named_configs_state_only_their_differences_and_resolve_fully():
    tiny, paper = load_config("tiny"), load_config("paper")
    assert "extends" not in tiny and "base" not in bundled_config_names()
    # both carry every key of the base, with their own values over it
    assert set(differing_keys(tiny, paper)) == {
        "name",
        "features.clip.model",
        "features.clip.pretrained",
        "features.audio.encoder",
        "features.audio.model",
        "features.audio.pool",
        "runtime.batch_videos",
        "runtime.shard_videos",
    }


def test_user_config_extends_a_bundled_or_a_relative_one(tmp_path):
    (tmp_path / "mine.toml").write_text('extends = "paper"\nname = "mine"\n[train]\nepochs = 3\n')
    mine = load_config(str(tmp_path / "mine.toml"))
    assert mine["train"]["epochs"] == 3 and mine["features"]["clip"]["model"] == "ViT-B-32"
    (tmp_path / "child.toml").write_text('extends = "mine.toml"\n[features]\nframes = 6\n')
    child = load_config(str(tmp_path / "child.toml"))
    assert child["features"]["frames"] == 6 and child["train"]["epochs"] == 3 and child["name"] == "mine"


def test_extending_with_an_unknown_key_or_a_cycle_is_an_error(tmp_path):
    (tmp_path / "typo.toml").write_text('extends = "tiny"\n[train]\nepoch = 3\n')
    with pytest.raises(ConfigError, match="train.epoch"):
        load_config(str(tmp_path / "typo.toml"))
    (tmp_path / "a.toml").write_text('extends = "b.toml"\n')
    (tmp_path / "b.toml").write_text('extends = "a.toml"\n')
    with pytest.raises(ConfigError, match="cycle"):
        load_config(str(tmp_path / "a.toml"))
