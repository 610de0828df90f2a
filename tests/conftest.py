"""Shared fixtures: fixed seeds and a small thread count so timings in the suite stay predictable; the real servers
of ``tests/servers.py`` (moto S3, PostgreSQL, Redis), registered here once for every test folder; the trained teacher
of ``tests/teachers.py``, trained once per session (``trained_teacher_path``, ``trained_teacher``)."""

from __future__ import annotations

import os
from pathlib import Path

# OpenMP threads that spin while waiting starve the worker and server subprocesses the service tests start on a
# 2-core machine (measured: a training step 4.7 s instead of 0.27 s); the condense CLI sets the same default.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest
import torch

from compression import load_teacher
from compression.teachers import Teacher
from tests.servers import (  # noqa: F401 -- fixtures, registered for the whole suite
    postgres_server,
    postgres_url,
    redis_server,
    redis_url,
    s3_bucket,
    s3_env,
    s3_server,
)
from tests.teachers import INPUT_SHAPE, save_trained_teacher


@pytest.fixture(autouse=True)
def _seeded() -> None:
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def trained_teacher_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A TorchScript file of the suite's teacher (tests/teachers.py), trained once per session; read it, never write."""
    return save_trained_teacher(tmp_path_factory.mktemp("trained-teacher") / "teacher.pt")


@pytest.fixture(scope="session")
def trained_teacher(trained_teacher_path: Path) -> Teacher:
    """The trained teacher loaded as an upload is (:func:`compression.load_teacher`, inputs 1 x 28 x 28)."""
    return load_teacher(trained_teacher_path, input_shape=INPUT_SHAPE)


_SERVER_FIXTURES = frozenset(
    {"postgres_server", "postgres_url", "redis_server", "redis_url", "s3_server", "s3_bucket", "s3_env"}
)


# Tests that use the trained teacher: the first one trains it (seconds), and they mine or distil with it.
_SLOW_FIXTURES = frozenset({"trained_teacher_path"})

# Other tests that train, export, mine, embed or measure latency for real and took a second or more (call + setup) in
# a run of the suite. Marked here, by node id, so that `pytest -m "not slow and not servers and not browser"` stays
# the fast part. A module whose fixture trains is marked as a whole there (pytestmark), so that no test of it that
# is left in the fast part pays for the training.
_SLOW_TESTS = frozenset(
    {
        "tests/compression/test_adder_layer.py::test_onnx_export_matches_pytorch_with_dynamic_batch",
        "tests/compression/test_binary_layer.py::test_onnx_export_identical_top1",
        "tests/compression/test_binary_search.py::test_searched_student_meets_its_budget_and_is_cached",
        "tests/compression/test_distill_stages.py::test_progressive_binarisation_trains_float_weights_first",
        "tests/compression/test_distill_stages.py::test_two_stage_distillation_starts_the_student_from_the_trained_twin",
        "tests/compression/test_distill_trainer.py::test_sigkilled_run_resumes_to_the_same_result",
        "tests/compression/test_export.py::test_export_writes_one_self_contained_file",
        "tests/compression/test_export.py::test_failed_verification_leaves_no_file",
        "tests/compression/test_export.py::test_verify_onnx_tolerances",
        "tests/compression/test_ghost_layers.py::test_onnx_export_parity",
        "tests/compression/test_metrics.py::test_profile_counts_and_latency",
        "tests/compression/test_qnn_export.py::test_qnn_student_exports_to_qdq_onnx_that_onnx_runtime_runs_on_real_images",
        "tests/compression/test_slim_latency_sizing.py::test_ms_budget_search_measures_caches_and_explains",
        "tests/compression/test_student_export.py::test_float_students_match_onnx_runtime",
        "tests/compression/test_student_export.py::test_trained_binary_student_has_identical_top1_in_onnx_runtime",
        "tests/compression/test_students.py::test_any_input_shape_and_class_count",
        "tests/compression/test_students.py::test_budget_picks_the_widest_student_within_it",
        "tests/pu_mining/test_embedder.py::test_output_shape_dtype_and_unit_norm",
        "tests/pu_mining/test_embedder.py::test_torchvision_network_with_a_local_state_dict",
        "tests/pu_mining/test_embedder.py::test_trousers_are_closer_to_trousers_than_to_digits",
        "tests/pu_mining/test_features.py::test_errors",
        "tests/pu_mining/test_features.py::test_graph_modules",
        "tests/pu_mining/test_features.py::test_teacher_normalisation_is_applied",
        "tests/pu_mining/test_features.py::test_torchscript_teacher",
        "tests/pu_mining/test_image_files.py::test_folder_zip_and_tars_read_the_same_images_in_the_same_order",
        "tests/pu_mining/test_pool.py::test_ingest_npz_and_folder_then_read_back",
        "tests/pu_mining/test_pool_sources.py::test_labelled_sources",
        "tests/pu_mining/test_pool_sources.py::test_pool_composition",
        "tests/pu_mining/test_pool_sources.py::test_skimage_crops",
        "tests/service/test_cli.py::test_profile_writes_a_verified_onnx_file",
        "tests/service/test_demo_pool.py::test_a_missing_package_leaves_its_source_out",
        "tests/service/test_demo_pool.py::test_builds_once_from_every_source_with_progress",
        "tests/service/test_demo_pool.py::test_example_positives_are_training_images_in_class_folders",
        "tests/service/test_demo_pool.py::test_pool_demo_command",
        "tests/service/test_pool_cli.py::test_bad_sources_are_one_line_errors",
        "tests/service/test_pool_cli.py::test_ingest_list_show_delete",
    }
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark tests ``servers`` (a real server) and ``slow`` (a fixture or a node id above; ``fixturenames`` includes
    the fixtures a test's fixtures use); the markers are in pyproject.toml."""
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        if item.nodeid.split("[")[0] in _SLOW_TESTS or fixtures & _SLOW_FIXTURES:
            item.add_marker(pytest.mark.slow)
        callspec = getattr(item, "callspec", None)
        params = set(map(str, callspec.params.values())) if callspec is not None else set()
        if fixtures & _SERVER_FIXTURES or params & {"s3", "postgresql"}:
            item.add_marker(pytest.mark.servers)
