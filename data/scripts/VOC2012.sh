#!/usr/bin/env bash
# Download PASCAL VOC2012 trainval (~1.9 GB) into TARGET_DIR/VOCdevkit/VOC2012.
#
# Usage: data/scripts/VOC2012.sh [--dry-run] [--keep] [TARGET_DIR]
#   TARGET_DIR  where VOCdevkit/ goes (default ~/data, i.e. the default VOC_ROOT ~/data/VOCdevkit)
#   --dry-run   print what would be done
#   --keep      keep the downloaded archive
# VOC_MIRROR overrides the base URL (default http://host.robots.ox.ac.uk/pascal/VOC/voc2012).

source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
parse_args "$@"
BASE="${VOC_MIRROR:-http://host.robots.ox.ac.uk/pascal/VOC/voc2012}"
f=VOCtrainval_11-May-2012.tar
fetch "$BASE/$f" "$TARGET/$f"
extract "$TARGET/$f" "$TARGET"
echo "Done: VOC2012 is in $TARGET/VOCdevkit/VOC2012."
echo "Use --dataset_root $TARGET/VOCdevkit (or export SSD_VOC_ROOT=$TARGET/VOCdevkit)."
