"""Uploads from a DataFrame, a file (streamed, with a progress bar) and numpy arrays."""

from __future__ import annotations

import hashlib
import io
import tracemalloc

import numpy as np
import pandas as pd
import pytest

import kiln
from conftest import DATA


def test_a_dataframe_uploads_as_csv_with_its_schema(client, iris, iris_frame):
    assert iris.format == "csv"
    assert iris.name == "iris"
    assert iris.schema["rows"] == len(iris_frame) == 150
    assert iris.columns == list(iris_frame.columns)
    species = next(c for c in iris.schema["columns"] if c["name"] == "species")
    assert species["type"] == "category" and species["distinct"] == 3
    # What was stored is exactly the DataFrame's CSV.
    expected = iris_frame.to_csv(index=False).encode()
    assert iris.sha256 == hashlib.sha256(expected).hexdigest()
    assert iris.size_bytes == len(expected)


def test_a_file_streams_with_a_progress_bar(client, capsys):
    path = DATA / "wine.csv"
    ds = client.datasets.upload(path, progress=True)
    assert ds.name == "wine"  # the file's stem
    assert ds.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert ds.size_bytes == path.stat().st_size
    bar = capsys.readouterr().err
    assert "upload wine.csv" in bar and "100%" in bar


def test_a_large_file_streams_in_bounded_memory(client, tmp_path, capsys):
    path = tmp_path / "large.csv"
    rng = np.random.default_rng(5)
    with open(path, "w") as f:
        f.write("a,b,c,d,label\n")
        for block in range(30):
            x = rng.normal(size=(10_000, 4))
            lines = (f"{r[0]:.6f},{r[1]:.6f},{r[2]:.6f},{r[3]:.6f},{'yes' if r[0] > 0 else 'no'}" for r in x)
            f.write("\n".join(lines) + "\n")
    size = path.stat().st_size
    assert size > 9 << 20  # above the default progress-bar threshold (8 MiB)
    tracemalloc.start()
    try:
        ds = client.datasets.upload(path, name="large")  # progress bar by default at this size
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert ds.size_bytes == size and ds.schema["rows"] == 300_000
    assert peak < 4 << 20, f"uploading {size} bytes took {peak} bytes of Python memory"
    assert "upload large.csv" in capsys.readouterr().err


def test_arrays_upload_as_npz(client):
    rng = np.random.default_rng(3)
    x = rng.normal(size=(40, 6)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    ds = client.datasets.upload((x, y), name="blobs")
    assert ds.format == "npz"
    assert ds.schema["x"]["shape"] == [40, 6]
    assert ds.schema["y"] == {"shape": [40], "integer": True}
    again = client.datasets.upload({"x": x, "y": y}, name="blobs")
    assert again.name == "blobs" and again.schema == ds.schema


def test_list_and_get(client, iris):
    assert client.datasets.get(iris.id) == iris
    assert client.datasets.get(iris) == iris
    listed = client.datasets.list(name="iris")
    assert iris.id in [d.id for d in listed]
    assert all(isinstance(d, kiln.Dataset) and d.name == "iris" for d in listed)


def test_errors_carry_the_api_code(client, stack, tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    with pytest.raises(kiln.KilnError) as err:
        client.datasets.upload(empty)
    assert (err.value.code, err.value.status) == ("validation_failed", 422)
    assert "body" in err.value.fields and "empty" in err.value.fields["body"]

    with pytest.raises(kiln.KilnError) as err:
        client.datasets.upload(pd.DataFrame({"a": [1]}), name="bad name!")
    assert err.value.status == 422 and "name" in err.value.fields

    with pytest.raises(kiln.KilnError) as err:
        client.datasets.get("0190a3c4-0000-7000-8000-000000000000")
    assert (err.value.code, err.value.status) == ("not_found", 404)

    with pytest.raises(kiln.KilnError) as err:
        stack.client("viewer").datasets.upload(pd.DataFrame({"a": [1, 2]}), name="nope")
    assert (err.value.code, err.value.status) == ("forbidden", 403)

    with pytest.raises(kiln.KilnError) as err:
        kiln.Client(stack.url, "kiln_not_a_real_token").datasets.list()
    assert (err.value.code, err.value.status) == ("unauthenticated", 401)


def test_bad_arguments_are_refused_before_sending(client, tmp_path):
    with pytest.raises(kiln.KilnError) as err:
        client.datasets.upload(pd.DataFrame({"a": [1]}))
    assert err.value.code == "invalid_argument" and "name=" in err.value.message
    with pytest.raises(kiln.KilnError) as err:
        client.datasets.upload(tmp_path / "missing.csv")
    assert "is not a file" in err.value.message
    with pytest.raises(kiln.KilnError) as err:
        client.datasets.upload((np.zeros((3, 2)), np.zeros(4)), name="x")
    assert "3 rows but y has 4" in err.value.message
    with pytest.raises(kiln.KilnError):
        client.datasets.upload(io.BytesIO(b"a,b\n1,2\n"), name="x")
