#!/usr/bin/env bash
# Download COCO 2017 (train + val images, instance annotations; ~19 GB) into TARGET_DIR/coco.
#
# Usage: data/scripts/COCO2017.sh [--dry-run] [--keep] [TARGET_DIR]
#   TARGET_DIR  where coco/ goes (default ~/data, i.e. the default COCO_ROOT ~/data/coco)
#   --dry-run   print what would be done
#   --keep      keep the downloaded archives
# Layout: coco/images/{train2017,val2017}/*.jpg and coco/annotations/instances_{train,val}2017.json.
# COCO_MIRROR overrides the base URL (default http://images.cocodataset.org).

source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
parse_args "$@"
BASE="${COCO_MIRROR:-http://images.cocodataset.org}"
for f in train2017.zip val2017.zip; do
    fetch "$BASE/zips/$f" "$TARGET/$f"
    extract "$TARGET/$f" "$TARGET/coco/images"
done
f=annotations_trainval2017.zip
fetch "$BASE/annotations/$f" "$TARGET/$f"
extract "$TARGET/$f" "$TARGET/coco"
echo "Done: COCO 2017 is in $TARGET/coco (images/train2017, images/val2017, annotations/)."
echo "Use --dataset_root $TARGET/coco (or export SSD_COCO_ROOT=$TARGET/coco)."
