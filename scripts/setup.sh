#!/usr/bin/env bash
# One-step setup on a fresh Debian/Ubuntu machine (or a Jetson):
#   - system packages (PortAudio headers for pyaudio, ffmpeg/espeak-ng/sox/PulseAudio used by tests),
#     installed only when missing and only when we are root (or have sudo);
#   - a virtual environment in .venv that can see the system's site-packages, so that a torch
#     already installed by the user (e.g. NVIDIA's Jetson wheel) is used and left alone;
#   - torch 2.13.0 (CPU build) only where no torch is importable;
#   - affedge itself, editable, with the C++ ring buffer compiled, and its extras.
# Usage: bash scripts/setup.sh [extras]   (default extras: train,audio,dev)
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRAS="${1:-train,audio,dev}"
PY="${PYTHON:-python3}"

pkgs=(build-essential portaudio19-dev ffmpeg espeak-ng sox pulseaudio pulseaudio-utils libasound2-plugins
      chromium chromium-driver)  # the dashboard test's headless browser (selenium drives it)
missing=()
if command -v dpkg >/dev/null 2>&1; then
  for p in "${pkgs[@]}"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
  done
fi
if [ "${#missing[@]}" -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1 && SUDO="sudo"
  if [ "$(id -u)" -eq 0 ] || [ -n "$SUDO" ]; then
    echo "[setup] installing system packages: ${missing[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "[setup] warning: missing system packages (${missing[*]}); pyaudio and some tests need them"
  fi
fi

if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv"
  "$PY" -m venv --system-site-packages .venv
fi
VPY=.venv/bin/python
# pip here warns about absent local mirrors; keep its real errors, drop that noise
pipq() { "$VPY" -m pip install -q "$@" 2> >(grep -v "is ignored" >&2); }
pipq --upgrade pip
if [ "${AFFEDGE_SYSTEM_RUNTIME:-0}" = "1" ]; then
  echo "[setup] AFFEDGE_SYSTEM_RUNTIME=1: torch left to the system (JetPack's wheel)"
elif ! $VPY -c "import torch" >/dev/null 2>&1; then
  case ",$EXTRAS," in
    *,train,*)
      echo "[setup] no torch found: installing torch 2.13.0 (from the configured package index)"
      pipq torch==2.13.0 ;;
  esac
else
  echo "[setup] using the installed torch $($VPY -c 'import torch; print(torch.__version__)')"
fi
if [ "${AFFEDGE_SYSTEM_RUNTIME:-0}" = "1" ]; then
  # Jetson/JetPack (docs/JETSON.md): keep the system's OpenCV (GStreamer) and ONNX Runtime GPU
  # wheel; install affedge without pulling opencv-python-headless/onnxruntime over them
  echo "[setup] AFFEDGE_SYSTEM_RUNTIME=1: affedge without its runtime wheels (system ones kept)"
  pipq --no-deps -e .
  pipq "numpy<2" safetensors "onnx>=1.16" tqdm threadpoolctl
else
  echo "[setup] installing affedge[$EXTRAS] (editable, builds the C++ ring buffer)"
  pipq -e ".[$EXTRAS]"
fi
$VPY -c "import affedge._ringbuf" || { echo "[setup] the C++ extension did not build" >&2; exit 1; }
echo "[setup] done: $($VPY -c 'import affedge; print("affedge", affedge.__version__)')"
