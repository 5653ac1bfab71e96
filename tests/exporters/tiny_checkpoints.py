"""Tiny randomly initialised Hugging Face folders (CLIP, CLAP), written like downloaded checkpoints.

Shared by the importer tests and the ``models pull`` tests; callers skip when torch or transformers
is missing, so the imports here happen inside the builders.
"""

from __future__ import annotations

import json
from pathlib import Path

CLAP_RATE = 16000

LETTERS = "abcdefghijklmnopqrstuvwxyz"


def make_tiny_clip(folder: Path) -> Path:
    """A CLIPModel (hidden 32, 2 layers, 30 px images, patch 6, projection 16), a character-level
    CLIPTokenizer and a CLIP image processor config, written like a downloaded model folder."""
    import torch
    import transformers

    torch.manual_seed(0)
    layers = {"hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2, "num_attention_heads": 4}
    config = transformers.CLIPConfig(
        text_config={**layers, "vocab_size": 2 + 2 * len(LETTERS), "max_position_embeddings": 77,
                     "bos_token_id": 0, "eos_token_id": 1, "pad_token_id": 1},
        vision_config={**layers, "image_size": 30, "patch_size": 6}, projection_dim=16)
    transformers.CLIPModel(config).eval().save_pretrained(folder)
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in LETTERS:
        vocab[c] = len(vocab)
        vocab[c + "</w>"] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")  # no merges: every letter is a token
    transformers.CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt")).save_pretrained(folder)
    processor = getattr(transformers, "CLIPImageProcessorPil", None) or transformers.CLIPImageProcessor
    processor(size={"shortest_edge": 30}, crop_size={"height": 30, "width": 30}).save_pretrained(folder)
    return folder


WORDS = ["a", "dog", "barks", "car", "horn", "rain", "music", "the", "of", "sound"]


def _write_tokenizer(folder: Path) -> None:
    """A byte-level BPE RoBERTa tokenizer with a few dozen tokens: letters, 'Ġ'+letters, a few words."""
    import transformers

    letters = "abcdefghijklmnopqrstuvwxyz"
    tokens = ["<s>", "<pad>", "</s>", "<unk>", "<mask>", "Ġ", *letters, *[f"Ġ{c}" for c in letters]]
    merges = [f"Ġ {c}" for c in letters]
    for word in WORDS:  # merge each word left to right, after its leading 'Ġ'
        piece = "Ġ" + word[0]
        for c in word[1:]:
            merges.append(f"{piece} {c}")
            piece += c
            tokens.append(piece)
    vocab = {t: i for i, t in enumerate(dict.fromkeys(tokens))}
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(dict.fromkeys(merges)) + "\n")
    # positional file paths: the constructor's first two parameters in both transformers 4 and 5
    tok = transformers.RobertaTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), add_prefix_space=True)
    tok.save_pretrained(str(folder))


def make_clap(folder: Path, *, truncation: str = "rand_trunc", padding: str = "repeatpad",
              max_length_s: int = 1, fusion: bool = False, text_positions: int = 40) -> Path:
    """A ClapModel (HTSAT of 2 stages, 16 mel bands, 16-d projection) with its extractor and a byte-level
    tokenizer; ``text_positions`` bounds the prompt length in tokens (longer ones for real prompt sets)."""
    import torch
    import transformers

    torch.manual_seed(0)
    audio = transformers.ClapAudioConfig(
        spec_size=64, num_mel_bins=16, window_size=4, patch_size=4, patch_stride=(4, 4),
        depths=[1, 1], num_attention_heads=[1, 2], patch_embeds_hidden_size=16, hidden_size=32,
        projection_dim=16, num_hidden_layers=2, enable_fusion=fusion, fusion_type="aff_2d" if fusion else None,
    )
    text = transformers.ClapTextConfig(
        vocab_size=128, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
        max_position_embeddings=text_positions, projection_dim=16,
    )
    config = transformers.ClapConfig(text_config=text.to_dict(), audio_config=audio.to_dict(), projection_dim=16)
    model = transformers.ClapModel(config).eval()
    model.save_pretrained(str(folder))
    # 1 s at 16 kHz, hop 64 → 251 frames (< spec width 256: HTSAT interpolates), 16 mel bands
    extractor = transformers.ClapFeatureExtractor(
        feature_size=16, sampling_rate=CLAP_RATE, hop_length=64, max_length_s=max_length_s, fft_window_size=256,
        frequency_min=50, frequency_max=7000, truncation=truncation, padding=padding,
    )
    extractor.save_pretrained(str(folder))
    _write_tokenizer(folder)
    return folder
