#!/usr/bin/env bash
# Laptop side of `make deploy PI=user@host`: build the edge wheel, copy it with the model, the unit, the default
# config and install.sh to the board, and run install.sh there with sudo.
#
#   edge/deploy/deploy.sh pi@raspberrypi.local
#   DRY_RUN=1 edge/deploy/deploy.sh pi@raspberrypi.local      # print every command, run none
#
# Environment: MODEL (default build/udkws_int8.tflite; its .json beside it), PYTHON (default .venv/bin/python,
# else python3), SSH_OPTS (extra ssh/scp options, e.g. "-p 2222 -i ~/.ssh/pi"), REMOTE_DIR (default
# /tmp/udkws-deploy), INSTALL_ARGS (extra install.sh options).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
PI="${1:-${PI:-}}"
DRY_RUN="${DRY_RUN:-0}"
MODEL="${MODEL:-$REPO/build/udkws_int8.tflite}"
SIDECAR="${MODEL%.tflite}.json"
REMOTE_DIR="${REMOTE_DIR:-/tmp/udkws-deploy}"
STAGE="$REPO/build/deploy"
if [ -z "${PYTHON:-}" ]; then
    if [ -x "$REPO/.venv/bin/python" ]; then PYTHON="$REPO/.venv/bin/python"; else PYTHON=python3; fi
fi
read -r -a SSH_ARGS <<<"${SSH_OPTS:-}"
read -r -a EXTRA_INSTALL_ARGS <<<"${INSTALL_ARGS:-}"

die() { echo "deploy: error: $*" >&2; exit 1; }
run() {
    if [ "$DRY_RUN" = 1 ]; then
        printf '+'; printf ' %q' "$@"; printf '\n'
    else
        "$@"
    fi
}

[ -n "$PI" ] || die "no board given: make deploy PI=user@host (or edge/deploy/deploy.sh user@host)"
case "$PI" in
    -*|*' '*) die "PI='$PI' does not look like user@host" ;;
esac
[ -f "$MODEL" ] || die "no model at $MODEL: build it with \`make convert\` (or set MODEL=path/to/udkws_int8.tflite)"
[ -f "$SIDECAR" ] || die "the model's sidecar $SIDECAR is missing: it is written beside the model by \`make convert\`"

# 1. The wheel (pure Python: one wheel serves every board) and the files install.sh expects, in one folder.
run rm -rf "$STAGE"
run mkdir -p "$STAGE"
run "$PYTHON" -m pip wheel --quiet --no-deps --wheel-dir "$STAGE" "$REPO"
run cp "$MODEL" "$STAGE/udkws_int8.tflite"
run cp "$SIDECAR" "$STAGE/udkws_int8.json"
# The impostor cohort of this model (false-alarm budgets); without it every keyword uses detector.threshold.
COHORT="${MODEL%.tflite}.cohort.npz"
if [ -f "$COHORT" ]; then run cp "$COHORT" "$STAGE/udkws_int8.cohort.npz"; else
    echo "deploy: no cohort beside $MODEL: keywords will use detector.threshold (see \`make cohort\`)" >&2; fi
run cp "$REPO/edge/systemd/udkws.service" "$STAGE/udkws.service"
run cp "$REPO/edge/default_config.toml" "$STAGE/config.toml"
run cp "$REPO/edge/deploy/install.sh" "$STAGE/install.sh"

# 2. Copy and install. -t gives sudo a terminal for its password prompt.
if [ "$DRY_RUN" = 1 ]; then
    files=("$STAGE/udkws-<version>-py3-none-any.whl")
else
    shopt -s nullglob
    files=("$STAGE"/udkws-*.whl)
    shopt -u nullglob
    [ "${#files[@]}" = 1 ] || die "expected one wheel in $STAGE, found ${#files[@]}"
fi
files+=("$STAGE/udkws_int8.tflite" "$STAGE/udkws_int8.json" "$STAGE/udkws.service" "$STAGE/config.toml"
    "$STAGE/install.sh")
if [ -f "$COHORT" ]; then files+=("$STAGE/udkws_int8.cohort.npz"); fi
run ssh "${SSH_ARGS[@]}" "$PI" "rm -rf '$REMOTE_DIR' && mkdir -p '$REMOTE_DIR'"
run scp "${SSH_ARGS[@]}" "${files[@]}" "$PI:$REMOTE_DIR/"
run ssh -t "${SSH_ARGS[@]}" "$PI" "sudo bash '$REMOTE_DIR/install.sh' --from '$REMOTE_DIR' ${EXTRA_INSTALL_ARGS[*]}"
echo "deploy: done; on the board: systemctl status udkws, journalctl -u udkws -f"
