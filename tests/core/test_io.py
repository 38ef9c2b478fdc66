import gzip
import os

import pytest

from posttrain.core import io


def test_jsonl_round_trip_plain_and_gz(tmp_path):
    recs = [{"b": 1, "a": "é"}, {"x": [1, 2, {"z": None}]}]
    for name in ("r.jsonl", "r.jsonl.gz"):
        p = tmp_path / name
        assert io.write_jsonl(p, recs) == 2
        assert io.read_jsonl(p) == recs
    with gzip.open(tmp_path / "r.jsonl.gz", "rt", encoding="utf-8") as fh:
        assert fh.readline() == '{"a": "é", "b": 1}\n'  # sorted keys, UTF-8 kept


def test_equal_input_gives_byte_identical_files(tmp_path):
    recs = [{"k": i, "v": {"y": 2, "x": 1}} for i in range(50)]
    for suffix in (".jsonl", ".jsonl.gz", ".json"):
        a, b = tmp_path / f"a{suffix}", tmp_path / f"b{suffix}"
        writer = io.write_json if suffix == ".json" else io.write_jsonl
        writer(a, recs)
        writer(b, list(reversed(list(reversed(recs)))))
        assert a.read_bytes() == b.read_bytes()
    # gzip header must not carry a timestamp: rewrite later, same bytes
    before = (tmp_path / "a.jsonl.gz").read_bytes()
    os.utime(tmp_path / "a.jsonl.gz", (0, 0))
    io.write_jsonl(tmp_path / "a.jsonl.gz", recs)
    assert (tmp_path / "a.jsonl.gz").read_bytes() == before


def test_failed_write_leaves_no_file(tmp_path):
    target = tmp_path / "out.jsonl"

    def records():
        yield {"ok": 1}
        raise RuntimeError("boom mid-write")

    with pytest.raises(RuntimeError):
        io.write_jsonl(target, records())
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []  # no temp file left either


def test_failed_write_keeps_previous_version(tmp_path):
    target = tmp_path / "out.json"
    io.write_json(target, {"v": 1})
    with pytest.raises(ValueError):
        io.write_json(target, {"v": float("nan")})  # NaN is not valid JSON: refused
    assert io.read_json(target) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_written_files_get_normal_permissions(tmp_path):
    p = io.write_json(tmp_path / "m.json", {})
    assert p.stat().st_mode & 0o044  # group/other readable as with a plain open()


def test_atomic_folder_replaces_whole_or_not_at_all(tmp_path):
    out = tmp_path / "model"
    with io.atomic_path(out, directory=True) as tmp:
        assert tmp.is_dir() and not any(tmp.iterdir()) and tmp.parent == tmp_path
        (tmp / "a.txt").write_text("1")
        (tmp / "old.txt").write_text("1")
    assert sorted(p.name for p in out.iterdir()) == ["a.txt", "old.txt"]
    assert out.stat().st_mode & 0o055  # group/other can list it, as with a plain mkdir
    with io.atomic_path(out, directory=True) as tmp:  # an existing folder is replaced whole
        (tmp / "a.txt").write_text("2")
    assert [p.name for p in out.iterdir()] == ["a.txt"] and (out / "a.txt").read_text() == "2"
    with pytest.raises(RuntimeError):
        with io.atomic_path(out, directory=True) as tmp:
            (tmp / "a.txt").write_text("3")
            raise RuntimeError("killed mid-save")
    assert (out / "a.txt").read_text() == "2"
    assert [p.name for p in tmp_path.iterdir()] == ["model"]  # no temp folder left


def test_malformed_jsonl_names_file_and_line(tmp_path):
    p = tmp_path / "bad.jsonl"
    p.write_text('{"a": 1}\n\n{"a": 2\n', encoding="utf-8")
    with pytest.raises(io.DataError) as e:
        io.read_jsonl(p)
    assert "bad.jsonl" in str(e.value) and "line 3" in str(e.value)
    assert e.value.line == 3


def test_missing_required_field_names_field(tmp_path):
    p = tmp_path / "f.jsonl.gz"
    io.write_jsonl(p, [{"id": 1, "text": "x"}, {"id": 2}])
    with pytest.raises(io.DataError) as e:
        io.read_jsonl(p, required=["id", "text"])
    assert e.value.line == 2 and e.value.field == "text"
    assert "f.jsonl.gz, line 2: field 'text'" in str(e.value)


def test_non_object_line_is_an_error(tmp_path):
    p = tmp_path / "l.jsonl"
    p.write_text('[1, 2]\n', encoding="utf-8")
    with pytest.raises(io.DataError, match="line 1: expected a JSON object"):
        io.read_jsonl(p)


def test_outputs_are_renamed_together_or_not_at_all(tmp_path):
    with pytest.raises(RuntimeError):
        with io.outputs() as o:
            o.write_json(tmp_path / "a.json", {"v": 1})
            o.write_jsonl(tmp_path / "sub" / "b.jsonl.gz", [{"v": 2}])
            raise RuntimeError("a later output fails")
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []  # no output, no temp file
    with io.outputs() as o:
        o.write_json(tmp_path / "a.json", {"v": 1})
        o.write_jsonl(tmp_path / "sub" / "b.jsonl.gz", [{"v": 2}])
        assert not (tmp_path / "a.json").exists()  # staged until the block ends
    assert io.read_json(tmp_path / "a.json") == {"v": 1}
    assert io.read_jsonl(tmp_path / "sub" / "b.jsonl.gz") == [{"v": 2}]


def test_truncated_gzip_and_non_finite_constants_are_located(tmp_path):
    p = tmp_path / "r.jsonl.gz"
    io.write_jsonl(p, [{"i": i, "pad": "x" * 64} for i in range(3000)])
    blob = p.read_bytes()
    p.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(io.DataError, match=r"r\.jsonl\.gz, line \d+: truncated or corrupt gzip after \d+"):
        io.read_jsonl(p)
    q = tmp_path / "n.jsonl"
    q.write_text('{"a": 1}\n{"a": NaN}\n')
    with pytest.raises(io.DataError, match=r"n\.jsonl, line 2: NaN is not a JSON value"):
        io.read_jsonl(q)
