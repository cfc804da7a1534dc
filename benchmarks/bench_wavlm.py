"""What the WavLM front-end costs against log-mels, on this machine (CPU or GPU).

    python benchmarks/bench_wavlm.py [--batch 4] [--channels 64] [--repeat 3] [--device cpu]

WavLM is the base-plus architecture (torchaudio.models.wavlm_base: 94.4 M parameters,
12 layers, 768 features) with random weights: the cost does not depend on the weights, and
nothing is downloaded. For a batch of 6-s crops at 16 kHz it times (median of --repeat,
after one warm-up):

1. WavLM's forward alone (`hidden_states`, all 13 states, no gradients), mono and stereo;
2. one training step (forward, backward, AdamW) of MRNet at width --channels on
   - the on-the-fly front-end of `train --frontend wavlm` (waveform frames through the
     frozen WavLM, learned layer weights, MRNet on 768 features per channel), mono and
     stereo,
   - cached features (learned layer weights over 13 stored states, then MRNet),
   - log-mels (MRNet on 128 mels, mrnet's default input);
3. the storage of one 30-s track and of 1,000 tracks in each cache kind (float16 features
   and waveform), computed from the shapes.

It prints one table; training samples/s are batch / step time.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mrnet.model import ModelConfig, build_model  # noqa: E402
from pipeline.ssl import HOP, SAMPLE_RATE, SSLModel, hidden_states  # noqa: E402

CROP_S = 6.0
TRACK_S = 30.0
N_MELS = 128
MEL_FPS = 50  # mrnet's log-mel frame rate, as WavLM's


def timed(fn, repeat: int, device: torch.device) -> float:
    """Median seconds of ``fn()`` over ``repeat`` calls, after one warm-up call."""
    fn()
    times = []
    for _ in range(repeat):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def train_step(modules: list[nn.Module], make_input, target: torch.Tensor):
    """A closure running one forward/backward/AdamW step of ``modules`` in sequence."""
    params = [p for m in modules for p in m.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-3)

    def step() -> None:
        x = make_input()
        for m in modules:
            x = m(x)
        loss = nn.functional.cross_entropy(x, target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--channels", type=int, default=64, help="MRNet width C (paper: 512)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args()
    device = torch.device(a.device)
    torch.manual_seed(0)
    import torchaudio.models

    wavlm = torchaudio.models.wavlm_base().to(device).eval().requires_grad_(False)
    n_params = sum(p.numel() for p in wavlm.parameters())
    ssl = SSLModel(wavlm, {"num_hidden_layers": 12, "hidden_size": 768}, "random", Path("-"))
    b, samples = a.batch, int(CROP_S * SAMPLE_RATE)
    wave = torch.randn(b, 2, samples, device=device)
    target = torch.arange(b, device=device) % 8
    with torch.no_grad():
        frames = hidden_states(wavlm, wave[:, 0]).shape[2]
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {device}; "
        f"WavLM base-plus architecture, random weights ({n_params / 1e6:.1f} M parameters); "
        f"batch {b} x {CROP_S:g}-s crops ({frames} frames); MRNet C={a.channels}"
    )

    def forward(channels: int):
        def run() -> None:
            with torch.no_grad():
                hidden_states(wavlm, wave[:, :channels].reshape(b * channels, samples))

        return run

    rows: list[tuple[str, float]] = []
    for ch, name in ((1, "mono"), (2, "stereo")):
        rows.append((f"WavLM forward only, {name}", timed(forward(ch), a.repeat, device)))

    def mrnet(n_in: int, norm: str, **front) -> nn.Module:
        cfg = ModelConfig(
            "mrnet", n_mels=n_in, n_classes=8, channels=a.channels, input_norm=norm, **front
        )
        return build_model(cfg, ssl if front.get("frontend") else None).to(device).train()

    layers = tuple(range(ssl.n_states))
    n_in = len(layers) * ssl.dim
    steps = {}
    for ch, name in ((1, "mono"), (2, "stereo")):
        # `train --frontend wavlm`: waveform frames (B, C x 320, T) through the frozen
        # WavLM, learned layer weights, MRNet
        live = mrnet(
            n_in * ch,
            "instance",
            input_layers=len(layers),
            frontend="wavlm",
            ssl_sha256=ssl.sha256,
            ssl_layers=layers,
        )
        t = samples // HOP
        x = wave[:, :ch, : t * HOP].unflatten(2, (t, HOP)).transpose(2, 3).reshape(b, ch * HOP, t)
        steps[f"train step, on-the-fly WavLM ({name})"] = train_step([live], lambda x=x: x, target)
    # `preprocess --features wavlm`: the stored states (B, 13 x 768, T) float16
    cached = torch.randn(b, n_in, frames, device=device, dtype=torch.float16)
    steps["train step, cached WavLM features"] = train_step(
        [mrnet(n_in, "instance", input_layers=len(layers))], lambda: cached.float(), target
    )
    mel = torch.randn(b, N_MELS, int(CROP_S * MEL_FPS) + 1, device=device)
    steps["train step, log-mels"] = train_step([mrnet(N_MELS, "batch")], lambda: mel, target)
    for name, step in steps.items():
        rows.append((name, timed(step, a.repeat, device)))

    print(f"\n{'':44s} {'s / batch':>10s} {'samples/s':>10s} {'vs log-mels':>12s}")
    base = rows[-1][1]
    for name, t in rows:
        print(f"{name:44s} {t:10.3f} {b / t:10.1f} {t / base:11.1f}x")

    track_frames = int(TRACK_S * MEL_FPS)
    mb = 1e6
    sizes = {
        "log-mel, float16 [frames, 128]": track_frames * N_MELS * 2 / mb,
        "waveform, float16 mono": TRACK_S * SAMPLE_RATE * 2 / mb,
        "waveform, float16 stereo": TRACK_S * SAMPLE_RATE * 2 * 2 / mb,
        "WavLM, 13 layers x 768, float16, mono": track_frames * 13 * 768 * 2 / mb,
        "WavLM, 13 layers x 768, float16, stereo": track_frames * 13 * 768 * 2 * 2 / mb,
        "WavLM, 1 layer (or weighted sum) mono": track_frames * 768 * 2 / mb,
    }
    mel_mb = sizes["log-mel, float16 [frames, 128]"]
    print(f"\n{'storage of one 30-s track':44s} {'MB':>10s} {'GB/1,000':>10s} {'vs log-mel':>12s}")
    for name, size in sizes.items():
        print(f"{name:44s} {size:10.2f} {size:10.2f} {size / mel_mb:11.1f}x")


if __name__ == "__main__":
    main()
