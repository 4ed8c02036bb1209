# advisor setup: llama.cpp, hip build: 6x Arcturus GL-XL [Instinct MI100] (gfx908)
# found: no llama.cpp engine installed
# note: ROCm version unknown: llama.cpp's HIP backend needs ROCm 6.1 or newer
# needs: c++ or g++ or clang++: a C/C++ compiler to build llama.cpp (llama-cpp-python README 'Requirements': gcc or clang on Linux, Xcode on macOS)
# needs: hipconfig: ROCm's HIP SDK (expected under /opt/rocm); see llama.cpp docs/build.md 'HIP'
# managed virtualenv: /venvs/llama-cpp
# create the managed virtualenv
/usr/bin/python3 -m venv /venvs/llama-cpp
# build llama-cpp-python 0.3.36 with the hip backend
env -u PYTHONPATH -u PYTHONHOME HIPCXX=/opt/rocm/llvm/bin/clang HIP_PATH=/opt/rocm CMAKE_ARGS='-DGGML_HIP=on -DGPU_TARGETS=gfx908' /venvs/llama-cpp/bin/python -m pip install --upgrade --force-reinstall --no-cache-dir 'llama-cpp-python[server]==0.3.36'
# then advisor verifies: load a generated 2-layer model with n_gpu_layers=-1 and read llama.cpp's log: every layer offloaded, a GPU model buffer
