"""Where the client finds the API and its token: arguments, environment, the CLI's profile
file (in the CLI's order), and tokens never shown."""

from __future__ import annotations

import pytest

import kiln
from kiln._config import resolve


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    for name in ("KILN_API_URL", "KILN_TOKEN", "KILN_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    return tmp_path


def write_profiles(base, text: str):
    path = base / "kiln" / "config.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_defaults_without_anything(clean_env):
    r = resolve(None, None, None, None)
    assert (r.url, r.token) == ("http://127.0.0.1:8080", None)


def test_the_cli_profile_file_is_read(clean_env):
    write_profiles(
        clean_env,
        '[profiles.default]\napi_url = "http://kiln.example:9000/"\ntoken = "kiln_default"\n'
        '[profiles.prod]\napi_url = "https://prod.example"\ntoken = "kiln_prod"\n',
    )
    assert resolve(None, None, None, None).url == "http://kiln.example:9000"
    assert resolve(None, None, None, None).token == "kiln_default"
    prod = resolve(None, None, "prod", None)
    assert (prod.url, prod.token) == ("https://prod.example", "kiln_prod")


def test_environment_beats_profile_and_arguments_beat_both(clean_env, monkeypatch):
    write_profiles(clean_env, '[profiles.default]\napi_url = "http://file"\ntoken = "kiln_file"\n')
    monkeypatch.setenv("KILN_API_URL", "http://env")
    monkeypatch.setenv("KILN_TOKEN", "kiln_env")
    r = resolve(None, None, None, None)
    assert (r.url, r.token) == ("http://env", "kiln_env")
    r = resolve("http://arg", "kiln_arg", None, None)
    assert (r.url, r.token) == ("http://arg", "kiln_arg")


def test_profile_from_environment(clean_env, monkeypatch):
    write_profiles(clean_env, '[profiles.staging]\napi_url = "http://staging"\n')
    monkeypatch.setenv("KILN_PROFILE", "staging")
    assert resolve(None, None, None, None).url == "http://staging"


def test_a_missing_profile_or_file_is_a_clear_error(clean_env, tmp_path):
    write_profiles(clean_env, '[profiles.default]\napi_url = "http://x"\n')
    with pytest.raises(kiln.KilnError) as err:
        resolve(None, None, "nope", None)
    assert err.value.code == "invalid_config" and "profile `nope` not found" in err.value.message
    with pytest.raises(kiln.KilnError) as err:
        resolve(None, None, None, tmp_path / "absent.toml")
    assert "does not exist" in err.value.message
    bad = tmp_path / "bad.toml"
    bad.write_text("profiles = [")
    with pytest.raises(kiln.KilnError) as err:
        resolve(None, None, None, bad)
    assert "not a valid Kiln config" in err.value.message


def test_the_token_is_never_shown(clean_env):
    client = kiln.Client("http://127.0.0.1:1", "kiln_secret_value")
    assert "kiln_secret_value" not in repr(client)
    assert "kiln_secret_value" not in repr(resolve("http://x", "kiln_secret_value", None, None))


def test_an_unreachable_api_is_a_kiln_error(clean_env):
    with kiln.Client("http://127.0.0.1:1", "kiln_x", timeout=5) as client:
        with pytest.raises(kiln.KilnError) as err:
            client.datasets.list()
    assert err.value.code == "connection_error"
    assert err.value.status is None
    assert "cannot reach the Kiln API at http://127.0.0.1:1" in str(err.value)


def test_validation_errors_show_every_field():
    err = kiln.KilnError(
        "validation_failed",
        "the job spec is invalid",
        status=422,
        details={"fields": {"target": "no column `x`", "hyperparameters.epochs": "must be ≥ 1"}},
    )
    text = str(err)
    assert text.splitlines()[0] == "validation_failed (422): the job spec is invalid"
    assert "  hyperparameters.epochs  must be ≥ 1" in text.splitlines()
    assert "  target                  no column `x`" in text.splitlines()
    assert err.fields == {"target": "no column `x`", "hyperparameters.epochs": "must be ≥ 1"}
