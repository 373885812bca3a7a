"""Rebuild ``data/samples/coco_mini`` (a 20-image subset of a COCO-format split).

Usage: python data/scripts/make_coco_mini_subset.py SRC_COCO_ROOT OUT_DIR [--set val2017] [--n 20]

Selection rule (deterministic): the smallest image (by file size) holding each of the
required category ids (1 person, 11 fire hydrant, 90 toothbrush), the smallest image with an
``iscrowd`` annotation, then the smallest remaining images until ``--n`` are chosen; ties broken
by image id. The JSON keeps ``info``, ``licenses`` and all ``categories`` unchanged and only the
chosen images with all of their annotations. Images are copied byte for byte.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
from collections import defaultdict
from pathlib import Path

REQUIRED_CATEGORY_IDS = (1, 11, 90)


def select(data: dict, sizes: dict[int, int], n: int) -> list[int]:
    anns = defaultdict(list)
    for a in data["annotations"]:
        anns[a["image_id"]].append(a)
    by_size = sorted(sizes, key=lambda i: (sizes[i], i))
    chosen: list[int] = []

    def first(pred) -> None:
        for i in by_size:
            if pred(i):
                if i not in chosen:
                    chosen.append(i)
                return
        raise SystemExit("no image satisfies a required condition")

    for cid in REQUIRED_CATEGORY_IDS:
        first(lambda i, cid=cid: any(a["category_id"] == cid for a in anns[i]))
    first(lambda i: any(a.get("iscrowd", 0) for a in anns[i]))
    for i in by_size:
        if len(chosen) >= n:
            break
        if i not in chosen:
            chosen.append(i)
    return sorted(chosen)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("src", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("--set", default="val2017")
    p.add_argument("--n", type=int, default=20)
    args = p.parse_args()
    ann_file = args.src / "annotations" / f"instances_{args.set}.json"
    img_dir = args.src / "images" / args.set
    data = json.loads(ann_file.read_text())
    sizes = {im["id"]: (img_dir / im["file_name"]).stat().st_size for im in data["images"]}
    keep = set(select(data, sizes, args.n))
    out = {
        "info": data.get("info", {}),
        "licenses": data.get("licenses", []),
        "images": [im for im in data["images"] if im["id"] in keep],
        "annotations": [a for a in data["annotations"] if a["image_id"] in keep],
        "categories": data["categories"],
    }
    (args.out / "annotations").mkdir(parents=True, exist_ok=True)
    (args.out / "images" / args.set).mkdir(parents=True, exist_ok=True)
    out_ann = args.out / "annotations" / f"instances_{args.set}.json"
    out_ann.write_text(json.dumps(out, separators=(",", ":")))
    sums = []
    for im in out["images"]:
        dst = args.out / "images" / args.set / im["file_name"]
        shutil.copyfile(img_dir / im["file_name"], dst)
        sums.append((dst.relative_to(args.out).as_posix(), dst.read_bytes()))
    sums.append((out_ann.relative_to(args.out).as_posix(), out_ann.read_bytes()))
    lines = [f"{hashlib.sha256(b).hexdigest()}  {name}" for name, b in sorted(sums)]
    (args.out / "SHA256SUMS").write_text("\n".join(lines) + "\n")
    n_crowd = sum(a.get("iscrowd", 0) for a in out["annotations"])
    print(f"{len(out['images'])} images, {len(out['annotations'])} annotations "
          f"({n_crowd} iscrowd), {len({a['category_id'] for a in out['annotations']})} categories")


if __name__ == "__main__":
    main()
