#!/usr/bin/env python3
"""Writes Kiln's example datasets (data/iris.csv, data/wine.csv, data/digits.csv, data/digits.npz).

The source is the data that ships inside scikit-learn's wheel (sklearn/datasets/data/), which
`load_iris`, `load_wine` and `load_digits` read; the wheel is fetched from PyPI and nothing is installed:

    pip download --no-deps scikit-learn -d /tmp/skl
    python3 scripts/make-example-data.py /tmp/skl/scikit_learn-*.whl

Needs numpy for the NPZ file (the libtorch virtualenv has it). The output is deterministic.
"""

import csv
import gzip
import io
import pathlib
import sys
import zipfile

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
DATA = ROOT / "data"
WINE_COLUMNS = [
    "alcohol",
    "malic_acid",
    "ash",
    "alcalinity_of_ash",
    "magnesium",
    "total_phenols",
    "flavanoids",
    "nonflavanoid_phenols",
    "proanthocyanins",
    "color_intensity",
    "hue",
    "od280_od315_of_diluted_wines",
    "proline",
]


def main(wheel: str) -> None:
    with zipfile.ZipFile(wheel) as zf:
        iris = zf.read("sklearn/datasets/data/iris.csv").decode()
        wine = zf.read("sklearn/datasets/data/wine_data.csv").decode()
        digits = gzip.decompress(zf.read("sklearn/datasets/data/digits.csv.gz")).decode()

    # iris.csv: a header line "150,4,setosa,versicolor,virginica", then 4 measures + class index.
    lines = iris.strip().splitlines()
    names = lines[0].split(",")[2:]
    with open(DATA / "iris.csv", "w", newline="") as f:
        out = csv.writer(f, lineterminator="\n")
        out.writerow(["sepal_length", "sepal_width", "petal_length", "petal_width", "species"])
        for line in lines[1:]:
            *measures, label = line.split(",")
            out.writerow([*measures, names[int(label)]])

    # wine_data.csv: a header line "178,13,class_0,class_1,class_2", then 13 measures + class
    # index. Column names as load_wine's feature_names, with "/" spelled "_".
    lines = wine.strip().splitlines()
    classes = lines[0].split(",")[2:]
    with open(DATA / "wine.csv", "w", newline="") as f:
        out = csv.writer(f, lineterminator="\n")
        out.writerow(WINE_COLUMNS + ["cultivar"])
        for line in lines[1:]:
            *measures, label = line.split(",")
            out.writerow([*measures, classes[int(label)]])
    wine_rows = len(lines) - 1

    # digits.csv.gz: 64 pixel counts (0..16, row-major 8x8) + the digit, no header.
    rows = np.loadtxt(io.StringIO(digits), delimiter=",", dtype=np.int64)
    x, y = rows[:, :64], rows[:, 64]
    with open(DATA / "digits.csv", "w", newline="") as f:
        out = csv.writer(f, lineterminator="\n")
        out.writerow([f"pixel_{i}" for i in range(64)] + ["digit"])
        for pixels, digit in zip(x, y):
            out.writerow([*pixels.tolist(), int(digit)])
    np.savez_compressed(
        DATA / "digits.npz",
        x=x.reshape(-1, 1, 8, 8).astype(np.float32),
        y=y.astype(np.int64),
    )
    print(f"iris: 150 rows; wine: {wine_rows} rows; digits: {len(y)} rows")


if __name__ == "__main__":
    main(sys.argv[1])
