"""``fdshpo data list|prepare|upload`` through the real CLI entry point."""

from __future__ import annotations

import json

from test_data_formats import make_idx_folder

from fdshpo.cli import main
from fdshpo.data import load_dataset, load_prepared


def test_list_prepare_and_upload(tmp_path, capsys):
    assert main(["data", "list"]) == 0
    assert capsys.readouterr().out.split() == ["cifar10", "fashion-mnist",
                                               "fashion-mnist-sample", "mnist"]

    make_idx_folder(tmp_path / "files", gz=False)
    assert main(["data", "upload", str(tmp_path / "files"), "--store", str(tmp_path / "store"),
                 "--prefix", "datasets/mnist"]) == 0
    assert "uploaded 4 files" in capsys.readouterr().out
    out = tmp_path / "mnist.pt"
    assert main(["data", "prepare", "mnist", "-o", str(out), "--val-fraction", "0.1",
                 "--data-root", str(tmp_path / "root"), "--data-store",
                 str(tmp_path / "store")]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["num_val"] == 6 and printed["source"].startswith("object store")
    prepared = load_prepared(out, expected_sha256=printed["sha256"])
    direct = load_dataset("mnist", path=tmp_path / "files")
    assert (prepared.dataset.train_images == direct.train_images).all()


def test_bad_names_give_one_line_errors(tmp_path, capsys):
    assert main(["data", "prepare", "svhn", "-o", str(tmp_path / "x.pt")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fdshpo: error: unknown dataset 'svhn'; known datasets are [")
    assert main(["data", "prepare", "mnist", "-o", str(tmp_path / "x.pt"), "--data-path",
                 str(tmp_path / "nope")]) == 2
    assert "is not at the explicit path" in capsys.readouterr().err
