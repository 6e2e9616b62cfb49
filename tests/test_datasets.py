"""Naming schemes, the pairing rule, identity-disjoint splits and the manifest."""
import json
import os

import pytest

from training.datasets import (KFACE_YAW, MULTIPIE30_SPLIT, MULTIPIE_CAM_YAW, YAWS, build_manifest, check_disjoint,
                               generic_parser, make_pairs, parse_kface, parse_multipie, read_manifest, scan,
                               split_identities, write_manifest)

CAMS = sorted(MULTIPIE_CAM_YAW)


def touch(root, rel):
    p = os.path.join(root, rel)
    os.makedirs(os.path.dirname(p), exist_ok=True)
    open(p, "wb").close()  # scan reads names only


def multipie_tree(root, ids=("044", "045"), rrs=("01", "02"), lls=("07", "12")):
    for sid in ids:
        for rr in rrs:
            for ll in lls:
                for cam in CAMS:
                    touch(root, f"{sid}/{sid}_01_{rr}_{cam}_{ll}.jpg")


def test_multipie_names():
    r = parse_multipie("044/044_01_02_110_07.jpg")
    assert (r.identity, r.yaw, r.key) == ("044", -90, "044_01_02_07")
    assert parse_multipie("044/044_01_02_051_07.jpg").yaw == 0
    assert parse_multipie("044/044_01_02_240_07.png").yaw == 90
    assert parse_multipie("044/044_01_02_999_07.jpg") is None  # unknown camera
    assert parse_multipie("044/photo.jpg") is None


def test_multipie_pairing_rule(tmp_path):
    multipie_tree(tmp_path)
    touch(tmp_path, "044/044_01_01_999_07.jpg")  # unknown camera: listed as skipped
    touch(tmp_path, "044/readme.txt")  # not an image: ignored
    records, skipped = scan(str(tmp_path))
    assert len(records) == 2 * 2 * 2 * 13 and skipped == [os.path.join("044", "044_01_01_999_07.jpg")]
    pairs, unpaired = make_pairs(records)
    assert len(pairs) == 2 * 2 * 2 * 12 and unpaired == 0
    for side, front in pairs:
        assert side.yaw != 0 and front.yaw == 0
        sid, ss, rr, cam, ll = os.path.basename(side.path)[:-4].split("_")
        assert os.path.basename(front.path) == f"{sid}_{ss}_{rr}_051_{ll}.jpg"
    # Without its frontal view a side view is dropped and counted, never paired elsewhere.
    os.remove(tmp_path / "045" / "045_01_02_051_12.jpg")
    pairs, unpaired = make_pairs(scan(str(tmp_path))[0])
    assert unpaired == 12 and len(pairs) == 2 * 2 * 2 * 12 - 12
    assert not any(s.key == "045_01_02_12" for s, _ in pairs)


def test_kface_names_and_pairing(tmp_path):
    assert KFACE_YAW["C7"] == 0 and KFACE_YAW["C1"] == -90 and KFACE_YAW["C13"] == 90
    r = parse_kface("19062421/S001/L1/E01/C7.jpg")
    assert (r.identity, r.yaw, r.key) == ("19062421", 0, "19062421_S001_L1_E01")
    assert parse_kface("19062421/S001/L1/E01/C3.jpg").yaw == -60
    assert parse_kface("19062421/S001/L1/E01/C16.jpg") is None  # raised/lowered cameras are not paired
    for pid in ("p1", "p2"):
        for light in ("L1", "L2"):
            for cam in ("C1", "C4", "C7", "C10", "C14"):
                touch(tmp_path, f"{pid}/S001/{light}/E01/{cam}.jpg")
    os.remove(tmp_path / "p2" / "S001" / "L2" / "E01" / "C7.jpg")
    records, skipped = scan(str(tmp_path), "kface")
    assert len(skipped) == 4  # the C14 files
    pairs, unpaired = make_pairs(records)
    assert len(pairs) == 3 * 3 and unpaired == 3
    for side, front in pairs:
        # the pairing key is ID/S/L/E: same folder, camera C7
        assert os.path.dirname(side.path) == os.path.dirname(front.path)
        assert os.path.basename(front.path) == "C7.jpg"


def test_generic_scheme(tmp_path):
    pattern = r"(?P<id>[^/]+)/(?P<key>.+)_yaw(?P<yaw>-?\d+)\.\w+$"
    for rel in ("anna/smile_yaw0.png", "anna/smile_yaw-30.png", "anna/smile_yaw45.png",
                "anna/neutral_yaw30.png", "ben/smile_yaw0.png", "ben/smile_yaw-30.png", "ben/other.png"):
        touch(tmp_path, rel)
    records, skipped = scan(str(tmp_path), "generic", pattern)
    assert skipped == [os.path.join("ben", "other.png")]
    assert {r.yaw for r in records} == {0, -30, 45, 30}
    pairs, unpaired = make_pairs(records)
    got = sorted((s.path, f.path) for s, f in pairs)
    assert got == [("anna/smile_yaw-30.png", "anna/smile_yaw0.png"), ("anna/smile_yaw45.png", "anna/smile_yaw0.png"),
                   ("ben/smile_yaw-30.png", "ben/smile_yaw0.png")]
    assert unpaired == 1  # anna/neutral has no frontal view
    with pytest.raises(ValueError, match="named groups"):
        generic_parser(r"(?P<id>\w+)_(\d+)")


def test_multipie_manifest_uses_fixed_split(tmp_path):
    multipie_tree(tmp_path, ids=("020", "042", "044", "049"), rrs=("01",), lls=("07",))
    m = build_manifest(str(tmp_path))
    assert m["identities"] == MULTIPIE30_SPLIT
    ids = {k: {row["id"] for row in rows} for k, rows in m["pairs"].items()}
    assert ids == {"train": {"020"}, "val": {"042"}, "test": {"044", "049"}}
    assert all(int(i) in range(44, 50) for i in ids["test"])
    assert {row["yaw"] for row in m["pairs"]["test"]} == set(YAWS) - {0}
    check_disjoint(m)


def test_check_disjoint_raises_on_a_clash(tmp_path):
    multipie_tree(tmp_path, ids=("020", "044"), rrs=("01",), lls=("07",))
    m = build_manifest(str(tmp_path))
    m["pairs"]["train"].append(m["pairs"]["test"][0])  # a test identity leaks into training
    with pytest.raises(ValueError, match="044"):
        check_disjoint(m)
    with pytest.raises(ValueError):
        write_manifest(m, str(tmp_path / "m.json"))
    assert not (tmp_path / "m.json").exists()
    (tmp_path / "bad.json").write_text(json.dumps(m))
    with pytest.raises(ValueError):
        read_manifest(str(tmp_path / "bad.json"))


def test_seeded_split_is_disjoint_and_complete(tmp_path):
    ids = [f"p{i:02d}" for i in range(20)]
    s = split_identities(ids, seed=3)
    assert sorted(s["train"] + s["val"] + s["test"]) == sorted(ids)
    assert not (set(s["train"]) & set(s["test"])) and not (set(s["val"]) & set(s["test"]))
    assert len(s["test"]) == 4 and len(s["val"]) == 2
    assert split_identities(ids, seed=3) == s and split_identities(ids, seed=4) != s
    # a kface tree gets such a split, and the manifest round-trips through write/read
    for pid in ids[:5]:
        for cam in ("C4", "C7"):
            touch(tmp_path, f"{pid}/S001/L1/E01/{cam}.jpg")
    m = build_manifest(str(tmp_path), "kface")
    write_manifest(m, str(tmp_path / "manifest.json"))
    assert read_manifest(str(tmp_path / "manifest.json")) == m
    seen = [row["id"] for rows in m["pairs"].values() for row in rows]
    assert sorted(seen) == ids[:5]


def test_real_multipie30_pairs(multipie30):
    records, skipped = scan(multipie30)
    assert len(records) == 15600 and not skipped
    pairs, unpaired = make_pairs(records)
    assert len(pairs) == 14400 and unpaired == 0
    for side, front in pairs:
        sid, ss, rr, cam, ll = os.path.basename(side.path)[:-4].split("_")
        assert cam != "051" and front.path == os.path.join(sid, f"{sid}_{ss}_{rr}_051_{ll}.jpg")


def test_real_multipie30_manifest_holds_out_test_ids(multipie30):
    m = build_manifest(multipie30)
    ids = {k: {row["id"] for row in rows} for k, rows in m["pairs"].items()}
    assert ids["test"] == {f"{i:03d}" for i in range(44, 50)}
    assert ids["val"] == {"042", "043"} and ids["train"] == {f"{i:03d}" for i in range(20, 42)}
    assert len(m["pairs"]["test"]) == 6 * 2 * 20 * 12
    check_disjoint(m)


def test_paired_manifest_of_both_multipie_sets(tmp_path):
    """training.pooled --paired: multipie30 side -> camera 051 of the same instant, multipie137 side ->
    its TP-GAN frontal with yaw +|camera yaw| (stored nose-right); only cropped files; SPLITS' ids."""
    from training.pooled import paired

    crops, data = tmp_path / "crops", tmp_path / "data"
    journal = {"multipie30": [], "multipie137": []}
    for sid in ("020", "044"):
        for cam in ("051", "110", "240"):
            rel = f"{sid}/{sid}_01_01_{cam}_07.jpg"
            touch(str(crops / "multipie30"), rel)
            journal["multipie30"].append({"path": rel, "ok": True, "yaw_est": 0.0})
    journal["multipie30"][-1]["ok"] = False  # 044 camera 240: no face -> no pair
    lines = ["side,frontal"]
    for sid, cam in (("201", "110"), ("330", "050"), ("202", "041")):
        side, front = f"{sid}/{sid}_01_01_{cam}_08.jpg", f"{sid}/{sid}_01_01_{cam}_08_tpgan.jpg"
        lines.append(f"{side},{front}")
        for rel in (side, front) if sid != "202" else (side,):  # 202's TP-GAN frontal was not cropped
            touch(str(crops / "multipie137"), rel)
            journal["multipie137"].append({"path": rel, "ok": True, "yaw_est": 0.0})
    for s, rows in journal.items():
        with open(crops / s / "prepare_journal.jsonl", "w") as f:
            f.write("".join(json.dumps(r) + "\n" for r in rows))
    os.makedirs(data / "multipie137")
    (data / "multipie137" / "pairs.csv").write_text("\n".join(lines) + "\n")

    m = paired(str(crops), str(data))
    got = {k: sorted((r["x"], r["y"], r["id"], r["yaw"]) for r in v) for k, v in m["pairs"].items()}
    assert got["train"] == [
        ("multipie137/201/201_01_01_110_08.jpg", "multipie137/201/201_01_01_110_08_tpgan.jpg", "mp137-201", 90),
        ("multipie30/020/020_01_01_110_07.jpg", "multipie30/020/020_01_01_051_07.jpg", "mp30-020", -90),
        ("multipie30/020/020_01_01_240_07.jpg", "multipie30/020/020_01_01_051_07.jpg", "mp30-020", 90)]
    assert got["test"] == [
        ("multipie137/330/330_01_01_050_08.jpg", "multipie137/330/330_01_01_050_08_tpgan.jpg", "mp137-330", 15),
        ("multipie30/044/044_01_01_110_07.jpg", "multipie30/044/044_01_01_051_07.jpg", "mp30-044", -90)]
    assert got["val"] == [] and m["root"] == str(crops)
    check_disjoint(m)
