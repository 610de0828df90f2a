"""Jobs sure to fail are refused at submit: ONNX external data, more positive classes than the teacher outputs,
an unknown pool name (the epochs and time-budget bounds are in tests/service/test_api_hostile_input.py)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx.external_data_helper import convert_model_to_external_data

from pu_mining.pool import PoolConfig, PoolStore
from pu_mining.sources import fashion_mnist
from tests.service.conftest import ApiFixture

pytestmark = pytest.mark.filterwarnings("ignore:You are using the legacy TorchScript-based ONNX export")


def _onnx_teacher(folder: Path, classes: int, *, external: bool = False) -> bytes:
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(28 * 28, classes)).eval()
    path = folder / f"teacher-{classes}.onnx"
    torch.onnx.export(model, torch.zeros(1, 1, 28, 28), str(path), dynamo=False)
    if external:
        proto = onnx.load(str(path))
        convert_model_to_external_data(proto, all_tensors_to_one_file=True, location="weights.bin", size_threshold=0)
        onnx.save_model(proto, str(path))
    return path.read_bytes()


def _submit(api: ApiFixture, service_inputs, teacher: bytes, options: dict | None = None):
    data = {
        "teacher": (io.BytesIO(teacher), "teacher.onnx"),
        "positives": (io.BytesIO(service_inputs["positives"].read_bytes()), "pos.zip"),
        "options": json.dumps(options or {}),
    }
    return api.client.post("/api/v1/jobs", headers=api.alice, data=data, content_type="multipart/form-data")


def _error(response, status: int) -> dict:
    assert response.status_code == status, response.get_data(as_text=True)
    return response.get_json()["error"]


def test_onnx_with_external_data_is_refused_at_submit(api: ApiFixture, service_inputs, tmp_path: Path) -> None:
    error = _error(_submit(api, service_inputs, _onnx_teacher(tmp_path, 10, external=True)), 422)
    assert error["fields"][0]["field"] == "teacher" and "external data" in error["message"]
    assert api.jobs.metadata.list_jobs("alice") == []


def test_more_positive_classes_than_the_teacher_outputs_is_refused(api, service_inputs, tmp_path: Path) -> None:
    error = _error(_submit(api, service_inputs, _onnx_teacher(tmp_path, 2)), 422)  # the positives have 3 classes
    assert error["fields"][0]["field"] == "positives" and "teacher outputs 2" in error["message"]
    job = _submit(api, service_inputs, _onnx_teacher(tmp_path, 10))
    assert job.status_code == 201 and job.get_json()["inputs"]["teacher"]["num_classes"] == 10


def test_pool_names_are_checked_at_submit(api: ApiFixture, service_inputs, tmp_path: Path) -> None:
    images, _ = fashion_mnist("test")
    np.savez(tmp_path / "pool.npz", x=images[:60])
    store = PoolStore(api.jobs.blobs, cache_dir=tmp_path / "cache")
    store.ingest("fashion", [tmp_path / "pool.npz"], config=PoolConfig(image_size=28, channels=1, shard_size=50))
    teacher = _onnx_teacher(tmp_path, 10)
    error = _error(_submit(api, service_inputs, teacher, {"pool": "demo"}), 422)
    assert error["fields"][0]["field"] == "options.pool" and "this service has: fashion" in error["message"]
    assert _submit(api, service_inputs, teacher, {"pool": "fashion"}).status_code == 201
