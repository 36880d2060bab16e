"""A simulation SuperLink's settings reach ``flwr run`` as a federation config Flower accepts."""

from __future__ import annotations

import pytest
import tomli_w

pytest.importorskip("flwr")
from flwr.common.config import parse_config_args
from flwr.supercore.utils import simulation_config_from_json

from consortium.runtime.flower import simulation_backend_config
from consortium.runtime.flower.loopback import federation_config


def as_flower_reads_it(tmp_path, config):
    """What ``flwr run --federation-config FILE`` makes of the file (Flower's own parsing)."""
    path = tmp_path / "federation-config.toml"
    path.write_text(tomli_w.dumps(config))
    flat = parse_config_args([str(path)])
    return simulation_config_from_json({k.replace("-", "_"): v for k, v in flat.items()})


def test_the_backend_config_becomes_flowers_simulation_config(tmp_path):
    backend = simulation_backend_config(num_cpus=2, cpus_per_client=1.0, gpus_per_client=0.5)
    got = as_flower_reads_it(tmp_path, federation_config(7, backend))
    assert got.num_supernodes == 7
    assert got.client_resources_num_cpus == 1
    assert got.client_resources_num_gpus == pytest.approx(0.5)
    assert got.init_args_num_cpus == 2
    assert got.init_args_logging_level == "ERROR"
    assert got.init_args_log_to_driver is False


def test_a_fraction_of_a_cpu_per_member_is_rounded_up(tmp_path):
    # flwr run counts whole CPUs per member; 0.5 must not become 0 (unbounded members)
    backend = simulation_backend_config(cpus_per_client=0.5)
    got = as_flower_reads_it(tmp_path, federation_config(3, backend))
    assert got.client_resources_num_cpus == 1
    assert not got.HasField("init_args_num_cpus")


def test_no_backend_is_only_the_number_of_supernodes(tmp_path):
    assert federation_config(4, {}) == {"num-supernodes": 4}
    assert as_flower_reads_it(tmp_path, federation_config(4, {})).num_supernodes == 4
