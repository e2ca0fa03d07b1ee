"""Service settings: YAML per profile, MUSICGEN_* overrides, errors that name key/value/range."""

import json

import pytest
from typer.testing import CliRunner

from musicgen_edu.cli import app
from musicgen_edu.errors import ConfigError
from musicgen_edu.settings import Settings, load_settings, parse_api_keys

KEYS = "adminkey-123:admin,userkey-456:user:lab1,viewkey-789:viewer:lab1"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    """No MUSICGEN_* from the machine leaks into these tests."""
    import os

    for name in [k for k in os.environ if k.startswith("MUSICGEN_")]:
        monkeypatch.delenv(name)


def test_development_profile_reads_the_repository_file():
    s = load_settings()
    assert s.env == "development" and s.default_model == "edu-tiny" and not s.auth_enabled
    assert Settings.model_fields["default_model"].default == "edu-tiny"   # without the file too
    assert "http://localhost:8888" in s.cors_origins      # from configs/development.yaml
    assert s.log_json is False                             # the file's value, not the default


def test_environment_beats_file_and_arguments_beat_environment(monkeypatch):
    monkeypatch.setenv("MUSICGEN_API_PORT", "9100")
    monkeypatch.setenv("MUSICGEN_MODELS", "edu-tiny, debug-stereo")
    s = load_settings()
    assert s.api_port == 9100 and s.models == ["edu-tiny", "debug-stereo"]
    assert load_settings(api_port=9200).api_port == 9200


def test_bad_value_names_key_value_source_and_range(monkeypatch):
    monkeypatch.setenv("MUSICGEN_API_PORT", "70000")
    with pytest.raises(ConfigError) as err:
        load_settings()
    msg = str(err.value)
    assert "api_port='70000'" in msg and "MUSICGEN_API_PORT" in msg and "[1, 65535]" in msg


def test_literal_choices_are_listed(monkeypatch):
    monkeypatch.setenv("MUSICGEN_LOG_LEVEL", "loud")
    with pytest.raises(ConfigError, match=r"log_level='loud'.*\['debug', 'info', 'warning', 'error'\]"):
        load_settings()


def test_misspelt_environment_variable_fails_others_are_left_alone(monkeypatch):
    monkeypatch.setenv("MUSICGEN_API_PROT", "8000")
    with pytest.raises(ConfigError, match=r"MUSICGEN_API_PROT \(did you mean MUSICGEN_API_PORT\?\)"):
        load_settings()
    monkeypatch.delenv("MUSICGEN_API_PROT")
    monkeypatch.setenv("MUSICGEN_REQUIRE_BROWSER", "1")        # a test knob, not a setting
    assert load_settings().api_port == 8000


def test_unknown_yaml_key_fails(tmp_path, monkeypatch):
    (tmp_path / "development.yaml").write_text("api_port: 8001\ntemprature: 1\n")
    monkeypatch.setenv("MUSICGEN_CONFIG_DIR", str(tmp_path))
    with pytest.raises(ConfigError, match=r"unknown setting 'temprature' \(in .*development.yaml\)"):
        load_settings()


def test_config_file_variable_and_bad_values_in_file(tmp_path, monkeypatch):
    path = tmp_path / "lab.yaml"
    path.write_text("workers: 99\n")
    monkeypatch.setenv("MUSICGEN_CONFIG_FILE", str(path))
    with pytest.raises(ConfigError, match=r"workers=99 \(from .*lab.yaml\).*\[0, 16\]"):
        load_settings()
    monkeypatch.setenv("MUSICGEN_CONFIG_FILE", str(tmp_path / "missing.yaml"))
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings()


def test_unknown_profile_fails():
    with pytest.raises(ConfigError, match="'staging'.*development.*production"):
        load_settings("staging")


def test_production_requires_keys_and_refuses_auth_off(monkeypatch):
    with pytest.raises(ConfigError, match="no API keys"):
        load_settings("production")
    monkeypatch.setenv("MUSICGEN_API_KEYS", KEYS)
    s = load_settings("production")
    assert s.auth_enabled and [k.role for k in s.keys()] == ["admin", "user", "viewer"]
    with pytest.raises(ConfigError, match="only allowed in the development profile"):
        load_settings("production", auth_enabled=False)


def test_one_request_must_fit_in_one_batch():
    with pytest.raises(ConfigError, match="max_prompts=8 is larger than max_batch_size=4"):
        load_settings(max_batch_size=4)


def test_default_model_must_be_offered():
    with pytest.raises(ConfigError, match="default_model='debug-stereo' is not in models"):
        load_settings(models=["debug"], default_model="debug-stereo")


def test_api_keys_parse_and_reject():
    keys = parse_api_keys("adminkey-123:admin\n# a comment\nuserkey-456:user:lab1")
    assert [(k.role, k.owner) for k in keys][1] == ("user", "lab1")
    assert keys[0].owner.startswith("key-") and "adminkey" not in keys[0].owner
    with pytest.raises(ConfigError, match="must be a role.*viewer") as err:
        parse_api_keys("admin:Sup3rS3cretKey")                  # swapped: the key is not echoed
    assert "Sup3rS3cretKey" not in str(err.value)
    with pytest.raises(ConfigError, match="at least 8"):
        parse_api_keys("short:user")
    with pytest.raises(ConfigError, match="not 'key:role'"):
        parse_api_keys("justakey")
    with pytest.raises(ConfigError, match="twice"):
        parse_api_keys("abcdefgh:user,abcdefgh:admin")


def test_keys_file(tmp_path):
    path = tmp_path / "keys.txt"
    path.write_text("filekey-0001:admin:ops\n")
    s = load_settings(auth_enabled=True, api_keys_file=path)
    assert [(k.key, k.owner) for k in s.keys()] == [("filekey-0001", "ops")]
    with pytest.raises(ConfigError, match="cannot be read"):
        load_settings(auth_enabled=True, api_keys_file=tmp_path / "nope.txt")


def test_secrets_are_masked():
    s = load_settings(auth_enabled=True, api_keys=KEYS)
    shown = json.dumps(s.public())
    assert "adminkey-123" not in shown and "userkey-456" not in shown and "3 key(s)" in shown
    assert "adminkey-123" not in repr(s)


def test_every_field_has_a_comment_in_the_source():
    import inspect

    import musicgen_edu.settings as module

    source = inspect.getsource(module.Settings)
    for name in Settings.model_fields:
        line = next(row for row in source.splitlines() if row.strip().startswith(f"{name}:"))
        assert "#" in line, f"setting {name} has no comment"


def test_cli_config_show(monkeypatch):
    monkeypatch.setenv("MUSICGEN_API_KEYS", KEYS)
    result = CliRunner().invoke(app, ["config", "show", "--env", "production", "--json"])
    assert result.exit_code == 0, result.output
    shown = json.loads(result.output)
    assert shown["env"] == "production" and shown["auth_enabled"] is True
    assert "adminkey-123" not in result.output
    monkeypatch.setenv("MUSICGEN_API_PORT", "abc")
    result = CliRunner().invoke(app, ["config", "show"])
    assert result.exit_code == 2 and "api_port" in result.output


def test_cli_serve_refuses_bad_settings_before_starting(monkeypatch):
    monkeypatch.setenv("MUSICGEN_API_PORT", "not-a-port")
    result = CliRunner().invoke(app, ["serve"])
    assert result.exit_code == 2 and "api_port='not-a-port'" in result.output
    monkeypatch.delenv("MUSICGEN_API_PORT")
    result = CliRunner().invoke(app, ["serve", "--env", "production"])
    assert result.exit_code == 2 and "no API keys" in result.output


def test_production_refuses_any_origin(monkeypatch):
    monkeypatch.setenv("MUSICGEN_API_KEYS", KEYS)
    with pytest.raises(ConfigError, match=r"cors_origins='\*' is not allowed in production"):
        load_settings("production", cors_origins=["*"])
    assert load_settings("production", cors_origins=["https://lab.example"]).cors_origins
