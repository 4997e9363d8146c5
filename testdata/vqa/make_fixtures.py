#!/usr/bin/env python3
"""Tiny VQA benchmark fixtures in every layout `mt convert vqa` reads (run by hand).

    /work/venv/bin/python testdata/vqa/make_fixtures.py     (needs pyarrow and Pillow)

Writes, next to this file, miniature copies of the real layouts with the real field
names (values invented, images 16x16):
  vqa-rad/            VQA_RAD Dataset Public.json + VQA_RAD Image Folder/
  vqa-rad-hub/data/   {train,test}-00000-of-00001.parquet (flaviagiammarino/vqa-rad schema)
  slake/              train.json, validate.json, test.json + imgs/xmlabN/source.jpg
  pathvqa/            qas/{train,test}/<split>_qa.pkl (pickle protocols 2 and 4) + images/
  path-vqa-hub/data/  test-00000-of-00001.parquet (flaviagiammarino/path-vqa schema)
"""

import io
import json
import pickle
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

HERE = Path(__file__).resolve().parent


def jpeg(seed):
    img = Image.new("RGB", (16, 16), (seed * 40 % 256, 90, 200 - seed * 30 % 200))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def write(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def vqa_rad():
    root = HERE / "vqa-rad"
    rows = [
        (0, "freeform", "synpic1.jpg", "HEAD", "Are regions of the brain infarcted?", "Yes", "CLOSED", "PRES"),
        (1, "para", "synpic1.jpg", "HEAD", "Is there brain infarction?", "yes", "CLOSED", "PRES"),
        (2, "test_freeform", "synpic1.jpg", "HEAD", "Which lobe is affected?", "Left temporal lobe", "OPEN", "POS"),
        (3, "test_para", "synpic2.jpg", "CHEST", "How many ribs are fractured?", 2, "OPEN ", "COUNT"),
        (4, "test_freeform", "synpic2.jpg", "CHEST", "Is the heart enlarged?", "No", "CLOSED", "SIZE"),
        (5, "test_freeform", "synpic2.jpg", "CHEST", "Broken record", "x", "MAYBE", "OTHER"),
        (6, "test_freeform", "synpic9.jpg", "ABD", "Is the liver normal?", "yes", "CLOSED", "ABN"),
    ]
    records = [
        {"qid": q, "phrase_type": p, "qid_linked_id": f"link-{q}", "image_case_url": "https://medpix.example/case",
         "image_name": img, "image_organ": organ, "evaluation": "not evaluated", "question": question,
         "question_rephrase": "NULL", "question_relation": "NULL", "question_frame": "NULL",
         "question_type": qtype, "answer": answer, "answer_type": atype}
        for q, p, img, organ, question, answer, atype, qtype in rows
    ]
    write(root / "VQA_RAD Dataset Public.json", json.dumps(records, indent=1).encode())
    for i, name in enumerate(["synpic1.jpg", "synpic2.jpg"]):  # synpic9.jpg is missing on purpose
        write(root / "VQA_RAD Image Folder" / name, jpeg(i))


def hub_parquet(path, rows):
    features = {"image": {"_type": "Image"}, "question": {"dtype": "string", "_type": "Value"},
                "answer": {"dtype": "string", "_type": "Value"}}
    image_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    table = pa.table({
        "image": pa.array([{"bytes": b, "path": p} for b, _, _, p in rows], type=image_type),
        "question": [q for _, q, _, _ in rows],
        "answer": [a for _, _, a, _ in rows],
    })
    table = table.replace_schema_metadata({"huggingface": json.dumps({"info": {"features": features}})})
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)


def slake():
    root = HERE / "slake"
    def rec(qid, img, q, a, lang, atype, modality, location, content):
        return {"img_id": img, "img_name": f"xmlab{img}/source.jpg", "question": q, "answer": a, "q_lang": lang,
                "location": location, "modality": modality, "answer_type": atype, "base_type": "vqa",
                "content_type": content, "triple": ["vhead", "_", "_"], "qid": qid}
    splits = {
        "train": [rec(1, 1, "What modality is used to take this image?", "MRI", "en", "OPEN", "MRI", "Brain", "Modality")],
        "validate": [rec(2, 1, "Is this a CT image?", "No", "en", "CLOSED", "MRI", "Brain", "Modality")],
        "test": [
            rec(11934, 1, "Which organ is abnormal?", "Brain", "en", "OPEN", "MRI", "Brain", "Organ"),
            rec(11935, 1, "这张图片的成像方式是什么?", "核磁共振", "zh", "OPEN", "MRI", "Brain", "Modality"),
            rec(11936, 2, "Does the picture contain lung?", "Yes", "en", "CLOSED", "X-Ray", "Chest", "Organ"),
            rec(11937, 2, "Where is the abnormality?", "Right Lung, Lower Left", "en", "OPEN", "X-Ray", "Chest", "Position"),
        ],
    }
    for split, records in splits.items():
        write(root / f"{split}.json", json.dumps(records, ensure_ascii=False, indent=1).encode())
    for i in (1, 2):
        write(root / "imgs" / f"xmlab{i}" / "source.jpg", jpeg(i))


def pathvqa():
    root = HERE / "pathvqa"
    test = [
        {"image": "test_0001", "question": "Does this image show necrosis?", "answer": "yes"},
        {"image": "test_0001", "question": "What does this image show?", "answer": "coagulative necrosis"},
        {"image": "test_0002", "question": "Is the nucleus enlarged?", "answer": "no"},
    ]
    train = [{"image": "train_0001", "question": "What is present?", "answer": "granuloma"}]
    write(root / "qas" / "test" / "test_qa.pkl", pickle.dumps(test, protocol=4))
    write(root / "qas" / "train" / "train_qa.pkl", pickle.dumps(train, protocol=2))
    for name, seed in [("test/test_0001.jpg", 3), ("test/test_0002.jpg", 4), ("train/train_0001.jpg", 5)]:
        write(root / "images" / name, jpeg(seed))


def main():
    vqa_rad()
    a, b = jpeg(0), jpeg(1)
    hub_parquet(HERE / "vqa-rad-hub" / "data" / "train-00000-of-00001.parquet",
                [(a, "Are regions of the brain infarcted?", "yes", None)])
    hub_parquet(HERE / "vqa-rad-hub" / "data" / "test-00000-of-00001.parquet",
                [(a, "Which lobe is affected?", "left temporal lobe", None),
                 (b, "Is the heart enlarged?", "no", None),
                 (b, "How many ribs are fractured?", "2", None)])
    slake()
    pathvqa()
    hub_parquet(HERE / "path-vqa-hub" / "data" / "test-00000-of-00001.parquet",
                [(jpeg(3), "Does this image show necrosis?", "yes", "test_0001.jpg"),
                 (jpeg(3), "What does this image show?", "coagulative necrosis", "test_0001.jpg")])


if __name__ == "__main__":
    main()
