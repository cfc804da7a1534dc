"""``python -m pipeline.synth OUT``: write a synthetic FMA-format dataset."""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


@app.command()
def synth(
    out: Path = typer.Argument(..., help="Folder to write fma_metadata/ and fma_large/ into."),
    n_per_genre: int = typer.Option(12, help="fma_small tracks per genre (8 genres), 3 or more."),
    seconds: float = typer.Option(30.0, help="Length of each clip, s (FMA: 30)."),
    jobs: int = typer.Option(1, help="Parallel encoder processes."),
    seed: int = typer.Option(0, help="Seed of the whole dataset."),
    quality: int = typer.Option(7, help="LAME quality: 2 (best) .. 7 (fastest)."),
) -> None:
    """Write a miniature FMA: real MP3s, a real-layout tracks.csv and genres.csv.
    \f
    Args:
        out: the folder to write fma_metadata/ and fma_large/ into.
        n_per_genre: fma_small tracks per genre (8 genres), 3 or more (else exit 2).
        seconds: length of each clip (s).
        jobs: parallel encoder processes.
        seed: seed of the whole dataset.
        quality: LAME quality, 2 (best) .. 7 (fastest).
    """
    from pipeline.synth import generate

    if n_per_genre < 3:
        typer.echo("error: --n-per-genre must be at least 3 (one track per split)", err=True)
        raise typer.Exit(2)
    ds = generate(out, n_per_genre, seconds, seed=seed, jobs=jobs, quality=quality)
    counts = ds.tracks["subset"].value_counts().reindex(["small", "medium", "large"])
    typer.echo(
        f"wrote {len(ds.track_ids)} tracks ({', '.join(f'{k} {v}' for k, v in counts.items())}; "
        f"{len(ds.broken)} broken) to {ds.root} in {ds.elapsed:.1f} s"
    )


if __name__ == "__main__":
    app()
