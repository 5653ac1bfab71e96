"""Users' own pretrained encoders (CLIP, CLAP, an audio tagger) imported from checkpoints on disk and
exported to self-describing ONNX models, preprocessing inside the graph; zero-shot heads baked in."""
