#!/usr/bin/env bash
# GPU checks for a machine with an NVIDIA GPU but no package index (a lent "device" machine whose
# python3 already holds CuPy, PyTorch's CUDA libraries and the CPU onnxruntime).
#
#   bash benchmarks/gpu_device.sh stage DIR    # here (with pip access): download the Python 3.12 wheels
#                                              # distproc needs there, onnxruntime-gpu included, into DIR
#   bash benchmarks/gpu_device.sh run DIR OUT  # there: install DIR's wheels into /tmp/site, run the GPU
#                                              # tests and benchmarks/inference_gpu.py, logs into OUT
#
# On a machine with its own pip, `pip uninstall -y onnxruntime && pip install -e '.[gpu,test]'` followed by
# `pytest -m gpu` and `python benchmarks/inference_gpu.py` does the same.
set -euo pipefail
cd "$(dirname "$0")/.."

stage() {
    local dir=$1
    mkdir -p "$dir"
    # distproc's runtime needs, minus what the device image already holds (numpy, scipy, pandas, pyarrow,
    # numba, onnx, cupy, rich, click, pyyaml, ...); versions as in the development environment.
    local wanted=(
        awkward==2.14.0 awkward_cpp==57 boost-histogram==1.8.1 hist==2.12.1 histoprint==2.7.1 uhi==1.2.1
        coffea==2026.9.0 correctionlib==2.9.0 pydantic==2.14.4 pydantic_core==2.50.5 annotated-types==0.8.0
        typing-inspection==0.4.5 dask==2025.3.1 distributed==2025.3.1 dask-awkward==2026.2.1
        dask-histogram==2026.2.0 dask-jobqueue==0.9.0 uproot==5.7.7 cramjam==2.14.0 lz4==4.4.5 vector==1.9.0
        tornado==6.6.1 zict==3.0.0 partd==1.4.2 locket==1.0.0 tblib==3.2.2 lazy-importer==0.1.0 pyhf==0.7.6
        jsonschema==4.26.0 jsonschema-specifications==2025.9.1 referencing==0.37.0 rpds-py==2026.9.1
        jsonpatch==1.48 jsonpointer==3.12 cachetools==8.0.2 importlib_metadata==10.2.0 skl2onnx==1.20.0
        fsspec_xrootd==0.5.5 onnxruntime-gpu==1.31.1
    )
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 -d "$dir" "${wanted[@]}"
    python3 -m pip wheel -q --no-deps -w "$dir" .
}

run() {
    local dir=$1 out=$2
    mkdir -p "$out"
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
        "$dir"/*.whl
    export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1
    # onnxruntime-gpu loads CUDA 13 / cuDNN 9 from the nvidia-* wheels beside the system's python.
    LD_LIBRARY_PATH=$(python3 -c 'import glob, os, site
dirs = {os.path.dirname(p) for s in site.getsitepackages() for p in glob.glob(s + "/nvidia/**/lib*.so*", recursive=True)}
print(":".join(sorted(dirs)))'):${LD_LIBRARY_PATH:-}
    export LD_LIBRARY_PATH
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$out/gpu.txt"
    python3 -c 'import awkward, cupy, numpy, onnxruntime as ort, distproc
print("python", __import__("sys").version.split()[0], "numpy", numpy.__version__, "awkward", awkward.__version__,
      "cupy", cupy.__version__, "onnxruntime", ort.__version__, ort.get_available_providers())' | tee -a "$out/gpu.txt"
    local rc=0
    python3 -m pytest -m gpu tests/test_inference.py tests/test_systematics.py -rA -p no:cacheprovider \
        -W ignore::DeprecationWarning -W ignore::FutureWarning 2>&1 | tee "$out/pytest_gpu.log" || rc=1
    python3 benchmarks/inference_gpu.py "${@:3}" 2>&1 | tee "$out/inference_gpu.log" || rc=1
    return $rc
}

case ${1:-} in
    stage) stage "${2:?stage DIR}" ;;
    run) run "${2:?run DIR OUT}" "${3:?run DIR OUT}" "${@:4}" ;;
    *) sed -n '2,12p' "$0"; exit 2 ;;
esac
