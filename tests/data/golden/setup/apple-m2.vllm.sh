# exit 2: advisor: error: vLLM runs on Linux only (vLLM installation docs); this profile is darwin (use --backend llama.cpp, which has a build for every machine)
