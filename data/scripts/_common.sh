# Shared helpers of the dataset download scripts (sourced, not run).
# Usage of every script: SCRIPT [--dry-run] [--keep] [TARGET_DIR]   (TARGET_DIR default: ~/data)
set -euo pipefail

DRY_RUN=0
KEEP=0
TARGET=""

parse_args() {
    while [ $# -gt 0 ]; do
        case "$1" in
            --dry-run) DRY_RUN=1 ;;
            --keep) KEEP=1 ;;
            -h|--help) sed -n '2,/^$/s/^# \{0,1\}//p' "$0"; exit 0 ;;
            -*) echo "error: unknown option $1 (see --help)" >&2; exit 2 ;;
            *) [ -z "$TARGET" ] || { echo "error: more than one target dir given" >&2; exit 2; }
               TARGET="$1" ;;
        esac
        shift
    done
    TARGET="${TARGET:-$HOME/data}"
    if [ "$DRY_RUN" = 0 ]; then
        mkdir -p "$TARGET"
    fi
    echo "Target folder: $TARGET"
}

run() {  # print, and run unless --dry-run
    echo "+ $*"
    if [ "$DRY_RUN" = 0 ]; then "$@"; fi
}

fetch() {  # fetch URL FILE: resumable download with curl or wget
    local url="$1" out="$2"
    echo "Downloading $url"
    if command -v curl >/dev/null 2>&1; then
        run curl -fL --retry 3 -C - -o "$out" "$url" || {
            echo "error: download of $url failed (no internet, or the server is down;" \
                 "re-run to resume)" >&2; exit 1; }
    elif command -v wget >/dev/null 2>&1; then
        run wget -c -O "$out" "$url" || {
            echo "error: download of $url failed (re-run to resume)" >&2; exit 1; }
    else
        echo "error: need curl or wget to download $url" >&2
        exit 1
    fi
}

extract() {  # extract ARCHIVE DIR: .tar or .zip into DIR, then delete ARCHIVE unless --keep
    local archive="$1" dir="$2"
    echo "Extracting $archive into $dir"
    run mkdir -p "$dir"
    case "$archive" in
        *.tar) run tar -xf "$archive" -C "$dir" ;;
        *.zip)
            if command -v unzip >/dev/null 2>&1; then
                run unzip -q -o "$archive" -d "$dir"
            else
                run python3 -m zipfile -e "$archive" "$dir"
            fi ;;
        *) echo "error: do not know how to extract $archive" >&2; exit 1 ;;
    esac
    if [ "$KEEP" = 0 ]; then
        run rm -f "$archive"
    fi
}
