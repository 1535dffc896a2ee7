"""Scope: aiflow.storage.settings turns the environment into storage roots and stores: profiles, the local layout, refused s3:// homes, missing variables named, secrets read only when a store is built and never shown."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from aiflow.spec import parse_spec
from aiflow.storage import settings as cfg
from aiflow.storage.landing import LocalLandingZone, S3LandingZone
from aiflow.storage.settings import Settings, SettingsError
from tests.aiflow.tiny import TINY, TRIPS_ROWS, csv_bytes, write_file

ACCESS, SECRET = "AKIDSETTINGSTEST", "s3cr3t-value-never-shown"


def s3_env(**extra: str) -> dict[str, str]:
    env = {
        cfg.PROFILE: "s3",
        cfg.LAKE_URI: "s3://bucket/team/lake",
        cfg.LANDING_URI: "s3://bucket/team/",
        cfg.ARTIFACT_URI: "s3://bucket/team/artifacts",
        cfg.ACCESS_KEY_ID: ACCESS,
        cfg.SECRET_ACCESS_KEY: SECRET,
    }
    return {**env, **extra}


@pytest.fixture
def cwd(tmp_path: Path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


# ------------------------------------------------------------------------------------------- local
def test_local_default_layout_and_stores(cwd: Path, spec):
    settings = Settings.from_env({})
    home = cwd / ".aiflow"
    assert (settings.profile, settings.on_s3) == ("local", False)
    assert (settings.lake_uri, settings.landing_uri, settings.artifact_uri) == (str(home / "lake"), str(home), str(home / "artifacts"))
    assert settings.storage_options() is None
    assert settings.lake().root == str(home / "lake")
    assert settings.artifact_store().root == str(home / "artifacts")
    zone = settings.landing_zone(spec)
    assert isinstance(zone, LocalLandingZone) and zone.uri == str(home / "landing" / "flights")


def test_local_home_from_env_and_flag_on_a_non_demo_spec(cwd: Path):
    tiny = parse_spec(copy.deepcopy(TINY), "tiny")
    from_env = Settings.from_env({cfg.HOME: "elsewhere"})
    assert from_env.lake_uri == str(cwd / "elsewhere" / "lake")
    flag = Settings.from_env({cfg.HOME: "elsewhere"}, home=cwd / "flag")  # --home wins over AIFLOW_HOME
    assert flag.lake_uri == str(cwd / "flag" / "lake")
    write_file(cwd / "flag" / "landing" / "trips", "2013-01-01.csv", csv_bytes(TRIPS_ROWS))
    zone = flag.landing_zone(tiny)
    assert zone.uri == str(cwd / "flag" / "landing" / "trips")
    assert [f.name for f in zone.list()] == ["2013-01-01.csv"]
    assert flag.landing_zone(tiny.side("weather")).uri == str(cwd / "flag" / "landing" / "weather")


@pytest.mark.parametrize(("env", "home", "named"), [({cfg.HOME: "s3://bucket/x"}, None, cfg.HOME), ({}, "s3://bucket/x", "--home")])
def test_an_s3_home_is_refused_with_the_s3_variables_to_set(cwd: Path, env, home, named):
    with pytest.raises(SettingsError) as err:
        Settings.from_env(env, home=home)
    message = str(err.value)
    assert message.startswith(f"{named} must be a local folder, got 's3://bucket/x'")
    assert "AIFLOW_PROFILE=s3" in message and "AIFLOW_LAKE_URI=s3://bucket/x/lake" in message
    assert "AIFLOW_LANDING_URI=s3://bucket/x " in message and "AIFLOW_ARTIFACT_URI=s3://bucket/x/artifacts" in message
    assert list(cwd.iterdir()) == []  # no folder named "s3:"


def test_unknown_profile_is_named():
    with pytest.raises(SettingsError, match="unknown AIFLOW_PROFILE 'gpu'; choose one of local, s3, k8s"):
        Settings.from_env({cfg.PROFILE: "gpu"})


def test_local_profile_refuses_an_s3_landing_zone_in_the_spec(cwd: Path):
    tiny = copy.deepcopy(TINY)
    tiny["landing"]["uri"] = "s3://elsewhere/trips"
    with pytest.raises(SettingsError, match="the local profile reads local folders only; set AIFLOW_PROFILE=s3"):
        Settings.from_env({}).landing_zone(parse_spec(tiny, "tiny"))


# ---------------------------------------------------------------------------------------------- s3
@pytest.mark.parametrize("profile", ["s3", "k8s"])
def test_s3_profile_roots_and_options(profile):
    env = s3_env(**{cfg.PROFILE: profile, cfg.ENDPOINT_URL: "http://127.0.0.1:9", cfg.ALLOW_HTTP: "TRUE"})
    settings = Settings.from_env(env)
    assert (settings.profile, settings.on_s3) == (profile, True)
    assert (settings.lake_uri, settings.landing_uri, settings.artifact_uri) == (
        "s3://bucket/team/lake",
        "s3://bucket/team",
        "s3://bucket/team/artifacts",
    )
    assert settings.storage_options() == {
        "AWS_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": ACCESS,
        "AWS_SECRET_ACCESS_KEY": SECRET,
        "AWS_ENDPOINT_URL": "http://127.0.0.1:9",
        "AWS_ALLOW_HTTP": "true",
        "aws_server_side_encryption": "AES256",  # encryption on by default (AIFLOW_S3_SSE unset)
    }
    lake = settings.lake()
    assert (lake.root, lake.storage_options) == ("s3://bucket/team/lake", settings.storage_options())
    assert settings.artifact_store().root == "s3://bucket/team/artifacts"


def test_landing_uris_resolve_under_the_landing_root_on_a_non_demo_spec(spec):
    settings = Settings.from_env(s3_env(**{cfg.REGION: "eu-west-1"}))
    tiny = parse_spec(copy.deepcopy(TINY), "tiny")
    assert settings.landing_uri_for(spec) == "s3://bucket/team/landing/flights"
    assert settings.landing_uri_for(tiny) == "s3://bucket/team/landing/trips"
    absolute = copy.deepcopy(TINY)
    absolute["landing"]["uri"] = "s3://other-bucket/drop/trips"
    zone = settings.landing_zone(parse_spec(absolute, "tiny"))
    assert isinstance(zone, S3LandingZone)
    assert (zone.bucket, zone.prefix) == ("other-bucket", "drop/trips/")
    assert zone.client.meta.region_name == "eu-west-1"


@pytest.mark.parametrize("missing", [cfg.LAKE_URI, cfg.LANDING_URI, cfg.ARTIFACT_URI])
def test_s3_profile_names_a_missing_uri(missing):
    env = s3_env()
    del env[missing]
    with pytest.raises(SettingsError, match=f"^AIFLOW_PROFILE=s3 needs {missing}: "):
        Settings.from_env(env)


def test_s3_profile_refuses_a_local_uri_and_the_home_flag():
    with pytest.raises(SettingsError, match="AIFLOW_LAKE_URI must be an s3://bucket/prefix URI on the s3 profile, got '/data/lake'"):
        Settings.from_env(s3_env(**{cfg.LAKE_URI: "/data/lake"}))
    with pytest.raises(SettingsError, match="--home is the local profile's folder; AIFLOW_PROFILE=s3 takes its storage from AIFLOW_LAKE_URI"):
        Settings.from_env(s3_env(), home="/tmp/somewhere")


@pytest.mark.parametrize("missing", [[cfg.SECRET_ACCESS_KEY], [cfg.ACCESS_KEY_ID, cfg.SECRET_ACCESS_KEY]])
def test_credentials_are_read_only_when_a_store_is_built_and_named_when_missing(missing):
    env = s3_env()
    for var in missing:
        del env[var]
    settings = Settings.from_env(env)  # no credential needed to know where things are
    assert settings.describe().startswith("profile s3: lake s3://bucket/team/lake")
    for build in (settings.lake, settings.artifact_store, settings.storage_options):
        with pytest.raises(SettingsError) as err:
            build()
        assert str(err.value) == f"AIFLOW_PROFILE=s3 needs the S3 credentials {' and '.join(missing)} in the environment"
        assert ACCESS not in str(err.value) and SECRET not in str(err.value)
    env[cfg.ACCESS_KEY_ID], env[cfg.SECRET_ACCESS_KEY] = ACCESS, "rotated"  # read at build time, not captured before
    assert settings.storage_options()[cfg.SECRET_ACCESS_KEY] == "rotated"


def test_no_secret_in_repr_describe_or_the_stores_reprs():
    settings = Settings.from_env(s3_env(**{cfg.ENDPOINT_URL: "http://127.0.0.1:9"}))
    shown = [repr(settings), str(settings), settings.describe(), repr(settings.lake()), repr(settings.artifact_store())]
    for text in shown:
        assert SECRET not in text and ACCESS not in text
    assert "s3://bucket/team/lake" in repr(settings) and "endpoint http://127.0.0.1:9" in settings.describe()


@pytest.mark.parametrize(("value", "expected"), [(None, False), ("", False), ("false", False), ("0", False), ("true", True), ("1", True), (" Yes ", True)])
def test_allow_http(value, expected):
    assert cfg.allow_http(value) is expected
