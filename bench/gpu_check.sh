#!/usr/bin/env bash
# The GPU check in one command (bench/gpu_check.py): every trainer's placement at the full
# profile's shapes in bf16 on one CUDA GPU, throughput and a learning check, under 8 min.
# Needs torch, transformers and peft, which the GPU machine has; nothing is installed.
set -euo pipefail
cd "$(dirname "$0")/.."
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
exec timeout 470 python bench/gpu_check.py "$@"
