"""The federation file is validated on load, reporting every problem at once."""

from __future__ import annotations

from pathlib import Path

import pytest

from headcount import config
from headcount.errors import ConfigError, InvalidRequest
from headcount.federation import InitOptions, init_federation


@pytest.fixture(scope="module")
def fed_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("cfg") / "fed"
    init_federation(d, InitOptions(paillier_bits=1024, insecure_test_keys=True))
    return d


def test_init_writes_a_config_that_loads(fed_dir: Path) -> None:
    cfg = config.load(fed_dir / "federation.toml")
    assert cfg.party_names == ("education", "health", "justice", "immigration")
    assert cfg.party("education").tls.cert.is_file()
    assert "absence_rate" not in cfg.party("education").approved_attributes
    with pytest.raises(ConfigError, match="no party 'police'"):
        cfg.party("police")


def test_init_refuses_to_overwrite(fed_dir: Path) -> None:
    with pytest.raises(InvalidRequest, match="already exists"):
        init_federation(fed_dir)


def test_every_problem_is_reported_at_once(fed_dir: Path, tmp_path: Path) -> None:
    text = (fed_dir / "federation.toml").read_text()
    text = text.replace("rounding_base = 5", "rounding_base = 0")
    text = text.replace("suppress_below = 10", "suppress_below = 0")
    text = text.replace("epsilon_per_period = 1.0", "epsilon_per_period = -1")
    bad = tmp_path / "federation.toml"
    bad.write_text(text)
    for sub in ("ca", "certs", "linkage-schema.toml"):
        (tmp_path / sub).symlink_to(fed_dir / sub)
    with pytest.raises(ConfigError) as info:
        config.load(bad)
    msg = str(info.value)
    assert "3 problem(s)" in msg
    assert "rounding_base" in msg and "suppress_below" in msg and "epsilon_per_period" in msg


def test_test_keys_need_an_explicit_flag(fed_dir: Path, tmp_path: Path) -> None:
    text = (
        (fed_dir / "federation.toml")
        .read_text()
        .replace("insecure_test_keys = true", "insecure_test_keys = false")
    )
    (tmp_path / "federation.toml").write_text(text)
    for sub in ("ca", "certs", "linkage-schema.toml"):
        (tmp_path / sub).symlink_to(fed_dir / sub)
    with pytest.raises(ConfigError, match="insecure_test_keys"):
        config.load(tmp_path / "federation.toml")


def test_missing_files_and_bad_toml(fed_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "federation.toml").write_text((fed_dir / "federation.toml").read_text())
    with pytest.raises(ConfigError, match="file not found"):
        config.load(tmp_path / "federation.toml")
    (tmp_path / "broken.toml").write_text("name = [unclosed")
    with pytest.raises(ConfigError, match="not valid TOML"):
        config.load(tmp_path / "broken.toml")
    with pytest.raises(ConfigError, match="federation init"):
        config.load(tmp_path / "absent.toml")


def test_a_machine_needs_only_its_own_private_key(fed_dir: Path) -> None:
    """A department's node loads the config and starts with the other parties'
    private keys absent; the process missing its own key gets a clear error."""
    from headcount import tls

    cfg = config.load(fed_dir / "federation.toml")
    others = [p.tls.key for p in cfg.parties if p.name != "education"] + [cfg.coordinator.tls.key]
    for key in others:
        key.rename(key.with_suffix(".away"))
    try:
        mine = config.load(fed_dir / "federation.toml").party("education")
        assert tls.load_private_key(mine.tls.key) is not None
        with pytest.raises(ConfigError, match="private key not found"):
            tls.load_private_key(cfg.party("health").tls.key)
    finally:
        for key in others:
            key.with_suffix(".away").rename(key)


def test_an_epoch_budget_is_refused_with_the_reason(fed_dir: Path, tmp_path: Path) -> None:
    """A budget per epoch reset with every epoch: an old config must not load."""
    text = (fed_dir / "federation.toml").read_text()
    text = text.replace("epsilon_per_period = 1.0", "epsilon_per_epoch = 2.0")
    bad = tmp_path / "federation.toml"
    bad.write_text(text)
    for sub in ("ca", "certs", "linkage-schema.toml"):
        (tmp_path / sub).symlink_to(fed_dir / sub)
    with pytest.raises(ConfigError, match="epsilon_per_period"):
        config.load(bad)


def test_budgets_are_per_period_with_a_meaningful_default(fed_dir: Path) -> None:
    cfg = config.load(fed_dir / "federation.toml")
    assert cfg.privacy.period == "year"
    assert cfg.privacy.epsilon_per_period == 1.0
    assert cfg.privacy.household_cap == 1
