# advisor setup: vllm, rocm build: 6x Arcturus GL-XL [Instinct MI100] (gfx target unknown)
# found: no vllm engine installed
# note: gfx target unknown: vLLM's ROCm wheels support gfx90a, gfx942, gfx950, gfx1100, gfx1101, gfx1150, gfx1151, gfx1200, gfx1201 (gpu.rocm.inc.md); other GPUs fail at start
# note: vLLM's ROCm wheels exist for Python 3.12 only (gpu.rocm.inc.md): create the venv with a 3.12 interpreter (--python)
# managed virtualenv: /venvs/vllm
# create the managed virtualenv
/usr/bin/python3 -m venv /venvs/vllm
# install vLLM's ROCm wheel (gpu.rocm.inc.md, pip route)
env -u PYTHONPATH -u PYTHONHOME /venvs/vllm/bin/python -m pip install vllm==0.18.0+rocm700 --extra-index-url https://wheels.vllm.ai/rocm/0.18.0/rocm700
# then advisor verifies: import vllm in the venv and report its platform, torch and devices
