"""`data.dvc` is read in one place (headstart.data.pin), with a clear error when broken."""

from __future__ import annotations

from pathlib import Path

import pytest

from headstart.data.pin import pin_file, pinned_md5
from headstart.errors import DataError
from headstart.registry.lineage import lineage
from headstart.steps import fetch
from tests.conftest import make_imagefolder
from tests.helpers import params_cfg

GOOD = "outs:\n- md5: de9a6b78a57761c46124ff39be65e683.dir\n  size: 35\n  nfiles: 2\n  hash: md5\n  path: data\n"


def test_pinned_md5_reads_the_file_next_to_the_folder(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data.dvc").write_text(GOOD)
    assert pinned_md5(tmp_path / "data") == "de9a6b78a57761c46124ff39be65e683.dir"
    assert pin_file(tmp_path / "my.images") == tmp_path / "my.images.dvc"  # not my.dvc


def test_pinned_md5_is_none_without_a_pin(tmp_path: Path) -> None:
    assert pinned_md5(tmp_path / "data") is None
    (tmp_path / "data.dvc").write_text("outs:\n- path: data\n")  # not committed yet
    assert pinned_md5(tmp_path / "data") is None


@pytest.mark.parametrize("text", ["outs: [unclosed\n", "", "just text\n", "outs: {}\n", "outs:\n- [1, 2]\n",
                                  "outs:\n- md5: [1]\n"])
def test_malformed_pin_is_a_data_error_naming_the_file(tmp_path: Path, text: str) -> None:
    (tmp_path / "data.dvc").write_text(text)
    with pytest.raises(DataError, match=r"data\.dvc"):
        pinned_md5(tmp_path / "data")


def test_register_and_fetch_read_the_pin_through_pinned_md5(tmp_path: Path) -> None:
    data = make_imagefolder(tmp_path / "data", per_class={"train": 1})
    (tmp_path / "data.dvc").write_text(GOOD)
    assert lineage(data)["data.dvc_md5"] == "de9a6b78a57761c46124ff39be65e683.dir"
    assert fetch.run(params_cfg("fetch", path=str(data)), tmp_path / "out").md5 == pinned_md5(data)

    (tmp_path / "data.dvc").write_text("outs: [unclosed\n")  # a merge conflict, say
    with pytest.raises(DataError, match=r"data\.dvc"):
        lineage(data)
    with pytest.raises(DataError, match=r"data\.dvc"):
        fetch.run(params_cfg("fetch", path=str(data)), tmp_path / "out2")
