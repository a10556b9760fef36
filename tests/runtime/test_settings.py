"""Settings come from NANOLENS_* variables; a bad value names the variable."""

import pytest

from nanolens_runtime.settings import InferenceSettings, ServerSettings, StorageSettings, describe, from_env


def test_environment_overrides_defaults():
    settings = from_env(ServerSettings, {"NANOLENS_GRPC_PORT": "6000", "NANOLENS_GRACE_SECONDS": "2.5"})
    assert (settings.grpc_port, settings.grace_seconds, settings.max_message_mb) == (6000, 2.5, 64)


@pytest.mark.parametrize("value, expected", [("true", True), ("0", False), ("YES", True), ("off", False)])
def test_booleans(value, expected):
    assert from_env(StorageSettings, {"NANOLENS_S3_SECURE": value}).s3_secure is expected


@pytest.mark.parametrize("env, value", [("NANOLENS_GRPC_PORT", "fifty"), ("NANOLENS_S3_SECURE", "maybe")])
def test_bad_values_name_the_variable(env, value):
    cls = ServerSettings if "PORT" in env else StorageSettings
    with pytest.raises(ValueError, match=env):
        from_env(cls, {env: value})


def test_every_setting_is_documented_and_secrets_are_not_printed():
    for cls in (ServerSettings, StorageSettings, InferenceSettings):
        for env, _default, doc in describe(cls):
            assert env.startswith("NANOLENS_") and doc
    assert "hunter2" not in repr(StorageSettings(s3_secret_key="hunter2"))
    from nanolens_gateway.settings import GatewaySettings

    assert "hunter2" not in repr(GatewaySettings(tokens="hunter2"))
