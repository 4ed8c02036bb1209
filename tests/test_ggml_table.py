"""advisor.gguf.ggml keeps llama.cpp's type table as data (so planning never imports numpy): it must equal gguf's."""

from gguf.constants import GGML_QUANT_SIZES

from advisor.gguf import ggml
def test_table_equals_the_installed_gguf():
    ours = {name: (tid, blck, size) for name, (tid, blck, size) in ggml.TYPES.items()}
    theirs = {t.name: (int(t), int(b), int(s)) for t, (b, s) in GGML_QUANT_SIZES.items()}
    assert ours == theirs


def test_a_type_newer_than_the_table_is_learned_from_gguf(monkeypatch):
    monkeypatch.setattr(ggml, "TYPES", {k: v for k, v in ggml.TYPES.items() if k != "Q8_0"})
    ggml._tables.cache_clear()
    try:
        assert ggml.block_size(8) == (32, 34) and ggml.type_name(8) == "Q8_0"
    finally:
        monkeypatch.undo()
        ggml._tables.cache_clear()
