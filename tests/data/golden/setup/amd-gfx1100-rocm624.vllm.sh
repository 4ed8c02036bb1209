# advisor setup: vllm, rocm build: AMD GPU 0x744c (gfx1100)
# found: no vllm engine installed
# note: vLLM's ROCm wheels exist for Python 3.12 only (gpu.rocm.inc.md): create the venv with a 3.12 interpreter (--python)
# managed virtualenv: /venvs/vllm
# create the managed virtualenv
/usr/bin/python3 -m venv /venvs/vllm
# install vLLM's ROCm wheel (gpu.rocm.inc.md, pip route)
env -u PYTHONPATH -u PYTHONHOME /venvs/vllm/bin/python -m pip install vllm==0.18.0+rocm700 --extra-index-url https://wheels.vllm.ai/rocm/0.18.0/rocm700
# then advisor verifies: import vllm in the venv and report its platform, torch and devices
