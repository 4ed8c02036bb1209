# advisor setup: llama.cpp, cuda build: NVIDIA GeForce RTX 4080 SUPER (compute capability 8.9, driver supports CUDA 13.2)
# found: no llama.cpp engine installed
# needs: c++ or g++ or clang++: a C/C++ compiler to build llama.cpp (llama-cpp-python README 'Requirements': gcc or clang on Linux, Xcode on macOS)
# needs: nvcc: the CUDA toolkit's compiler; install the CUDA toolkit, or set CUDACXX to nvcc (llama.cpp docs/build.md 'CUDA')
# managed virtualenv: /venvs/llama-cpp
# create the managed virtualenv
/usr/bin/python3 -m venv /venvs/llama-cpp
# build llama-cpp-python 0.3.36 with the cuda backend
env -u PYTHONPATH -u PYTHONHOME CMAKE_ARGS='-DGGML_CUDA=on -DCMAKE_CUDA_ARCHITECTURES=89' /venvs/llama-cpp/bin/python -m pip install --upgrade --force-reinstall --no-cache-dir 'llama-cpp-python[server]==0.3.36'
# then advisor verifies: load a generated 2-layer model with n_gpu_layers=-1 and read llama.cpp's log: every layer offloaded, a GPU model buffer
