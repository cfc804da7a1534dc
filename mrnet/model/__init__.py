"""The models: one `ModelConfig` describes a model, `build_model` makes it.

    mrnet.model.mrnet   MRNet (MRBlock, SE, attentive statistics pooling)
    mrnet.model.cnn     the `cnn` baseline (128x128 mel-image CNN)

This module is light (no torch): the CLI lists the registries' names without loading a
model; `build_model` imports the architecture it builds.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from pipeline.settings import Registry

ARCHITECTURES = Registry(
    "architecture",
    {
        "mrnet": "MRNet, the multi-route dilated 1-D CNN of Heo et al. (2025)",
        "cnn": "the 128x128 mel-image CNN baseline",
    },
    {"mrnet": "mrnet.model.mrnet:MRNet", "cnn": "mrnet.model.cnn:CNNBaseline"},
)
INPUT_NORMS = Registry(
    "input normalisation",
    {
        "instance": "per track and band over time (the authors'; drops the long-term spectrum)",
        "batch": "per band over the training set (keeps each track's long-term spectrum)",
    },
)


LEGACY_INPUT_NORM = "instance"  # what a record made before the setting existed implies


@dataclass(frozen=True)
class ModelConfig:
    """Everything `build_model` needs: the architecture and its settings. Its defaults
    are the one place MRNet's shape is written (the authors' sizes)."""

    arch: str
    n_mels: int
    n_classes: int
    channels: int = 512  # MRNet width C (unused by cnn)
    embed_dim: int = 128
    dilations: tuple[int, ...] = (2, 3, 4)
    scale: int = 8
    dropout: float = 0.5
    # MRNet's first layer: "batch" on log-mels (README, Results: on real music instance
    # norm erases the long-term spectrum that carries timbre); recipes of the authors'
    # setting ask for "instance"
    input_norm: str = "batch"
    # WavLM features: the input is this many hidden states stacked along the feature axis
    # (n_mels = input_layers x dim), summed with learned weights first; 0: a plain input
    input_layers: int = 0
    # a front-end inside the model (FRONTENDS; "": none): "wavlm" computes the stacked
    # hidden states ``ssl_layers`` of the frozen WavLM whose weights have SHA-256
    # ``ssl_sha256`` (its config.json: ``ssl_config``) from waveform frames; the WavLM
    # itself is not part of the weights, it is read from --ssl-model DIR
    frontend: str = ""
    ssl_sha256: str = ""
    ssl_layers: tuple[int, ...] = ()
    ssl_config: dict = field(default_factory=dict, compare=False)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["dilations"] = list(self.dilations)
        if not self.input_layers:  # as recorded before the setting existed
            del d["input_layers"]
        if not self.frontend:
            for name in ("frontend", "ssl_sha256", "ssl_layers", "ssl_config"):
                del d[name]
        else:
            d["ssl_layers"] = list(self.ssl_layers)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        """Validate a recorded config. A record without ``input_norm`` comes from before
        that setting existed, when every MRNet normalised per instance."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown model settings {unknown}")
        d = {"input_norm": LEGACY_INPUT_NORM, **d}
        for name in ("dilations", "ssl_layers"):
            if name in d:
                d[name] = tuple(int(x) for x in d[name])
        cfg = cls(**d)
        if cfg.arch not in ARCHITECTURES:
            raise ValueError(f"unknown arch {cfg.arch!r} (known: {', '.join(ARCHITECTURES)})")
        if cfg.input_norm not in INPUT_NORMS:
            raise ValueError(f"unknown input_norm {cfg.input_norm!r}")
        for name in ("n_mels", "n_classes", "channels", "embed_dim", "scale"):
            if not isinstance(getattr(cfg, name), int) or getattr(cfg, name) < 1:
                raise ValueError(f"{name} must be a positive integer")
        if cfg.input_layers < 0 or (cfg.input_layers and cfg.n_mels % cfg.input_layers):
            raise ValueError(f"input_layers {cfg.input_layers} does not divide n_mels {cfg.n_mels}")
        if cfg.frontend and (
            cfg.frontend not in FRONTENDS
            or not cfg.ssl_sha256
            or len(cfg.ssl_layers) != cfg.input_layers
        ):
            raise ValueError(f"front-end {cfg.frontend!r} is not fully recorded")
        return cfg


FRONTENDS = Registry(
    "front-end",
    {
        "wavlm": "a frozen WavLM (--ssl-model DIR) computes its hidden states from a "
        "waveform cache (preprocess --features wave) inside each step; no gradient reaches it",
    },
)


def build_model(cfg: ModelConfig, ssl=None):
    """The untrained model (a torch module) that ``cfg`` describes; ``ssl``: the loaded
    WavLM (pipeline.ssl.SSLModel) of a model with a front-end, whose weights must be the
    ones ``cfg.ssl_sha256`` names."""
    net = ARCHITECTURES.get(cfg.arch, "--arch")(cfg)
    if not cfg.frontend:
        return net
    from mrnet.model.wavlm import WaveFrontEnd, WithFrontEnd

    if ssl is None or ssl.sha256 != cfg.ssl_sha256:
        raise ValueError("a model with a WavLM front-end needs the WavLM it was built with")
    return WithFrontEnd(WaveFrontEnd(ssl, cfg.ssl_layers), net)
