// memprobe: what llama.cpp itself would allocate, per buffer type, for a model and a set of
// llama-server flags, without allocating it.
//
// It loads the model and creates the context with llama_model_params.no_alloc, the dry run that
// llama.cpp's own `--fit` makes (common/fit.cpp common_get_device_memory_data_impl), and prints
// llama_get_memory_breakdown (src/llama-ext.h) in bytes. Weights are never read, so a header-only
// GGUF with a real model's tensor inventory is enough, on any backend.
//
// Usage: llama-memprobe < cases, one case per line: a label, then llama-server flags separated by
// spaces (no quoting). One JSON line per case on stdout. One process serves every case, so the
// backends are initialised once. Build it inside a llama.cpp tree: benchmarks/device/README.md.
//
// Built with MEMPROBE_WITH_BENCH and linked with llama-bench-impl, the same program is llama-bench when
// called by that name (a link): ggml-cuda, most of either binary, then travels to a GPU machine once.
#include "arg.h"
#include "common.h"
#include "llama.h"
#include "llama-ext.h"

#include <cstdio>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

static void probe(const std::string & label, std::vector<std::string> words) {
    std::vector<char *> argv;
    for (auto & w : words) {
        argv.push_back(w.data());
    }
    common_params params;
    if (!common_params_parse((int) argv.size(), argv.data(), params, LLAMA_EXAMPLE_SERVER)) {
        printf("{\"label\": \"%s\", \"error\": \"bad flags\"}\n", label.c_str());
        return;
    }
    llama_model_params mparams = common_model_params_to_llama(params);
    llama_context_params cparams = common_context_params_to_llama(params);
    mparams.no_alloc = true;
    mparams.load_mode = LLAMA_LOAD_MODE_NONE;
    llama_model * model = llama_model_load_from_file(params.model.path.c_str(), mparams);
    if (model == nullptr) {
        printf("{\"label\": \"%s\", \"error\": \"load\"}\n", label.c_str());
        return;
    }
    llama_context * ctx = llama_init_from_model(model, cparams);
    if (ctx == nullptr) {
        printf("{\"label\": \"%s\", \"error\": \"context\"}\n", label.c_str());
        llama_model_free(model);
        return;
    }
    printf("{\"label\": \"%s\", \"n_ctx\": %u, \"n_batch\": %u, \"n_ubatch\": %u, \"n_seq_max\": %u, \"buffers\": [",
           label.c_str(), llama_n_ctx(ctx), llama_n_batch(ctx), llama_n_ubatch(ctx), llama_n_seq_max(ctx));
    const char * sep = "";
    for (const auto & [buft, mb] : llama_get_memory_breakdown(ctx)) {
        printf("%s{\"buft\": \"%s\", \"host\": %s, \"model\": %zu, \"context\": %zu, \"compute\": %zu}", sep,
               ggml_backend_buft_name(buft), ggml_backend_buft_is_host(buft) ? "true" : "false",
               mb.model, mb.context, mb.compute);
        sep = ", ";
    }
    printf("]}\n");
    fflush(stdout);
    llama_free(ctx);
    llama_model_free(model);
}

#ifdef MEMPROBE_WITH_BENCH
int llama_bench(int argc, char ** argv);
#endif

int main(int argc, char ** argv) {
#ifdef MEMPROBE_WITH_BENCH
    const std::string self = argv[0];
    if (self.size() >= 11 && self.compare(self.size() - 11, 11, "llama-bench") == 0) {
        return llama_bench(argc, argv);
    }
#endif
    (void) argc;
    common_init();
    llama_backend_init();
    std::string line;
    while (std::getline(std::cin, line)) {
        std::istringstream in(line);
        std::string label;
        if (!(in >> label)) {
            continue;
        }
        std::vector<std::string> words = {"llama-memprobe"};
        for (std::string w; in >> w;) {
            words.push_back(w);
        }
        probe(label, words);
    }
    llama_backend_free();
    return 0;
}
