"""Settings: defaults under the data folder, every variable parsed, bad values named."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.settings import Settings, SettingsError, parse_bytes


def test_defaults_live_under_the_data_dir(tmp_path: Path) -> None:
    settings = Settings.from_env({"CONDENSE_DATA_DIR": str(tmp_path)})
    assert settings.data_dir == tmp_path
    assert settings.database_url == f"sqlite:///{tmp_path}/condense.db"
    assert settings.blob_url == f"file://{tmp_path}/blobs"
    assert settings.broker_url == f"sqlite:///{tmp_path}/queue.db"
    assert settings.work_dir == tmp_path / "work"
    assert settings.max_request_bytes > settings.max_upload_bytes + settings.max_teacher_bytes
    assert settings.pipeline is None and settings.bind == "127.0.0.1:8000" and settings.demo_pool is True


def test_data_dir_default_follows_xdg_then_home(tmp_path: Path) -> None:
    assert Settings.from_env({"XDG_DATA_HOME": str(tmp_path)}).data_dir == tmp_path / "condense"
    home = Settings.from_env({"HOME": str(tmp_path)}).data_dir
    assert home == tmp_path / ".local" / "share" / "condense"
    assert Settings.from_env({"HOME": str(tmp_path / "missing")}).data_dir.name == "condense-data"


def test_every_variable_is_read(tmp_path: Path) -> None:
    env = {
        "CONDENSE_DATA_DIR": str(tmp_path),
        "CONDENSE_DATABASE_URL": "postgresql://u:secret@db:5432/condense",
        "CONDENSE_BLOB_URL": "s3://bucket/prefix",
        "CONDENSE_BROKER_URL": "redis://redis:6379/0",
        "CONDENSE_WORK_DIR": str(tmp_path / "scratch"),
        "CONDENSE_MAX_UPLOAD_BYTES": "64M",
        "CONDENSE_MAX_TEACHER_BYTES": "1GiB",
        "CONDENSE_MAX_POSITIVES_FILES": "500",
        "CONDENSE_LEASE_S": "30",
        "CONDENSE_POLL_S": "0.5",
        "CONDENSE_MAX_ATTEMPTS": "5",
        "CONDENSE_REAPER_INTERVAL_S": "10",
        "CONDENSE_CHECKPOINT_SYNC_S": "0",
        "CONDENSE_UPLOAD_TTL_S": "3600",
        "CONDENSE_WORKERS": "4",
        "CONDENSE_NUM_THREADS": "6",
        "CONDENSE_WEB_WORKERS": "3",
        "CONDENSE_WEB_THREADS": "16",
        "CONDENSE_BIND": "0.0.0.0:9000",
        "CONDENSE_SSE_MAX_S": "60",
        "CONDENSE_SSE_KEEPALIVE_S": "5",
        "CONDENSE_LOG_LEVEL": "debug",
        "CONDENSE_DEMO_POOL": "off",
        "CONDENSE_PIPELINE": "tests.service.fake_pipeline:run_compression",
    }
    settings = Settings.from_env(env)
    assert settings.max_upload_bytes == 64 * 1024**2 and settings.max_teacher_bytes == 1024**3
    assert (settings.workers, settings.web_workers, settings.web_threads) == (4, 3, 16)
    assert settings.num_threads == 6 and Settings.from_env({"CONDENSE_DATA_DIR": str(tmp_path)}).num_threads is None
    assert settings.checkpoint_sync_s == 0 and settings.log_level == "DEBUG"
    assert settings.work_dir == tmp_path / "scratch" and settings.demo_pool is False
    assert "secret" not in str(settings.as_dict()) and "***" in str(settings.as_dict()["database_url"])


def test_bad_values_name_each_variable(tmp_path: Path) -> None:
    env = {
        "CONDENSE_DATA_DIR": str(tmp_path),
        "CONDENSE_LEASE_S": "soon",
        "CONDENSE_MAX_UPLOAD_BYTES": "lots",
        "CONDENSE_BROKER_URL": "amqp://rabbit",
        "CONDENSE_BIND": "8000",
        "CONDENSE_WORKERS": "-1",
        "CONDENSE_PIPELINE": "not a path",
        "CONDENSE_DEMO_POOL": "maybe",
        "CONDENSE_NUM_THREADS": "0",
    }
    with pytest.raises(SettingsError) as caught:
        Settings.from_env(env)
    message = str(caught.value)
    for name in ("CONDENSE_LEASE_S", "CONDENSE_MAX_UPLOAD_BYTES", "CONDENSE_BROKER_URL", "CONDENSE_BIND",
                 "CONDENSE_WORKERS", "CONDENSE_PIPELINE", "CONDENSE_DEMO_POOL", "CONDENSE_NUM_THREADS"):  # fmt: skip
        assert name in message


def test_parse_bytes() -> None:
    assert parse_bytes("10") == 10 and parse_bytes("2k") == 2048 and parse_bytes("1 MiB") == 1024**2
    with pytest.raises(ValueError):
        parse_bytes("1.5G")


def test_docs_settings_table_is_generated_from_the_fields() -> None:
    """docs/settings.md's table is ``python -m service.settings_doc``; every field has its own variable and meaning."""
    from service.setting_types import env_name
    from service.settings_doc import markdown_table, shown_default

    docs = (Path(__file__).resolve().parents[2] / "docs" / "settings.md").read_text(encoding="utf-8")
    assert markdown_table() in docs, "docs/settings.md is stale: paste the output of python -m service.settings_doc"
    fields = Settings.model_fields
    names = [env_name(field) for field in fields.values()]
    assert len(set(names)) == len(names) and all(name.startswith("CONDENSE_") for name in names)
    assert all(field.description for field in fields.values())
    assert shown_default(fields["max_teacher_bytes"]) == "`512M`" and shown_default(fields["demo_pool"]) == "`1`"
    assert shown_default(fields["pipeline"]) == "unset" and shown_default(fields["lease_s"]) == "`60`"


def test_pydantic_errors_are_worded_per_variable(tmp_path: Path) -> None:
    """Limits on the fields give the same one-line reasons as the readers: minimums, sizes, secrets, patterns."""
    env = {
        "CONDENSE_DATA_DIR": str(tmp_path),
        "CONDENSE_POLL_S": "inf",
        "CONDENSE_UPLOAD_QUOTA_BYTES": "0",
        "CONDENSE_SECRET_KEY": "too-short-key",
        "CONDENSE_PIPELINE": "1a:b",
        "CONDENSE_LOG_LEVEL": "trace",
        "CONDENSE_DATABASE_URL": "mysql://user:hunter2@db/condense",
    }
    with pytest.raises(SettingsError) as caught:
        Settings.from_env(env)
    assert str(caught.value).split("; ") == [
        "CONDENSE_DATABASE_URL='mysql://user:***@db/condense': expected a URL starting with sqlite:, "
        "sqlite+pysqlite:, postgresql:, postgres:, postgresql+psycopg:",
        "CONDENSE_POLL_S='inf': must be a finite number >= 0.05",
        "CONDENSE_UPLOAD_QUOTA_BYTES='0': must be at least 1 byte",
        "CONDENSE_LOG_LEVEL='trace': expected one of DEBUG, INFO, WARNING, ERROR",
        "CONDENSE_SECRET_KEY: must be at least 32 characters (got 13)",
        "CONDENSE_PIPELINE='1a:b': expected module.path:function (tests only)",
    ]
    assert caught.value.__cause__ is None and caught.value.__context__ is None  # pydantic's error holds the key


def test_the_session_key_comes_from_a_file(tmp_path: Path) -> None:
    """CONDENSE_SECRET_KEY_FILE: a mounted secret is read once; an unusable file or a second source is an error."""
    key_file = tmp_path / "mounted" / "CONDENSE_SECRET_KEY"
    key_file.parent.mkdir()
    key_file.write_text("k" * 48 + "\n")
    settings = Settings.from_env({"CONDENSE_DATA_DIR": str(tmp_path), "CONDENSE_SECRET_KEY_FILE": str(key_file)})
    assert settings.session_secret() == "k" * 48 and settings.session_key_file == key_file
    assert not (tmp_path / "secret_key").exists() and "k" * 48 not in str(settings.as_dict())
    empty, short = tmp_path / "empty", tmp_path / "short"
    empty.write_text("\n")
    short.write_text("s" * 31)
    cases = {
        str(tmp_path / "missing"): "No such file or directory",
        str(tmp_path): "Is a directory",
        str(empty): "holds 0 characters",
        str(short): "holds 31 characters",
    }
    for path, reason in cases.items():
        with pytest.raises(SettingsError) as caught:
            Settings.from_env({"CONDENSE_DATA_DIR": str(tmp_path), "CONDENSE_SECRET_KEY_FILE": path})
        assert "CONDENSE_SECRET_KEY_FILE" in str(caught.value) and reason in str(caught.value), caught.value
        assert "s" * 31 not in str(caught.value)  # never the key itself
    both = {"CONDENSE_SECRET_KEY_FILE": str(key_file), "CONDENSE_SECRET_KEY": "x" * 40}
    with pytest.raises(SettingsError, match="CONDENSE_SECRET_KEY and CONDENSE_SECRET_KEY_FILE are both set"):
        Settings.from_env({"CONDENSE_DATA_DIR": str(tmp_path), **both})


def test_forwarded_allow_ips_takes_addresses_networks_or_a_star(tmp_path: Path) -> None:
    def read(value: str) -> str:
        env = {"CONDENSE_DATA_DIR": str(tmp_path), "CONDENSE_FORWARDED_ALLOW_IPS": value}
        return Settings.from_env(env).forwarded_allow_ips

    assert Settings.from_env({"CONDENSE_DATA_DIR": str(tmp_path)}).forwarded_allow_ips == "127.0.0.1,::1"
    assert read(" 10.0.0.0/8, 192.168.4.7 ,fd00::/8") == "10.0.0.0/8,192.168.4.7,fd00::/8"
    assert read("*") == "*"
    for bad in ("proxy.internal", "10.0.0.1/8", "10.0.0.0/8,*", ","):  # 10.0.0.1/8: host bits set
        with pytest.raises(SettingsError, match="CONDENSE_FORWARDED_ALLOW_IPS"):
            read(bad)
