"""Dataset readers: index files, ark / voc / coco exports exactly as YMIR writes them."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from {{ cookiecutter.package_name }}.contract import dataset
from {{ cookiecutter.package_name }}.contract.dataset import (
    EXPORT_FORMATS,
    Annotation,
    DatasetItem,
    empty_export_error,
    parse_export_format,
    platform_range,
    read_candidates,
    read_index,
    read_split,
    require_items,
)
from {{ cookiecutter.package_name }}.contract.errors import ErrorCode, ExecutorError
from {{ cookiecutter.package_name }}.contract.masks import encode_rle, mask_area

CLASSES = ["cat", "dog", "person"]


# --- fixtures built the way the platform lays out /in --------------------------------------


def make_image(folder, name, size=(40, 30), format="PNG", mode="RGB"):
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    color = 120 if mode in ("L", "P") else (120, 60, 30, 255)[: len(mode)]
    Image.new(mode, size, color).save(path, format=format)
    return path


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def write_index(path, rows):
    return write(path, "".join("\t".join(str(cell) for cell in row) + "\n" for row in rows))


def voc_xml(image_path, objects, width=40, height=30):
    """A single-line VOC file as ``exporter._single_image_annotations_to_voc`` writes it."""
    parts = [
        "<annotation><folder>folder</folder>",
        f"<filename>{image_path}</filename>",
        "<source><database>unknown</database><annotation>unknown</annotation>"
        "<image>unknown</image></source>",
        f"<size><width>{width}</width><height>{height}</height><depth>3</depth></size>",
        "<segmented>0</segmented>",
    ]
    for name, xmin, ymin, xmax, ymax in objects:
        parts.append(
            f"<object><name>{name}</name><pose>unknown</pose><truncated>unknown</truncated>"
            f"<occluded>0</occluded><bndbox><xmin>{xmin}</xmin><ymin>{ymin}</ymin>"
            f"<xmax>{xmax}</xmax><ymax>{ymax}</ymax><rotate_angle>0.0000</rotate_angle>"
            "</bndbox><difficult>0</difficult><box_quality>-1.0000</box_quality>"
            "<confidence>-1.0000</confidence></object>"
        )
    parts.append("</annotation>")
    return "".join(parts)


def coco_image(image_id, file_name, width=40, height=30):
    return {
        "id": image_id,
        "file_name": file_name,
        "width": width,
        "height": height,
        "date_captured": "",
        "license": 1,
        "coco_url": "",
        "flickr_url": "",
    }


def coco_annotation(annotation_id, image_id, category_id, bbox, segmentation=None):
    annotation = {
        "id": annotation_id,
        "image_id": image_id,
        "category_id": category_id,
        "iscrowd": 0,
        "bbox": bbox,
        "confidence": -1.0,
        "area": bbox[2] * bbox[3],
    }
    if segmentation is not None:
        annotation["segmentation"] = segmentation
    return annotation


def coco_document(images, categories, annotations):
    licence = {"id": 1, "name": "", "url": ""}
    return {
        "images": images,
        "categories": [{"id": i, "name": n, "supercategory": "object"} for i, n in categories],
        "annotations": annotations,
        "licenses": [licence],
    }


@pytest.fixture
def ymir_in(tmp_path):
    root = tmp_path / "in"
    (root / "assets").mkdir(parents=True)
    return root


def asset(root, stem, **kwargs):
    fmt = kwargs.pop("format", "PNG")
    ext = kwargs.pop("ext", "png" if fmt == "PNG" else "jpg")
    return make_image(root / "assets" / stem[-2:], f"{stem}.{ext}", format=fmt, **kwargs)


# --- export_format --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("ark:raw", "ark"),
        ("det-ark:raw", "ark"),
        ("voc:raw", "voc"),
        ("det-voc:raw", "voc"),
        ("coco:raw", "coco"),
        # the only COCO name YMIR 2.1-2.4 export: boxes are read from it, masks ignored
        ("seg-coco:raw", "coco"),
        ("  ARK:raw ", "ark"),
    ],
)
def test_detection_export_formats(value, expected):
    assert parse_export_format(value, 2) == expected


@pytest.mark.parametrize("object_type", [3, 4])
@pytest.mark.parametrize("value", ["seg-coco:raw", "coco:raw"])
def test_segmentation_export_formats(value, object_type):
    assert parse_export_format(value, object_type) == "coco"


@pytest.mark.parametrize("value", ["", None])
def test_empty_export_format_is_the_platform_default(value):
    assert parse_export_format(value, 2) == "voc"


@pytest.mark.parametrize("object_type", [3, 4])
def test_empty_export_format_cannot_feed_segmentation(object_type):
    with pytest.raises(ExecutorError) as caught:
        parse_export_format("", object_type)
    assert caught.value.code == ErrorCode.CONFIG
    assert "voc:raw" in caught.value.message
    assert "'seg-coco:raw'" in caught.value.message


@pytest.mark.parametrize(
    ("value", "object_type"),
    [
        ("ark", 2),
        ("ark:lmdb", 2),
        ("ark:raw:raw", 2),
        ("seg-coco:lmdb", 2),
        ("ls_json:raw", 2),
        ("none:raw", 2),
        ("yolo:raw", 2),
        ("ark:raw", 3),
        ("voc:raw", 4),
        ("det-ark:raw", 4),
        ("seg-mask:raw", 3),
        ("seg-coco:lmdb", 3),
    ],
)
def test_bad_export_formats_are_config_errors_listing_the_choices(value, object_type):
    with pytest.raises(ExecutorError) as caught:
        parse_export_format(value, object_type)
    assert caught.value.code == ErrorCode.CONFIG
    assert repr(value) in caught.value.message
    for name in EXPORT_FORMATS[object_type]:
        assert f"'{name}:raw'" in caught.value.message


def test_unknown_object_type():
    with pytest.raises(ExecutorError) as caught:
        parse_export_format("ark:raw", 5)
    assert caught.value.code == ErrorCode.OBJECT_TYPE


# --- index files ----------------------------------------------------------------------------


def test_read_index_two_columns_one_column_blank_lines(tmp_path):
    index = write(
        tmp_path / "index.tsv",
        "/in/assets/ab/1ab.jpg\t/in/annotations/ab/1ab.txt\n"
        "\n"
        "/in/assets/cd/2cd.png\r\n"
        "/in/assets/my photo été.jpg\t\n"
        "   \n",
    )
    entries = read_index(index)
    assert [(str(image), str(anno) if anno else None) for image, anno in entries] == [
        ("/in/assets/ab/1ab.jpg", "/in/annotations/ab/1ab.txt"),
        ("/in/assets/cd/2cd.png", None),
        ("/in/assets/my photo été.jpg", None),
    ]


def test_read_index_missing_file_is_a_dataset_error(tmp_path):
    with pytest.raises(ExecutorError) as caught:
        read_index(tmp_path / "nope.tsv")
    assert caught.value.code == ErrorCode.DATASET
    assert "nope.tsv" in caught.value.message


def test_read_index_three_columns_names_the_line(tmp_path):
    index = write(tmp_path / "index.tsv", "/a.jpg\t/a.txt\n/b.jpg\t/b.txt\t/extra\n")
    with pytest.raises(ExecutorError) as caught:
        read_index(index)
    assert caught.value.code == ErrorCode.DATASET
    assert f"{index}:2" in caught.value.message


def test_read_candidates_keeps_order_and_first_column(tmp_path):
    names = ["/in/assets/zz/9zz.jpg", "/in/assets/a b.png", "/in/assets/ünï cödé.jpg", "/c.bmp"]
    index = write(tmp_path / "candidate-index.tsv", "\n".join(names[:3]) + f"\n{names[3]}\t/x\n")
    assert [str(path) for path in read_candidates(index)] == names


def test_empty_index_gives_empty_split(tmp_path):
    index = write(tmp_path / "train-index.tsv", "")
    assert read_split(index, CLASSES, "ark", 2) == []


# --- ark --------------------------------------------------------------------------------------


def test_ark_seven_and_five_columns_with_both_separators(ymir_in):
    one = asset(ymir_in, "11aa")
    two = asset(ymir_in, "22bb")
    anno_one = write(
        ymir_in / "annotations/aa/11aa.txt",
        "0, 1, 2, 10, 20, -1.0, 0.0\n2, 5, 5, 5, 5, 0.9, 0.25\n",
    )
    anno_two = write(ymir_in / "annotations/bb/22bb.txt", "1,3,4,13,9\n")
    index = write_index(ymir_in / "train-index.tsv", [(one, anno_one), (two, anno_two)])
    items = read_split(index, CLASSES, "ark", 2)
    assert [item.image for item in items] == [one, two]
    assert items[0].annotations == [
        Annotation(0, (1, 2, 10, 19)),
        Annotation(2, (5, 5, 1, 1)),
    ]
    assert items[1].annotations == [Annotation(1, (3, 4, 11, 6))]
    assert all(annotation.mask is None for item in items for annotation in item.annotations)
    assert (items[0].width, items[0].height) == (40, 30)


def test_ark_empty_file_is_a_negative_image(ymir_in):
    image = asset(ymir_in, "33cc")
    anno = write(ymir_in / "annotations/cc/33cc.txt", "")
    items = read_split(write_index(ymir_in / "t.tsv", [(image, anno)]), CLASSES, "ark", 2)
    assert items == [DatasetItem(image, [], 40, 30)]


def test_training_line_without_annotation_is_negative(ymir_in):
    image = asset(ymir_in, "33cd")
    items = read_split(write_index(ymir_in / "t.tsv", [(image,)]), CLASSES, "ark", 2)
    assert len(items) == 1
    assert items[0].annotations == []


def test_ark_class_out_of_range_is_skipped_with_warning(ymir_in, caplog):
    image = asset(ymir_in, "44dd")
    lines = "3, 1, 1, 5, 5\n-1, 1, 1, 5, 5\n1, 1, 1, 5, 5\n"
    anno = write(ymir_in / "annotations/dd/44dd.txt", lines)
    with caplog.at_level(logging.WARNING):
        items = read_split(write_index(ymir_in / "t.tsv", [(image, anno)]), CLASSES, "ark", 2)
    assert items[0].annotations == [Annotation(1, (1, 1, 5, 5))]
    assert "class index 3" in caplog.text


@pytest.mark.parametrize("bad", ["0, 1, 2.5, 10, 20", "0, one, 2, 10, 20", "x, 1, 2, 10, 20"])
def test_ark_non_integer_is_a_dataset_error_naming_file_and_line(ymir_in, bad):
    image = asset(ymir_in, "55ee")
    anno = write(ymir_in / "annotations/ee/55ee.txt", f"0, 1, 1, 5, 5\n{bad}\n")
    with pytest.raises(ExecutorError) as caught:
        read_split(write_index(ymir_in / "t.tsv", [(image, anno)]), CLASSES, "ark", 2)
    assert caught.value.code == ErrorCode.DATASET
    assert f"{anno}:2" in caught.value.message


@pytest.mark.parametrize("bad", ["0, 1, 2, 10", "0 1 2 10 20", "0, 1, 2, 10, 20, abc, 0.0"])
def test_ark_malformed_line(ymir_in, bad):
    image = asset(ymir_in, "56ee")
    anno = write(ymir_in / "annotations/ee/56ee.txt", f"{bad}\n")
    with pytest.raises(ExecutorError) as caught:
        read_split(write_index(ymir_in / "t.tsv", [(image, anno)]), CLASSES, "ark", 2)
    assert caught.value.code == ErrorCode.DATASET
    assert f"{anno}:1" in caught.value.message


def test_ark_integral_floats_are_tolerated(ymir_in):
    image = asset(ymir_in, "57ee")
    anno = write(ymir_in / "annotations/ee/57ee.txt", "1, 2.0, 3, 4.0, 5\n")
    items = read_split(write_index(ymir_in / "t.tsv", [(image, anno)]), CLASSES, "ark", 2)
    assert items[0].annotations == [Annotation(1, (2, 3, 3, 3))]


def test_ark_empty_box_is_skipped(ymir_in, caplog):
    image = asset(ymir_in, "58ee")
    anno = write(ymir_in / "annotations/ee/58ee.txt", "1, 10, 3, 4, 5\n")
    with caplog.at_level(logging.WARNING):
        items = read_split(write_index(ymir_in / "t.tsv", [(image, anno)]), CLASSES, "ark", 2)
    assert items[0].annotations == []
    assert "empty box" in caplog.text


def test_missing_annotation_file_is_a_dataset_error(ymir_in):
    image = asset(ymir_in, "59ee")
    missing = ymir_in / "annotations/ee/59ee.txt"
    with pytest.raises(ExecutorError) as caught:
        read_split(write_index(ymir_in / "t.tsv", [(image, missing)]), CLASSES, "ark", 2)
    assert caught.value.code == ErrorCode.DATASET
    assert str(missing) in caught.value.message


def test_legacy_is_always_ark_first_five_columns(ymir_in):
    image = asset(ymir_in, "66ff")
    # YMIR 1.1 ignores export_format; extra columns (even odd ones) are not read.
    anno = write(ymir_in / "annotations/ff/66ff.txt", "2, 0, 0, 9, 9, whatever\n")
    index = write_index(ymir_in / "t.tsv", [(image, anno)])
    items = read_split(index, CLASSES, "voc", 2, legacy=True)
    assert items[0].annotations == [Annotation(2, (0, 0, 10, 10))]


def test_read_split_accepts_a_raw_export_format_value(ymir_in):
    image = asset(ymir_in, "67ff")
    anno = write(ymir_in / "annotations/ff/67ff.txt", "0, 0, 0, 1, 1\n")
    index = write_index(ymir_in / "t.tsv", [(image, anno)])
    for fmt in ("det-ark:raw", "det-ark", "ark", " ARK "):
        assert read_split(index, CLASSES, fmt, 2)[0].annotations == [Annotation(0, (0, 0, 2, 2))]


@pytest.mark.parametrize(
    ("fmt", "object_type"), [("ark", 3), ("voc", 4), ("ark:raw", 3), ("seg-mask", 2), ("yolo", 2)]
)
def test_read_split_refuses_the_wrong_family(ymir_in, fmt, object_type):
    index = write(ymir_in / "t.tsv", "")
    with pytest.raises(ExecutorError) as caught:
        read_split(index, CLASSES, fmt, object_type)
    assert caught.value.code == ErrorCode.CONFIG


# --- voc --------------------------------------------------------------------------------------


def test_voc_platform_file(ymir_in):
    image = asset(ymir_in, "77aa")
    objects = [
        (" Dog ", 1, 2, 10, 20),
        ("PERSON", 0, 0, 39, 29),
        ("tree", 1, 1, 5, 5),
        ("cat", 3, 3, 3, 3),
    ]
    anno = write(ymir_in / "annotations/aa/77aa.xml", voc_xml(image, objects))
    items = read_split(write_index(ymir_in / "t.tsv", [(image, anno)]), CLASSES, "voc", 2)
    assert items[0].annotations == [
        Annotation(1, (1, 2, 10, 19)),
        Annotation(2, (0, 0, 40, 30)),
        Annotation(0, (3, 3, 1, 1)),
    ]


def test_voc_without_objects_is_negative(ymir_in):
    image = asset(ymir_in, "78aa")
    anno = write(ymir_in / "annotations/aa/78aa.xml", voc_xml(image, []))
    items = read_split(write_index(ymir_in / "t.tsv", [(image, anno)]), CLASSES, "voc", 2)
    assert items[0].annotations == []


def test_voc_matches_class_names_case_insensitively(ymir_in):
    image = asset(ymir_in, "79aa")
    anno = write(ymir_in / "annotations/aa/79aa.xml", voc_xml(image, [("dog", 1, 1, 2, 2)]))
    items = read_split(write_index(ymir_in / "t.tsv", [(image, anno)]), ["Cat", "Dog "], "voc", 2)
    assert items[0].annotations == [Annotation(1, (1, 1, 2, 2))]


def test_voc_bad_xml(ymir_in):
    image = asset(ymir_in, "7aaa")
    anno = write(ymir_in / "annotations/aa/7aaa.xml", "<annotation>\n<object><name>dog</name>\n")
    with pytest.raises(ExecutorError) as caught:
        read_split(write_index(ymir_in / "t.tsv", [(image, anno)]), CLASSES, "voc", 2)
    assert caught.value.code == ErrorCode.DATASET
    assert f"{anno}:3" in caught.value.message


def test_voc_non_integer_coordinate_names_file_line_and_object(ymir_in):
    image = asset(ymir_in, "7baa")
    text = voc_xml(image, [("dog", 1, 1, 2, 2), ("cat", 1, "1.5", 2, 2)])
    # Put the second object on line 2 to see the line number follow it.
    text = text.replace("</object><object>", "</object>\n<object>")
    anno = write(ymir_in / "annotations/aa/7baa.xml", text)
    with pytest.raises(ExecutorError) as caught:
        read_split(write_index(ymir_in / "t.tsv", [(image, anno)]), CLASSES, "voc", 2)
    assert caught.value.code == ErrorCode.DATASET
    assert f"{anno}:2" in caught.value.message
    assert "ymin" in caught.value.message


def test_voc_object_without_bndbox(ymir_in):
    image = asset(ymir_in, "7caa")
    anno = write(
        ymir_in / "annotations/aa/7caa.xml",
        "<annotation><object><name>dog</name></object></annotation>",
    )
    with pytest.raises(ExecutorError) as caught:
        read_split(write_index(ymir_in / "t.tsv", [(image, anno)]), CLASSES, "voc", 2)
    assert caught.value.code == ErrorCode.DATASET
    assert "bndbox" in caught.value.message


# --- coco -------------------------------------------------------------------------------------


def coco_split(ymir_in, document, stems, name="train-index.tsv"):
    json_path = ymir_in / "annotations" / "coco-annotations.json"
    if not json_path.exists():
        write(json_path, json.dumps(document))
    rows = [(ymir_in / "assets" / stem[-2:] / f"{stem}.png", json_path) for stem in stems]
    return write_index(ymir_in / name, rows)


def detection_document():
    # Only dog and person occur: ids are class_names.index(name), not list positions.
    images = [coco_image(1, "01aa.png"), coco_image(2, "02bb.png"), coco_image(3, "03cc.png")]
    annotations = [
        coco_annotation(1, 1, 2, [1.4, 2.6, 10.2, 5.0]),
        coco_annotation(2, 1, 1, [0, 0, 40, 30]),
        coco_annotation(3, 2, 9, [1, 1, 3, 3]),
        coco_annotation(4, 3, 2, [5, 5, 0, 3]),
    ]
    return coco_document(images, [(1, "dog"), (2, "Person"), (9, "tree")], annotations)


def test_coco_detection_maps_categories_by_name(ymir_in):
    for stem in ("01aa", "02bb", "03cc"):
        asset(ymir_in, stem)
    index = coco_split(ymir_in, detection_document(), ["01aa", "02bb", "03cc"])
    items = read_split(index, CLASSES, "coco", 2)
    assert [item.image.name for item in items] == ["01aa.png", "02bb.png", "03cc.png"]
    # person -> 2, dog -> 1; box edges rounded: x 1.4 -> 1, right 11.6 -> 12.
    assert items[0].annotations == [Annotation(2, (1, 3, 11, 5)), Annotation(1, (0, 0, 40, 30))]
    # "tree" is not a class, the empty box is dropped.
    assert items[1].annotations == []
    assert items[2].annotations == []
    assert all(a.mask is None for item in items for a in item.annotations)
    assert all(isinstance(v, int) for a in items[0].annotations for v in a.box)


def test_detection_reads_the_boxes_of_a_seg_coco_export(ymir_in):
    """YMIR 2.1-2.4 export detection data as COCO only under ``seg-coco``: a box annotation
    then has ``segmentation: {}`` and ``area: 0`` (``_single_task_annotations_to_coco``)."""
    asset(ymir_in, "05ee")
    boxes = [
        coco_annotation(1, 1, 1, [3, 4, 10, 8], {}),
        coco_annotation(2, 1, 2, [0, 0, 5, 5], {}),
    ]
    for annotation in boxes:
        annotation["area"] = 0
    document = coco_document([coco_image(1, "05ee.png")], [(1, "dog"), (2, "person")], boxes)
    items = read_split(coco_split(ymir_in, document, ["05ee"]), CLASSES, "seg-coco:raw", 2)
    assert items[0].annotations == [Annotation(1, (3, 4, 10, 8)), Annotation(2, (0, 0, 5, 5))]


def test_coco_ids_do_not_follow_list_position(ymir_in):
    asset(ymir_in, "04dd")
    images = [coco_image(7, "04dd.png")]
    document = coco_document(images, [(2, "person")], [coco_annotation(1, 7, 2, [0, 0, 2, 2])])
    items = read_split(coco_split(ymir_in, document, ["04dd"]), CLASSES, "coco", 2)
    assert items[0].annotations == [Annotation(2, (0, 0, 2, 2))]


def test_coco_images_are_matched_by_basename(ymir_in):
    asset(ymir_in, "05ee")
    images = [coco_image(1, "/somewhere/else/05ee.png")]
    document = coco_document(images, [(0, "cat")], [coco_annotation(1, 1, 0, [1, 1, 2, 2])])
    items = read_split(coco_split(ymir_in, document, ["05ee"]), CLASSES, "coco", 2)
    assert items[0].annotations == [Annotation(0, (1, 1, 2, 2))]


def test_coco_unlisted_image_is_negative_with_warning(ymir_in, caplog):
    asset(ymir_in, "06ff")
    document = coco_document([], [(0, "cat")], [])
    with caplog.at_level(logging.WARNING):
        items = read_split(coco_split(ymir_in, document, ["06ff"]), CLASSES, "coco", 2)
    assert items[0].annotations == []
    assert "06ff.png" in caplog.text


def test_coco_json_is_parsed_once_for_all_lines_and_splits(ymir_in, monkeypatch):
    for stem in ("01aa", "02bb", "03cc"):
        asset(ymir_in, stem)
    document = detection_document()
    train = coco_split(ymir_in, document, ["01aa", "02bb"], "train-index.tsv")
    val = coco_split(ymir_in, document, ["03cc"], "val-index.tsv")
    calls = []
    original = json.loads

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(json, "loads", counting)
    dataset._COCO_CACHE.clear()
    assert len(read_split(train, CLASSES, "coco", 2)) == 2
    assert len(read_split(val, CLASSES, "coco", 2)) == 1
    assert len(calls) == 1


def test_coco_bad_json_names_file_and_line(ymir_in):
    asset(ymir_in, "08aa")
    json_path = write(ymir_in / "annotations/coco-annotations.json", '{\n"images": [\n,]\n}')
    index = write_index(ymir_in / "t.tsv", [(ymir_in / "assets/aa/08aa.png", json_path)])
    with pytest.raises(ExecutorError) as caught:
        read_split(index, CLASSES, "coco", 2)
    assert caught.value.code == ErrorCode.DATASET
    assert f"{json_path}:3" in caught.value.message


@pytest.mark.parametrize(
    "content",
    [
        "[]",
        '{"categories": []}',
        '{"images": [], "categories": 3}',
        '{"images": [1], "categories": []}',
        '{"images": [], "categories": [{"name": "cat"}]}',
    ],
)
def test_coco_not_a_coco_document(ymir_in, content):
    asset(ymir_in, "09aa")
    json_path = write(ymir_in / "annotations/coco-annotations.json", content)
    index = write_index(ymir_in / "t.tsv", [(ymir_in / "assets/aa/09aa.png", json_path)])
    with pytest.raises(ExecutorError) as caught:
        read_split(index, CLASSES, "coco", 2)
    assert caught.value.code == ErrorCode.DATASET
    assert str(json_path) in caught.value.message


def test_coco_bad_bbox(ymir_in):
    asset(ymir_in, "0aaa")
    images = [coco_image(1, "0aaa.png")]
    document = coco_document(images, [(0, "cat")], [coco_annotation(1, 1, 0, ["a", 1, 2, 2])])
    with pytest.raises(ExecutorError) as caught:
        read_split(coco_split(ymir_in, document, ["0aaa"]), CLASSES, "coco", 2)
    assert caught.value.code == ErrorCode.DATASET
    assert "bbox" in caught.value.message


def segmentation_document():
    first = np.zeros((30, 40), dtype=bool)
    first[2:6, 3:9] = True
    second = np.zeros((30, 40), dtype=bool)
    second[20:25, 30:40] = True
    polygon = [[10, 10, 20, 10, 20, 15, 10, 15]]
    annotations = [
        coco_annotation(1, 1, 0, [3, 2, 6, 4], encode_rle(first)),
        coco_annotation(2, 1, 0, [30, 20, 10, 5], encode_rle(second)),
        coco_annotation(3, 1, 2, [10, 10, 10, 5], polygon),
        coco_annotation(4, 2, 2, [1, 1, 2, 2]),
    ]
    images = [coco_image(1, "0baa.png"), coco_image(2, "0cbb.png")]
    return coco_document(images, [(0, "cat"), (2, "person")], annotations), first, second


@pytest.mark.parametrize("object_type", [3, 4])
def test_seg_coco_decodes_rle_and_polygons(ymir_in, object_type, caplog):
    asset(ymir_in, "0baa")
    asset(ymir_in, "0cbb")
    document, first, second = segmentation_document()
    index = coco_split(ymir_in, document, ["0baa", "0cbb"])
    with caplog.at_level(logging.WARNING):
        items = read_split(index, CLASSES, "coco", object_type)
    annotations = items[0].annotations
    # Two cat regions stay two annotations, even for semantic segmentation.
    assert [a.class_id for a in annotations] == [0, 0, 2]
    assert [a.box for a in annotations] == [(3, 2, 6, 4), (30, 20, 10, 5), (10, 10, 10, 5)]
    for annotation in annotations:
        assert annotation.mask.dtype == bool
        assert annotation.mask.shape == (30, 40)
        assert annotation.score is None
    assert (annotations[0].mask == first).all()
    assert (annotations[1].mask == second).all()
    assert mask_area(annotations[2].mask) == 50
    # A box without a mask cannot train segmentation: skipped with a warning.
    assert items[1].annotations == []
    assert "no segmentation" in caplog.text


def test_seg_coco_uncompressed_rle_and_missing_bbox(ymir_in):
    asset(ymir_in, "0dcc")
    mask = np.zeros((30, 40), dtype=bool)
    mask[0:2, 0:3] = True
    runs = {"size": [30, 40], "counts": [0, 2, 28, 2, 28, 2, 1138]}
    annotation = coco_annotation(1, 1, 1, [0, 0, 3, 2], runs)
    del annotation["bbox"]
    document = coco_document([coco_image(1, "0dcc.png")], [(1, "dog")], [annotation])
    items = read_split(coco_split(ymir_in, document, ["0dcc"]), CLASSES, "seg-coco:raw", 4)
    assert items[0].annotations[0].box == (0, 0, 3, 2)
    assert (items[0].annotations[0].mask == mask).all()


def test_seg_coco_mask_of_the_wrong_size(ymir_in):
    asset(ymir_in, "0edd")
    rle = encode_rle(np.ones((10, 10), dtype=bool))
    annotations = [coco_annotation(1, 1, 0, [0, 0, 10, 10], rle)]
    document = coco_document([coco_image(1, "0edd.png")], [(0, "cat")], annotations)
    with pytest.raises(ExecutorError) as caught:
        read_split(coco_split(ymir_in, document, ["0edd"]), CLASSES, "coco", 3)
    assert caught.value.code == ErrorCode.DATASET
    assert "coco-annotations.json" in caught.value.message


def test_seg_coco_bad_rle(ymir_in):
    asset(ymir_in, "0fee")
    rle = {"size": [30, 40], "counts": "not really"}
    annotations = [coco_annotation(1, 1, 0, [0, 0, 10, 10], rle)]
    document = coco_document([coco_image(1, "0fee.png")], [(0, "cat")], annotations)
    with pytest.raises(ExecutorError) as caught:
        read_split(coco_split(ymir_in, document, ["0fee"]), CLASSES, "coco", 4)
    assert caught.value.code == ErrorCode.DATASET
    assert "segmentation" in caught.value.message


def test_detection_ignores_segmentations(ymir_in):
    asset(ymir_in, "0baa")
    asset(ymir_in, "0cbb")
    document, _, _ = segmentation_document()
    items = read_split(coco_split(ymir_in, document, ["0baa", "0cbb"]), CLASSES, "coco", 2)
    assert [a.box for a in items[0].annotations] == [(3, 2, 6, 4), (30, 20, 10, 5), (10, 10, 10, 5)]
    assert all(a.mask is None for a in items[0].annotations)
    # Detection keeps the box-only annotation.
    assert items[1].annotations == [Annotation(2, (1, 1, 2, 2))]


# --- images inside splits ---------------------------------------------------------------------


def test_corrupt_images_are_skipped_with_a_warning(ymir_in, caplog):
    good = asset(ymir_in, "a1aa")
    corrupt = ymir_in / "assets/bb/a2bb.jpg"
    corrupt.parent.mkdir(parents=True)
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    missing = ymir_in / "assets/cc/a3cc.png"
    rows = []
    for image in (good, corrupt, missing):
        anno = write(ymir_in / "annotations" / (image.stem + ".txt"), "0, 1, 1, 2, 2\n")
        rows.append((image, anno))
    with caplog.at_level(logging.WARNING):
        items = read_split(write_index(ymir_in / "t.tsv", rows), CLASSES, "ark", 2)
    assert [item.image for item in items] == [good]
    assert str(corrupt) in caplog.text
    assert str(missing) in caplog.text
    assert "skipped 2 of 3" in caplog.text


def test_truncated_training_image_is_skipped(ymir_in, caplog):
    full = asset(ymir_in, "a4dd", format="JPEG", size=(64, 48))
    full.write_bytes(full.read_bytes()[:-200])
    with caplog.at_level(logging.WARNING):
        items = read_split(write_index(ymir_in / "t.tsv", [(full,)]), CLASSES, "ark", 2)
    assert items == []
    assert str(full) in caplog.text


@pytest.mark.parametrize(
    ("manifest_file", "object_type_key", "expected"),
    [(False, False, "2.0"), (True, False, "2.1-2.3"), (True, True, "2.4+")],
)
def test_platform_range_from_the_keys_each_version_writes(manifest_file, object_type_key, expected):
    assert platform_range(manifest_file, object_type_key) == expected


# (export_format, object_type, platform range) -> what the message must tell the user to choose,
# or None: that range exports the format, so an empty index is an empty dataset.
EMPTY_EXPORTS = [
    ("coco:raw", 2, "2.0", "choose 'ark:raw' or 'voc:raw'"),
    ("coco:raw", 2, "2.1-2.3", "choose 'ark:raw', 'voc:raw' or 'seg-coco:raw'"),
    ("coco:raw", 2, "2.4+", "choose 'ark:raw', 'voc:raw' or 'seg-coco:raw' (on YMIR 2.5 "),
    ("seg-coco:raw", 2, "2.0", "choose 'ark:raw' or 'voc:raw'"),
    ("coco:raw", 3, "2.1-2.3", "choose 'seg-coco:raw'"),
    ("coco:raw", 4, "2.4+", "choose 'seg-coco:raw' (on YMIR 2.5 "),
    ("seg-coco:raw", 3, "2.0", "this executor needs YMIR >= 2.1"),
    ("seg-coco:raw", 2, "2.1-2.3", None),
    ("seg-coco:raw", 4, "2.4+", None),
    ("ark:raw", 2, "2.0", None),
    ("voc:raw", 2, "2.4+", None),
    ("", 2, "2.0", None),
]


@pytest.mark.parametrize(("export_format", "object_type", "platform", "choice"), EMPTY_EXPORTS)
def test_an_empty_export_names_the_format_to_choose(export_format, object_type, platform, choice):
    error = empty_export_error("train", export_format, object_type, platform)
    if choice is None:
        assert error is None
        return
    assert error.code == ErrorCode.CONFIG
    assert error.message.startswith("the train index is empty: ")
    assert f"{export_format!r} since 2." in error.message
    assert choice in error.message


def test_require_items():
    items = [DatasetItem(image=Path("/a.jpg"))]
    assert require_items(items, "train") is items
    with pytest.raises(ExecutorError) as caught:
        require_items([], "val")
    assert caught.value.code == ErrorCode.DATASET
    assert caught.value.message == "no valid image left in the val set"


def test_odd_images_and_names(ymir_in):
    # Content and extension disagree, 1-channel and RGBA PNGs, spaces and non-ASCII names.
    mismatch = asset(ymir_in, "b1aa", format="PNG", ext="jpg")
    grey = make_image(ymir_in / "assets", "grey scale.png", mode="L")
    rgba = make_image(ymir_in / "assets", "ünïcödé 图.png", mode="RGBA", size=(7, 5))
    bmp = make_image(ymir_in / "assets", "c.bmp", format="BMP")
    rows = [(path,) for path in (mismatch, grey, rgba, bmp)]
    items = read_split(write_index(ymir_in / "t.tsv", rows), CLASSES, "ark", 2)
    assert [item.image for item in items] == [mismatch, grey, rgba, bmp]
    assert (items[2].width, items[2].height) == (7, 5)


def test_exif_rotation_does_not_change_the_size(ymir_in):
    path = ymir_in / "assets/ee/b2ee.jpg"
    path.parent.mkdir(parents=True)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.new("RGB", (40, 20)).save(path, format="JPEG", exif=exif.tobytes())
    items = read_split(write_index(ymir_in / "t.tsv", [(path,)]), CLASSES, "ark", 2)
    assert (items[0].width, items[0].height) == (40, 20)
