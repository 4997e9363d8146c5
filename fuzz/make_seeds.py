"""Seed corpora for the fuzz targets (fuzz/seeds/<target>/), from testdata/ and a few
hand-made files. Run by hand with a Python that has torch and Pillow:
    python fuzz/make_seeds.py
A target whose input starts with a selector byte (checkpoint, tar_zst, vqa, medical)
gets seeds with that byte in front. Hostile cases (path escapes, lying headers, pickles
naming callables) are seeds too, so every run starts from them."""
import io, json, os, pathlib, shutil, struct, tarfile

ROOT = pathlib.Path(__file__).resolve().parent.parent
TD = ROOT / "testdata"
OUT = ROOT / "fuzz" / "seeds"


def put(target, name, data, selector=None):
    d = OUT / target
    d.mkdir(parents=True, exist_ok=True)
    if isinstance(data, pathlib.Path):
        data = data.read_bytes()
    if selector is not None:
        data = bytes([selector]) + data
    (d / name).write_bytes(data)


def safetensors(tensors, lie=None):
    header, blob = {}, b""
    for name, (shape, values) in tensors.items():
        raw = struct.pack(f"<{len(values)}f", *values)
        header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [len(blob), len(blob) + len(raw)]}
        blob += raw
    if lie:
        lie(header)
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + blob


def tar(members):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as t:
        for name, kind, data in members:
            info = tarfile.TarInfo(name)
            if kind == "file":
                info.size = len(data)
                t.addfile(info, io.BytesIO(data))
            else:
                info.type = {"symlink": tarfile.SYMTYPE, "link": tarfile.LNKTYPE, "dev": tarfile.CHRTYPE}[kind]
                info.linkname = data.decode()
                t.addfile(info)
    return buf.getvalue()


def main():
    shutil.rmtree(OUT, ignore_errors=True)
    # answers / ground truth
    put("answers", "gt.json", TD / "eval/gt.json")
    put("answers", "pred.jsonl", TD / "eval/pred.jsonl")
    # config.json
    for m in ["tiny-llava", "tiny-llava-hf", "tiny-llava-s2", "tiny-clip"]:
        put("model_config", f"{m}.json", TD / f"models/{m}/config.json")
    # checkpoints: 0 = safetensors, 1 = .bin, 2 = index
    ok = {"a.weight": ([2, 2], [1, 2, 3, 4]), "b": ([3], [5, 6, 7])}
    put("checkpoint", "ok.safetensors", safetensors(ok), 0)
    put("checkpoint", "past_end.safetensors",
        safetensors(ok, lambda h: h["b"].update(data_offsets=[16, 4096])), 0)
    put("checkpoint", "huge_shape.safetensors",
        safetensors(ok, lambda h: h["b"].update(shape=[1 << 40, 1 << 30])), 0)
    put("checkpoint", "overlap.safetensors",
        safetensors(ok, lambda h: h["b"].update(data_offsets=[0, 12])), 0)
    import torch
    buf = io.BytesIO()
    torch.save({"w": torch.arange(6, dtype=torch.float32).reshape(2, 3)}, buf)
    put("checkpoint", "ok.bin", buf.getvalue(), 1)
    # A pickle that names os.system: must be refused, never run.
    evil = io.BytesIO()
    import zipfile
    with zipfile.ZipFile(evil, "w", zipfile.ZIP_STORED) as z:
        z.writestr("archive/data.pkl", b"\x80\x02cos\nsystem\nX\x15\x00\x00\x00touch /tmp/mt-fuzz-pwned\x85R.")
    put("checkpoint", "evil.bin", evil.getvalue(), 1)
    put("checkpoint", "index.json", TD / "models/tiny-llava/model.safetensors.index.json", 2)
    # tar.zst shards: 0 = raw tar (compressed by the target), 1 = zstd as given
    put("tar_zst", "shard.tar.zst", TD / "medtrinity-full/25M_accessible/images_000.tar.zst", 1)
    png = (TD / "images/phantom.png").read_bytes()[:64]
    put("tar_zst", "ok.tar", tar([("a/x.png", "file", png)]), 0)
    put("tar_zst", "escape.tar", tar([("../evil.png", "file", png), ("/abs.png", "file", png),
                                     ("a/../../up.png", "file", png)]), 0)
    put("tar_zst", "links.tar", tar([("l.png", "symlink", b"/etc/passwd"), ("h.png", "link", b"../x"),
                                    ("d.png", "dev", b"")]), 0)
    # VQA layouts: 0 PathVQA pickle, 1 SLAKE json, 2 VQA-RAD json, 3 LLaVA eval json
    put("vqa", "pathvqa.pkl", TD / "vqa/pathvqa/qas/test/test_qa.pkl", 0)
    put("vqa", "pathvqa_train.pkl", TD / "vqa/pathvqa/qas/train/train_qa.pkl", 0)
    put("vqa", "evil.pkl", b"cos\nsystem\n(S'touch /tmp/mt-fuzz-pwned'\ntR.", 0)
    put("vqa", "slake.json", TD / "vqa/slake/test.json", 1)
    put("vqa", "vqa_rad.json", TD / "vqa/vqa-rad/VQA_RAD Dataset Public.json", 2)
    put("vqa", "llava_eval.json", TD / "eval/gt.json", 3)
    # DICOM / NIfTI: 0 .dcm, 1 .nii, 2 .nii.gz
    for f in ["mono1.dcm", "multiframe.dcm", "rgb.dcm", "MR_small.dcm", "MR_truncated.dcm"]:
        put("medical", f, TD / f"medical/dicom/{f}", 0)
    put("medical", "standard.nii.gz", TD / "medical/nifti/standard.nii.gz", 2)
    put("medical", "tiny4d.nii.gz", TD / "medical/nifti/tiny4d.nii.gz", 2)
    import gzip
    put("medical", "tiny4d.nii", gzip.decompress((TD / "medical/nifti/tiny4d.nii.gz").read_bytes()), 1)
    # masks
    from PIL import Image
    for mode, name in [("L", "grey.png"), ("I;16", "labels16.png"), ("RGB", "rgb.png"), ("P", "palette.png")]:
        im = Image.new(mode if mode != "P" else "P", (12, 9))
        for x in range(3, 7):
            for y in range(2, 5):
                im.putpixel((x, y), (255, 0, 0) if mode == "RGB" else 2)
        b = io.BytesIO()
        im.save(b, format="PNG")
        put("mask", name, b.getvalue())
    # LLaVA records
    put("llava_records", "instruct.jsonl", TD / "llava/medtrinity_instruct.jsonl")
    put("llava_records", "instruct.json", TD / "llava/medtrinity_instruct.json")
    # Hub answers: a tree page (git and LFS files, a folder), hostile entries, a revision,
    # and header lines ("request URL\nheader value").
    hub_json_seeds(put)
    parquet_seeds(put)
    for t in sorted(OUT.iterdir()):
        print(t.name, len(list(t.iterdir())), sum(f.stat().st_size for f in t.iterdir()))


def hub_json_seeds(put):
    sha1, sha256 = "a" * 40, "b" * 64
    page = [{"type": "directory", "path": "sub", "oid": sha1, "size": 0},
            {"type": "file", "path": "config.json", "oid": sha1, "size": 120},
            {"type": "file", "path": "sub/model.safetensors", "oid": sha1, "size": 134,
             "lfs": {"oid": sha256, "size": 9000000000, "pointerSize": 134}}]
    put("hub_json", "tree.json", json.dumps(page).encode(), 0)
    evil = [{"type": "file", "path": "../../etc/passwd", "oid": sha1, "size": 1},
            {"type": "file", "path": "/abs", "oid": sha1, "size": 1},
            {"type": "file", "path": "a", "oid": "../../x", "size": 1},
            {"type": "file", "path": "b", "oid": sha1, "size": -1, "lfs": {"oid": "zz", "size": 2**70}}]
    put("hub_json", "evil_tree.json", json.dumps(evil).encode(), 0)
    put("hub_json", "revision.json", json.dumps({"id": "a/b", "sha": sha1}).encode(), 1)
    put("hub_json", "link.txt", b'http://h/api/models/a/b/tree/main\n<http://h/api/models/a/b/tree/main?cursor=x>; rel="next"', 2)
    put("hub_json", "location.txt", b"https://h/a/b/resolve/main/f\n../../other/f?X-Amz=1", 2)
    put("hub_json", "ratelimit.txt", b'http://h/\n"api";r=0;t=42', 2)


def parquet_seeds(put):
    """Small parquet files in the shapes mt reads: a 25M_demo shard (HF Image struct and
    `huggingface` metadata), a 25M_full manifest, a hub VQA split, an mt record output;
    several row groups, each compression mt meets, plain and dictionary encodings."""
    import pyarrow as pa, pyarrow.parquet as pq
    from PIL import Image
    b = io.BytesIO()
    Image.new("L", (4, 3), 7).save(b, format="PNG")
    png = b.getvalue()
    image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    features = {"info": {"features": {"id": {"dtype": "string", "_type": "Value"},
                                      "image": {"_type": "Image"},
                                      "caption": {"dtype": "string", "_type": "Value"}}}}

    def write(name, table, **kw):
        buf = io.BytesIO()
        pq.write_table(table, buf, **kw)
        put("parquet", name, buf.getvalue())

    demo = pa.table({"id": ["a", "b", "c"],
                     "image": pa.array([{"bytes": png, "path": "a.png"}, {"bytes": png, "path": None},
                                        None], type=image),
                     "caption": ["CT of the chest.", None, "MRI, brain: lesion."]})
    demo = demo.replace_schema_metadata({"huggingface": json.dumps(features)})
    for codec in ["none", "snappy", "zstd"]:
        write(f"demo-{codec}.parquet", demo, compression=codec, row_group_size=2)
    full = pa.table({"file_name": ["x/1.jpg", "x/2.jpg", "x/1.jpg", None],
                     "caption": ["a", "b", "c", "d"], "source": ["s", "s", "t", None],
                     "n": pa.array([1, 2, None, 4], pa.int64()),
                     "tags": pa.array([["ct"], [], None, ["mr", "x"]], pa.list_(pa.string()))})
    write("full-dict.parquet", full, compression="none", use_dictionary=True, row_group_size=3)
    write("full-plain-v1.parquet", full, compression="none", use_dictionary=False,
          data_page_version="1.0", version="1.0")
    vqa = pa.table({"image": pa.array([{"bytes": png, "path": None}] * 2, type=image),
                    "question": ["is it ct?", "where?"], "answer": ["yes", "lung"]})
    write("vqa.parquet", vqa, compression="snappy")
    rois = pa.array([[{"label": 1, "bbox": [0, 1, 2, 3]}], []],
                    pa.list_(pa.struct([("label", pa.int64()), ("bbox", pa.list_(pa.int64()))])))
    write("records.parquet", pa.table({"id": ["r1", "r2"], "rois": rois, "area": [0.5, None]}),
          compression="zstd")


if __name__ == "__main__":
    main()
