"""explain: the generation token by token, on every built-in model, and a PNG that opens."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from _records import tiny_target

from ppinvariants.cli import main
from ppinvariants.explain import explain, render


def test_explain_steps_are_consistent(arch: str) -> None:
    target = tiny_target(arch)
    steps = explain(target, "Hello world, how are you?", top_k=3)
    assert steps, "no step explained"
    vocab = target.model.get_output_embeddings().weight.shape[0]
    for s in steps:
        assert len(s.top) == 3
        assert s.logprob <= 0 and 0 <= s.entropy <= math.log(vocab) + 1e-4
        assert s.top[0][2] >= math.exp(s.logprob) - 1e-6  # greedy picks the top token
    assert steps[-1].token_id in target.conventions.eos_token_ids or len(steps) == 24


def test_explain_cli_with_plot(capsys, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    import matplotlib.image

    png = tmp_path / "steps.png"
    code = main(["explain", "tiny:mbart", "The quick brown fox.", "--plot", str(png)])
    out = capsys.readouterr().out
    assert code == 0
    assert "step   0" in out and "top:" in out and "entropy" in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = matplotlib.image.imread(png)
    assert image.shape[0] > 100 and image.shape[1] > 100


def test_explain_rejects_empty_text(capsys) -> None:
    code = main(["explain", "tiny:bart", "   "])
    err = capsys.readouterr().err
    assert code == 2 and "empty or whitespace-only" in err and "Traceback" not in err


def test_same_seed_gives_a_byte_identical_json_report(tmp_path: Path, capsys) -> None:
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    assert main(["check", "tiny:t5", "--json", str(a), "-q"]) == 0
    assert main(["check", "tiny:t5", "--json", str(b), "-q"]) == 0
    capsys.readouterr()
    assert a.read_bytes() == b.read_bytes()


def test_explain_shows_decoded_text_next_to_byte_level_pieces(capsys) -> None:
    target = tiny_target("bart")
    steps = explain(target, "The river runs through the city.", top_k=2)
    spaced = [s for s in steps if s.token.startswith("\u0120")]  # byte-level BPE: 'Ġ' is a space
    assert spaced, [s.token for s in steps]
    assert all(s.text == " " + s.token[1:] for s in spaced)
    assert f"chose {spaced[0].token!r} = {spaced[0].text!r}" in render(steps)
    assert main(["explain", "tiny:bart", "The river runs through the city."]) == 0
    assert "prefix: '</s><s>'  [</s> <s>]" in capsys.readouterr().out


def test_the_plot_is_titled_with_target_and_input(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    import matplotlib.pyplot as plt

    from ppinvariants import explain as explain_module

    titles: list[str] = []
    original = plt.Figure.suptitle

    def spy(self, t, *a, **k):  # noqa: ANN001, ANN002, ANN003, ANN202
        titles.append(t)
        return original(self, t, *a, **k)

    plt.Figure.suptitle = spy
    try:
        steps = explain(tiny_target("bart"), "Hello world.")
        explain_module.plot(steps, tmp_path / "p.png", target="tiny:bart", text="Hello world.")
    finally:
        plt.Figure.suptitle = original
    assert titles and "tiny:bart" in titles[0] and "'Hello world.'" in titles[0]
