# advisor setup: llama.cpp, metal build: Apple M2 (Metal)
# found: no llama.cpp engine installed
# needs: c++ or g++ or clang++: a C/C++ compiler to build llama.cpp (llama-cpp-python README 'Requirements': gcc or clang on Linux, Xcode on macOS)
# managed virtualenv: /venvs/llama-cpp
# create the managed virtualenv
/usr/bin/python3 -m venv /venvs/llama-cpp
# build llama-cpp-python 0.3.36 with the metal backend
env -u PYTHONPATH -u PYTHONHOME CMAKE_ARGS=-DGGML_METAL=on /venvs/llama-cpp/bin/python -m pip install --upgrade --force-reinstall --no-cache-dir 'llama-cpp-python[server]==0.3.36'
# then advisor verifies: load a generated 2-layer model with n_gpu_layers=-1 and read llama.cpp's log: every layer offloaded, a GPU model buffer
