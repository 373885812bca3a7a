#!/usr/bin/env bash
# Download PASCAL VOC2007 (trainval + test, ~870 MB) into TARGET_DIR/VOCdevkit/VOC2007.
#
# Usage: data/scripts/VOC2007.sh [--dry-run] [--keep] [TARGET_DIR]
#   TARGET_DIR  where VOCdevkit/ goes (default ~/data, i.e. the default VOC_ROOT ~/data/VOCdevkit)
#   --dry-run   print what would be done
#   --keep      keep the downloaded archives
# VOC_MIRROR overrides the base URL (default http://host.robots.ox.ac.uk/pascal/VOC/voc2007).

source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
parse_args "$@"
BASE="${VOC_MIRROR:-http://host.robots.ox.ac.uk/pascal/VOC/voc2007}"
for f in VOCtrainval_06-Nov-2007.tar VOCtest_06-Nov-2007.tar; do
    fetch "$BASE/$f" "$TARGET/$f"
    extract "$TARGET/$f" "$TARGET"
done
echo "Done: VOC2007 is in $TARGET/VOCdevkit/VOC2007."
echo "Use --dataset_root $TARGET/VOCdevkit (or export SSD_VOC_ROOT=$TARGET/VOCdevkit)."
