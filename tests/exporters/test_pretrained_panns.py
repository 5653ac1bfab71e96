"""PANNs Cnn14 importer, offline and without the real weights: a Cnn14 state dict at narrow widths
(the real layers and key names, fewer channels) with random weights and the real front end, saved as
PANNs does (``{"model": state_dict}``); the front end against librosa, the whole model against the
torch body fed librosa's log-mel, ``avstream export audio-tagger`` through the real CLI, and the
exported model run by the generic encoder node in a pipeline."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.conftest import free_port, invoke_cli, run_cli

torch = pytest.importorskip("torch")
librosa = pytest.importorskip("librosa")
pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
zmq = pytest.importorskip("zmq")
from avstream.engine.errors import ModelError  # noqa: E402
from avstream.exporters.pretrained.panns import (  # noqa: E402
    AUDIOSET_CLASSES,
    Cnn14,
    FrontEnd,
    expected_keys,
    load_cnn14,
    probe_signals,
    read_labels,
)
from avstream.exporters.pretrained.panns_frontend import dft_weights  # noqa: E402
from tests.exporters.pipeline_results import run_and_receive  # noqa: E402

pytestmark = pytest.mark.timeout(240)

RATE, N_FFT, HOP, MELS, FMIN, FMAX = 32000, 1024, 320, 64, 50.0, 14000.0
SECONDS = 2.0
WIDTHS = (4, 8, 8, 16, 16, 32)
HIDDEN = 32
# dB, the graph's float32 DFT-as-conv vs librosa's float64 FFT on the probe signals and a pure digital
# sweep. Within 80 dB of the window's loudest bin (measured: 1.4e-3 dB, the pure sweep); anywhere down to
# the -100 dB floor, where float32 round-off of the DFT is comparable to the leakage of a pure sweep
# (measured: 0.055 dB, at -98 dB)
FRONTEND_ATOL_DB = 5e-3
FRONTEND_RANGE_DB = 80.0
FRONTEND_FLOOR_ATOL_DB = 0.1
# probabilities, ONNX Runtime vs the torch body fed librosa's log-mel (measured: 3.1e-6)
PROBS_ATOL = 1e-4
CNN14_FRONT = FrontEnd()


def librosa_logmel(x: np.ndarray, front: FrontEnd = CNN14_FRONT) -> np.ndarray:
    """(frames, mels): torchlibrosa's Spectrogram + LogmelFilterBank as PANNs configures them, in librosa."""
    spec = librosa.stft(np.asarray(x, dtype=np.float64), n_fft=front.window_size, hop_length=front.hop_size,
                        win_length=front.window_size, window="hann", center=True, pad_mode="reflect")
    mel_w = librosa.filters.mel(sr=front.sample_rate, n_fft=front.window_size, n_mels=front.mel_bins,
                                fmin=front.fmin, fmax=front.fmax)
    power = mel_w.astype(np.float64) @ (np.abs(spec) ** 2)
    return np.asarray(librosa.power_to_db(power, ref=1.0, amin=1e-10, top_db=None).T)


def make_state(*, widths: tuple[int, ...] = WIDTHS, hidden: int = HIDDEN, classes: int = AUDIOSET_CLASSES,
               front: FrontEnd = CNN14_FRONT, seed: int = 0) -> dict[str, Any]:
    """A Cnn14 state dict: torchlibrosa's front-end weights, random layers, BatchNorm statistics measured
    on real-ish audio (so the probabilities spread over (0, 1) instead of saturating)."""
    torch.manual_seed(seed)
    model = Cnn14(front, widths, hidden, classes)
    real, imag = dft_weights(front.window_size)
    model.spectrogram_extractor.stft.conv_real.weight.data = torch.from_numpy(real.astype(np.float32))
    model.spectrogram_extractor.stft.conv_imag.weight.data = torch.from_numpy(imag.astype(np.float32))
    mel = librosa.filters.mel(sr=front.sample_rate, n_fft=front.window_size, n_mels=front.mel_bins,
                              fmin=front.fmin, fmax=front.fmax)
    model.logmel_extractor.melW.data = torch.from_numpy(np.ascontiguousarray(mel.T))
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None  # a cumulative average over the calibration batch
    samples = int(front.sample_rate * SECONDS)
    audio = np.stack(list(probe_signals(samples, front.sample_rate).values())[:3])
    rng = np.random.default_rng(seed)
    audio = np.concatenate([audio, np.clip(rng.normal(0, 0.3, size=(3, samples)), -1, 1)]).astype(np.float32)
    model.train()
    with torch.no_grad():
        model(torch.from_numpy(audio))
    return model.eval().state_dict()


def save(path: Path, state: dict[str, Any], wrap: bool = True) -> Path:
    torch.save({"model": state, "iteration": 100000} if wrap else state, str(path))
    return path


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save(tmp_path_factory.mktemp("panns") / "Cnn14_narrow.pth", make_state())


def labels_csv(path: Path, n: int = AUDIOSET_CLASSES) -> Path:
    rows = ["index,mid,display_name"] + [f'{i},/m/{i:05x},"Sound {i}, kind {i % 7}"' for i in range(n)]
    path.write_text("\n".join(rows) + "\n")
    return path


def test_the_full_size_module_has_the_official_keys_and_shapes() -> None:
    with torch.device("meta"):
        model = Cnn14()
    state = model.state_dict()
    bn = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
    want = {"spectrogram_extractor.stft.conv_real.weight", "spectrogram_extractor.stft.conv_imag.weight",
            "logmel_extractor.melW", *(f"bn0.{k}" for k in bn), "fc1.weight", "fc1.bias",
            "fc_audioset.weight", "fc_audioset.bias"}
    for i in range(1, 7):
        want |= {f"conv_block{i}.conv1.weight", f"conv_block{i}.conv2.weight"}
        want |= {f"conv_block{i}.bn{j}.{k}" for j in (1, 2) for k in bn}
    assert set(state) == want == expected_keys()
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    assert shapes["spectrogram_extractor.stft.conv_real.weight"] == (513, 1, 1024)
    assert shapes["logmel_extractor.melW"] == (513, 64)
    assert shapes["conv_block1.conv1.weight"] == (64, 1, 3, 3)
    assert shapes["conv_block6.conv2.weight"] == (2048, 2048, 3, 3)
    assert shapes["fc1.weight"] == (2048, 2048) and shapes["fc_audioset.weight"] == (527, 2048)
    # Kong et al. report 80.8M parameters; the front end's DFT and mel weights add 1.08M
    layers = sum(p.numel() for n, p in model.named_parameters() if "extractor" not in n)
    assert 80.7e6 < layers < 80.8e6


def test_frontend_matches_librosa(checkpoint: Path) -> None:
    tagger = load_cnn14(checkpoint, seconds=SECONDS)
    module = tagger.module
    worst: dict[str, float] = {}
    anywhere: dict[str, float] = {}
    probes = probe_signals(int(SECONDS * RATE), RATE)
    t = np.arange(int(SECONDS * RATE)) / RATE
    probes["pure sweep"] = (0.5 * np.sin(2 * np.pi * (100 * t + 3500 * t ** 2))).astype(np.float32)
    for label, x in probes.items():
        want = librosa_logmel(x)
        with torch.no_grad():
            got = module.logmel_extractor(module.spectrogram_extractor(torch.from_numpy(x[None])))[0, 0].numpy()
        assert got.shape == want.shape == (1 + int(SECONDS * RATE) // HOP, MELS), label
        err = np.abs(got - want)
        worst[label] = float(err[want > want.max() - FRONTEND_RANGE_DB].max())
        anywhere[label] = float(err.max())
    assert max(worst.values()) < FRONTEND_ATOL_DB, f"log-mel vs librosa within 80 dB of the peak: {worst}"
    assert max(anywhere.values()) < FRONTEND_FLOOR_ATOL_DB, f"log-mel vs librosa anywhere: {anywhere}"
    assert worst["silence"] == 0.0  # both floor at 1e-10: -100 dB


def test_reference_frontend_is_librosa_to_float64_precision() -> None:
    from avstream.exporters.pretrained.panns_frontend import reference_logmel, slaney_mel

    mel = slaney_mel(RATE, N_FFT, MELS, FMIN, FMAX)
    np.testing.assert_allclose(mel, librosa.filters.mel(sr=RATE, n_fft=N_FFT, n_mels=MELS, fmin=FMIN, fmax=FMAX),
                               atol=1e-8)
    x = probe_signals(RATE, RATE)["tone+noise"]
    got = reference_logmel(x[None], mel.T, n_fft=N_FFT, hop=HOP)[0]
    assert float(np.abs(got - librosa_logmel(x)).max()) < 1e-6


def test_onnx_matches_torch_fed_librosa_logmel(checkpoint: Path, tmp_path: Path) -> None:
    from avstream.exporters.pretrained.panns import export_audio_tagger

    tagger = load_cnn14(checkpoint, seconds=SECONDS)
    out = tmp_path / "cnn14.onnx"
    result = export_audio_tagger(tagger, None, out, progress=lambda _: None)
    assert result.report.max_abs < 1e-4 and result.reference_max_abs < 1e-4
    probes = probe_signals(int(SECONDS * RATE), RATE)
    batch = np.stack(list(probes.values()))
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    (got,) = sess.run(["probabilities"], {"audio": batch})
    logmel = np.stack([librosa_logmel(x) for x in batch]).astype(np.float32)
    with torch.no_grad():
        want = tagger.module.body(torch.from_numpy(logmel).unsqueeze(1)).numpy()
    assert got.shape == want.shape == (len(probes), AUDIOSET_CLASSES)
    assert float(got.min()) >= 0.0 and float(got.max()) <= 1.0
    assert float(want.std()) > 0.02, "the random model saturates: the comparison would say nothing"
    err = float(np.abs(got - want).max())
    assert err < PROBS_ATOL, f"ONNX vs torch on librosa's log-mel: {err:.3e}"


def test_cli_export_with_labels_runs_in_a_pipeline(checkpoint: Path, tmp_path: Path) -> None:
    from avstream.engine.inference.contract import read_model

    labels_csv(tmp_path / "class_labels_indices.csv")
    r = run_cli("export", "audio-tagger", "--checkpoint", str(checkpoint), "--labels", "class_labels_indices.csv",
                "--seconds", "1", "--out", "tags.onnx", cwd=tmp_path, timeout=180)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "reference probabilities max abs" in r.stdout and "wrote tags.onnx" in r.stdout
    contract, header = read_model(tmp_path / "tags.onnx")
    assert contract.task == "audio_tags" and contract.ref == "panns-cnn14@1"
    assert [o.name for o in header.outputs] == ["probabilities"] and list(header.outputs[0].shape)[1:] == [527]
    assert contract.labels[:2] == ("Sound 0, kind 0", "Sound 1, kind 1") and len(contract.labels) == 527
    assert contract.audio is not None and (contract.audio.sample_rate, contract.audio.samples) == (32000, 32000)
    raw = contract.raw
    assert raw["multi_label"] is True and raw["audio_tags"]["mids"][1] == "/m/00001"
    assert raw["audio_tags"]["widths"] == list(WIDTHS) and raw["audio_tags"]["front_end"]["fmax"] == 14000.0

    endpoint = f"tcp://127.0.0.1:{free_port()}"
    (tmp_path / "p.yaml").write_text(f"""
version: 1
name: tags
streams:
  mic: {{uri: "synthetic://scene?seed=3&duration=3", realtime: false}}
nodes:
  window: {{type: avstream/av_window@v1, inputs: [mic]}}
  tags: {{type: avstream/onnx_encoder@v1, inputs: [window], params: {{model: tags.onnx, threads: 1}}}}
outputs:
  publish: {{endpoint: "{endpoint}", wait_for_subscribers: 1}}
""")
    got, err = run_and_receive(["p.yaml", "--quiet"], endpoint, "audio_tags", cwd=tmp_path)
    assert [h["t0"] for h, _ in got] == [0.0, 1.0, 2.0], err
    for head, (probs,) in got:
        assert head["model"] == "panns-cnn14@1" and head["payloads"][0]["name"] == "probabilities"
        assert probs.shape == (527,) and np.all((probs >= 0) & (probs <= 1))
    assert abs(float(got[0][1][0].sum()) - 1.0) > 1e-3  # sigmoids, not a softmax


def test_without_labels_the_classes_are_numbered(checkpoint: Path, tmp_path: Path) -> None:
    from avstream.engine.inference.contract import read_model

    r = invoke_cli("export", "audio-tagger", "--checkpoint", str(checkpoint), "--seconds", "1",
                   "--out", str(tmp_path / "n.onnx"))
    assert r.exit_code == 0, r.output + r.stderr
    assert "no --labels" in r.output
    contract, _ = read_model(tmp_path / "n.onnx")
    assert contract.labels[0] == "class_0" and contract.labels[-1] == "class_526"
    assert "class_labels_indices.csv" in contract.raw["audio_tags"]["labels_note"]


def test_a_bare_state_dict_loads(tmp_path: Path) -> None:
    state = make_state(classes=10, seed=1)
    tagger = load_cnn14(save(tmp_path / "bare.pth", state, wrap=False), seconds=1.0)
    assert tagger.classes == 10 and tagger.extra["widths"] == list(WIDTHS)


def _other_architecture(d: Path) -> None:
    state = make_state()
    for key in [k for k in state if k.startswith(("conv_block5", "conv_block6"))]:
        del state[key]  # what a Cnn10 checkpoint lacks
    state["fc_esc50.weight"] = torch.zeros(50, 32)
    save(d / "ckpt.pth", state)


@pytest.mark.parametrize("make, args, message", [
    (lambda d: None, [], "ckpt.pth: checkpoint file not found"),
    (lambda d: (d / "ckpt.pth").write_bytes(b"not a checkpoint"), [], "cannot read it as a PyTorch checkpoint"),
    (lambda d: torch.save({"model": make_state(), "sampler": {"state": np.random.get_state()}}, str(d / "ckpt.pth")),
     [], "holds Python objects besides tensors (numpy"),
    (_other_architecture, [], "not a PANNs Cnn14 checkpoint: missing 24 keys (conv_block5.bn1.bias"),
    (lambda d: save(d / "ckpt.pth", make_state(front=FrontEnd(16000, 512, 160, 64, 50, 8000))), [],
     "the checkpoint's STFT window is 512 samples, not --window-size 1024"),
    (lambda d: save(d / "ckpt.pth", {**make_state(), "conv_block2.conv1.weight": torch.zeros(8, 5, 3, 3)}), [],
     "the Cnn14 layers do not fit together: size mismatch for conv_block2.conv1.weight"),
    (lambda d: save(d / "ckpt.pth", make_state()), ["--seconds", "inf"], "a window of inf s"),
    (lambda d: save(d / "ckpt.pth", make_state()), ["--fmax", "8000"], "melW is not the Slaney mel bank"),
    (lambda d: save(d / "ckpt.pth", make_state()), ["--seconds", "0.2"], "use at least 0.31 s"),
    (lambda d: save(d / "ckpt.pth", make_state()), ["--labels", "{d}/none.csv"], "none.csv: cannot read"),
    (lambda d: (save(d / "ckpt.pth", make_state()), labels_csv(d / "l.csv", 5)), ["--labels", "{d}/l.csv"],
     "l.csv: 5 labels, but the checkpoint has 527 classes"),
    (lambda d: (d / "l.csv").write_text("id,name\n0,x\n"), ["--labels", "{d}/l.csv"],
     "expected the header index,mid,display_name"),
    (lambda d: (d / "l.csv").write_text("index,mid,display_name\n0,/m/a,A\n0,/m/b,B\n"), ["--labels", "{d}/l.csv"],
     "l.csv:3: index 0 appears twice"),
])
def test_user_mistakes_exit_2_with_one_line(tmp_path: Path, make: Any, args: list[str], message: str) -> None:
    make(tmp_path)
    args = [a.replace("{d}", str(tmp_path)) for a in args]
    r = invoke_cli("export", "audio-tagger", "--checkpoint", str(tmp_path / "ckpt.pth"), *args,
                   "--out", str(tmp_path / "x.onnx"))
    assert r.exit_code == 2, r.output + r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in r.stderr, r.stderr
    assert not (tmp_path / "x.onnx").exists()


def test_read_labels_keeps_the_csv_order_by_index(tmp_path: Path) -> None:
    path = tmp_path / "l.csv"
    path.write_text('index,mid,display_name\n1,/m/b,"Dog, bark"\n0,/m/a,Speech\n')
    labels = read_labels(path)
    assert labels.names == ["Speech", "Dog, bark"] and labels.mids == ["/m/a", "/m/b"]
    path.write_text("index,mid,display_name\n0,/m/a,A\n2,/m/c,C\n")
    with pytest.raises(ModelError, match=r"missing \[1\]"):
        read_labels(path)


def test_the_export_group_lists_the_subcommand() -> None:
    r = invoke_cli("export", "--help")
    assert r.exit_code == 0 and "audio-tagger" in r.output
    r = invoke_cli("export", "audio-tagger", "--help")
    assert r.exit_code == 0 and "--labels" in r.output and "--checkpoint" in r.output
