#!/usr/bin/env bash
# udkws board-side installer. `make deploy PI=user@host` copies this script with the edge wheel, the model,
# the systemd unit and the default config into one folder on the board and runs it there as root:
#
#   sudo bash install.sh                       # everything from the folder this script is in
#   sudo bash install.sh --root /tmp/pi-root --no-apt --no-useradd --no-systemctl   # a staged install (tests)
#   DRY_RUN=1 bash install.sh                  # print every command instead of running it
#
# It creates the `udkws` user (groups audio, gpio), a venv in /opt/udkws/venv with `udkws[edge]` (numpy,
# ai-edge-litert, gpiozero, pyaudio: no torch, no TensorFlow), puts the model in /usr/share/udkws, the config
# in /etc/udkws/config.toml (an edited config is kept; the new default goes beside it as config.toml.new)
# and the unit in /etc/systemd/system (with a network drop-in when the config enables [wyoming] or [mqtt]), then
# enables and (re)starts the service.
set -euo pipefail

usage() {
    cat <<'EOF'
usage: install.sh [options]
  --from DIR        folder holding the files below (default: this script's folder)
  --wheel FILE      the udkws wheel (default: the one udkws-*.whl in --from)
  --model FILE      udkws_int8.tflite (its .json sidecar must lie beside it)
  --unit FILE       udkws.service          --config FILE   the default config.toml
  --root DIR        install under DIR instead of / (a staged root)
  --python PY       interpreter for the venv (default: python3)
  --find-links DIR  also look for wheels in DIR     --no-index   use only --find-links (offline)
  --no-apt          do not install Debian packages  --no-useradd do not create the user or chown
  --no-systemctl    do not reload/enable/start      --dry-run    print commands only (also DRY_RUN=1)
  --no-venv         leave the venv as it is (update only the model, config and unit)
  --network         install the network drop-in even when the config enables neither [wyoming] nor [mqtt]
EOF
}

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
FROM="$HERE" WHEEL="" MODEL="" UNIT="" CONFIG="" ROOT="" PYTHON_BIN="python3"
DRY_RUN="${DRY_RUN:-0}" DO_APT=1 DO_USERADD=1 DO_SYSTEMCTL=1 DO_VENV=1 FORCE_NETWORK=0
PIP_EXTRA=()
while [ $# -gt 0 ]; do
    case "$1" in
        --from) FROM="$2"; shift 2 ;;
        --wheel) WHEEL="$2"; shift 2 ;;
        --model) MODEL="$2"; shift 2 ;;
        --unit) UNIT="$2"; shift 2 ;;
        --config) CONFIG="$2"; shift 2 ;;
        --root) ROOT="${2%/}"; shift 2 ;;
        --python) PYTHON_BIN="$2"; shift 2 ;;
        --find-links) PIP_EXTRA+=(--find-links "$2"); shift 2 ;;
        --no-index) PIP_EXTRA+=(--no-index); shift ;;
        --no-apt) DO_APT=0; shift ;;
        --no-useradd) DO_USERADD=0; shift ;;
        --no-systemctl) DO_SYSTEMCTL=0; shift ;;
        --no-venv) DO_VENV=0; shift ;;
        --network) FORCE_NETWORK=1; shift ;;
        --dry-run) DRY_RUN=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "install.sh: unknown option '$1'" >&2; usage >&2; exit 2 ;;
    esac
done

SERVICE=udkws
USER_NAME=udkws
VENV="$ROOT/opt/udkws/venv"
MODEL_DIR="$ROOT/usr/share/udkws"
CONFIG_DIR="$ROOT/etc/udkws"
UNIT_DIR="$ROOT/etc/systemd/system"
STATE_DIR="$ROOT/var/lib/udkws"
APT_PACKAGES=(python3-venv python3-dev portaudio19-dev gcc)

say() { echo "install.sh: $*"; }
die() { echo "install.sh: error: $*" >&2; exit 1; }
# Every change to the system goes through run(): DRY_RUN=1 prints it instead.
run() {
    if [ "$DRY_RUN" = 1 ]; then
        printf '+'; printf ' %q' "$@"; printf '\n'
    else
        "$@"
    fi
}

pick() {  # pick WHAT GIVEN PATTERN: the file given, or the single match of PATTERN in $FROM
    local what="$1" given="$2" pattern="$3" matches
    if [ -n "$given" ]; then
        [ -f "$given" ] || die "$what: no such file '$given'"
        echo "$given"; return
    fi
    shopt -s nullglob
    # shellcheck disable=SC2206  # the pattern is meant to glob
    matches=("$FROM"/$pattern)
    shopt -u nullglob
    [ "${#matches[@]}" = 1 ] || die "$what: expected exactly one '$pattern' in $FROM, found ${#matches[@]} (pass --${what})"
    echo "${matches[0]}"
}

WHEEL="$(pick wheel "$WHEEL" 'udkws-*.whl')"
MODEL="$(pick model "$MODEL" 'udkws_int8.tflite')"
SIDECAR="${MODEL%.tflite}.json"
[ -f "$SIDECAR" ] || die "model: the sidecar '$SIDECAR' must lie beside '$MODEL'"
UNIT="$(pick unit "$UNIT" 'udkws.service')"
CONFIG="$(pick config "$CONFIG" 'config.toml')"
if [ -z "$ROOT" ] && [ "$DRY_RUN" != 1 ] && [ "$(id -u)" != 0 ]; then
    die "run me as root (sudo bash $0), or pass --root DIR for a staged install"
fi

# 1. Debian packages: venv support, and PortAudio + a compiler for PyAudio (no aarch64 wheel on PyPI).
if [ "$DO_APT" = 1 ]; then
    missing=()
    for package in "${APT_PACKAGES[@]}"; do
        dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
    done
    if [ "${#missing[@]}" -gt 0 ]; then
        say "installing Debian packages: ${missing[*]}"
        run apt-get update -qq
        run env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
    fi
fi

# 2. The service user, in the groups that own the sound card and the GPIO chip.
if [ "$DO_USERADD" = 1 ]; then
    for group in audio gpio; do
        getent group "$group" >/dev/null || run groupadd --system "$group"
    done
    if ! id "$USER_NAME" >/dev/null 2>&1; then
        run useradd --system --user-group --home-dir /var/lib/udkws --no-create-home \
            --shell /usr/sbin/nologin --comment "udkws keyword spotting" "$USER_NAME"
    fi
    run usermod --append --groups audio,gpio "$USER_NAME"
fi

# 3. The venv with the edge extra. The wheel is reinstalled even at the same version (a rebuilt checkout).
if [ "$DO_VENV" = 1 ]; then
    if [ ! -x "$VENV/bin/python" ]; then
        run mkdir -p "$(dirname "$VENV")"
        run "$PYTHON_BIN" -m venv "$VENV"
    fi
    run "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "${PIP_EXTRA[@]}" "${WHEEL}[edge]"
    run "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps --force-reinstall "$WHEEL"
elif [ ! -x "$VENV/bin/kws-edge" ]; then
    die "--no-venv: there is no installed venv at $VENV yet"
fi

# 4. The model. Keywords enrolled with another model stop matching: say so.
if [ -f "$MODEL_DIR/udkws_int8.tflite" ] && ! cmp -s "$MODEL" "$MODEL_DIR/udkws_int8.tflite"; then
    say "the model changes: keywords enrolled with the previous one are refused until re-enrolled"
fi
run install -d -m 0755 "$MODEL_DIR"
run install -m 0644 "$MODEL" "$MODEL_DIR/udkws_int8.tflite"
run install -m 0644 "$SIDECAR" "$MODEL_DIR/udkws_int8.json"
# The model's impostor cohort (false-alarm budgets) when one came with it; a stale one of another model goes.
COHORT="${MODEL%.tflite}.cohort.npz"
if [ -f "$COHORT" ]; then
    run install -m 0644 "$COHORT" "$MODEL_DIR/udkws_int8.cohort.npz"
else
    say "no cohort beside the model: every keyword uses detector.threshold"
    run rm -f "$MODEL_DIR/udkws_int8.cohort.npz"
fi

# 5. The config. config.toml.default remembers the default installed last time: a config.toml equal to it was
# never edited and is replaced; an edited one is kept, with the new default beside it as config.toml.new.
run install -d -m 0755 "$CONFIG_DIR"
if [ ! -f "$CONFIG_DIR/config.toml" ] || cmp -s "$CONFIG_DIR/config.toml" "$CONFIG_DIR/config.toml.default" \
    || cmp -s "$CONFIG_DIR/config.toml" "$CONFIG"; then
    run install -m 0644 "$CONFIG" "$CONFIG_DIR/config.toml"
    [ ! -f "$CONFIG_DIR/config.toml.new" ] || run rm -f "$CONFIG_DIR/config.toml.new"
else
    say "keeping your edited $CONFIG_DIR/config.toml; the new default is $CONFIG_DIR/config.toml.new"
    run install -m 0644 "$CONFIG" "$CONFIG_DIR/config.toml.new"
fi
run install -m 0644 "$CONFIG" "$CONFIG_DIR/config.toml.default"

# 6. State directory (systemd's StateDirectory= makes it too; made here so `kws-edge enroll` works before
# the first start) and the unit.
run install -d -m 0750 "$STATE_DIR"
[ "$DO_USERADD" = 0 ] || run chown "$USER_NAME:$USER_NAME" "$STATE_DIR"
run install -d -m 0755 "$UNIT_DIR"
run install -m 0644 "$UNIT" "$UNIT_DIR/$SERVICE.service"

# 6b. Network. The unit has none; when the config enables [wyoming] or [mqtt] (or with --network), a drop-in
# opens only what they need, computed from the config (kws-edge network-dropin); otherwise an old one goes.
DROPIN="$UNIT_DIR/$SERVICE.service.d/network.conf"
DROPIN_ARGS=(network-dropin --config "$CONFIG_DIR/config.toml")
[ "$FORCE_NETWORK" = 0 ] || DROPIN_ARGS+=(--force)
if [ "$DRY_RUN" = 1 ]; then
    run "$VENV/bin/kws-edge" "${DROPIN_ARGS[@]}"
else
    dropin_text="$("$VENV/bin/kws-edge" "${DROPIN_ARGS[@]}")" \
        || die "cannot make the network drop-in from $CONFIG_DIR/config.toml (the error is above)"
    if [ -n "$dropin_text" ]; then
        install -d -m 0755 "$(dirname "$DROPIN")"
        printf '%s\n' "$dropin_text" > "$DROPIN.tmp" && chmod 0644 "$DROPIN.tmp" && mv "$DROPIN.tmp" "$DROPIN"
        say "network drop-in written: $DROPIN ([wyoming]/[mqtt] on)"
    elif [ -f "$DROPIN" ]; then
        rm -f "$DROPIN"
        say "network drop-in removed: neither [wyoming] nor [mqtt] is on"
    fi
fi

# 7. Start it (restart when it was running, so the new code and model are used).
if [ "$DO_SYSTEMCTL" = 1 ]; then
    run systemctl daemon-reload
    if systemctl is-active --quiet "$SERVICE"; then
        run systemctl enable "$SERVICE"
        run systemctl restart "$SERVICE"
    else
        run systemctl enable --now "$SERVICE"
    fi
    say "installed; follow it with: journalctl -u $SERVICE -f"
else
    say "installed under ${ROOT:-/} (systemctl skipped)"
fi
