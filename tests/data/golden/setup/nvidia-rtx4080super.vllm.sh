# advisor setup: vllm, cuda build: NVIDIA GeForce RTX 4080 SUPER (compute capability 8.9)
# found: no vllm engine installed
# managed virtualenv: /venvs/vllm
# create the managed virtualenv
/usr/bin/python3 -m venv /venvs/vllm
# install vLLM's CUDA wheel (gpu.cuda.inc.md, pip route)
env -u PYTHONPATH -u PYTHONHOME /venvs/vllm/bin/python -m pip install vllm --extra-index-url https://download.pytorch.org/whl/cu129
# then advisor verifies: import vllm in the venv and report its platform, torch and devices
