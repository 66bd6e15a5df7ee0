"""The log parsing and bookkeeping of benchmarks/bench_translation_real.py (no training)."""
import argparse
import json
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))
import bench_translation_real as bench  # noqa: E402

TRAIN_LOG = """\
2026-12-01 22:31:40 | INFO | train_inner | epoch 001:     10 / 162 loss=13.41, nll_loss=13.383, wps=900.5, ups=1.46, num_updates=10
2026-12-01 22:31:45 | INFO | train_inner | epoch 001:     20 / 162 loss=12.1, nll_loss=12.0, wps=2000.0, ups=1.5, num_updates=20
2026-12-01 22:31:49 | INFO | valid | epoch 001 | valid on 'valid' subset | loss 10.162 | nll_loss 9.846 | ppl 920.24 | wps 2453.5 | wpb 1045.2 | bsz 90.9 | num_updates 100
2026-12-01 22:31:50 | INFO | train_inner | epoch 001:     30 / 162 loss=11.0, nll_loss=10.9, wps=3000.0, ups=1.5, num_updates=30
2026-12-01 22:32:49 | INFO | valid | epoch 001 | valid on 'valid' subset | loss 8.5 | nll_loss 8.0 | ppl 256 | wps 2400 | wpb 1045.2 | bsz 90.9 | num_updates 200 | best_loss 8.5
"""


def test_valid_curve_and_tokens_per_second_from_a_fairseq_log():
    assert bench.valid_curve(TRAIN_LOG) == [[100, 10.162, 9.846], [200, 8.5, 8.0]]
    assert bench.median_wps(TRAIN_LOG) == 2500.0  # the first interval left out
    assert bench.updates_to_reach([[100, 10.1, 9.8], [200, 8.5, 8.0]], 9.0) == 200
    assert bench.updates_to_reach([[100, 10.1, 9.8]], 9.0) is None


def test_hypotheses_are_the_detokenized_lines_in_test_order():
    gen = "S-1\tzwei\nH-1\t-0.1\t▁zwei\nD-1\t-0.1\tzwei Wörter\nD-0\t-0.2\teins\nD-2\t-0.3\t\n"
    assert bench.read_hypotheses(gen) == ["eins", "zwei Wörter", ""]


def test_a_tag_keeps_one_configuration_and_the_chosen_lr_is_the_lowest_valid_loss(tmp_path, monkeypatch):
    monkeypatch.setattr(bench, "RUNS", str(tmp_path))
    cfg = bench.Config(lrs=[1e-3, 2e-3], seeds=[1, 2])
    bench.check_config("t", cfg)
    bench.check_config("t", bench.Config(lrs=[5e-4], seeds=[7]))  # lrs and seeds may grow
    with pytest.raises(SystemExit, match="another configuration"):
        bench.check_config("t", bench.Config(dim=256))
    assert bench.chosen_lr("t", cfg, "rescale") is None  # sweep not finished
    assert bench.next_sweep_lr("t", cfg, "rescale") is None  # nor the first grid
    _write_result(1e-3, 5.0, "done")
    _write_result(2e-3, None, "diverged")
    # the low edge wins: the sweep goes on below it before an lr is chosen
    assert bench.next_sweep_lr("t", cfg, "rescale") == 5e-4
    assert bench.chosen_lr("t", cfg, "rescale") is None
    _write_result(5e-4, 5.5, "done")
    assert bench.next_sweep_lr("t", cfg, "rescale") is None
    assert bench.chosen_lr("t", cfg, "rescale") == 1e-3


def _write_result(lr, loss, status, method="rescale", seed=1):
    os.makedirs(bench.run_dir("t", method, lr, seed))
    with open(os.path.join(bench.run_dir("t", method, lr, seed), "result.json"), "w") as f:
        json.dump({"lr": lr, "status": status, "final_valid_loss": loss}, f)


def test_the_sweep_goes_past_a_winning_high_edge_at_most_max_extensions_times(tmp_path, monkeypatch):
    monkeypatch.setattr(bench, "RUNS", str(tmp_path))
    cfg = bench.Config(lrs=[1e-3, 2e-3], seeds=[1], max_extensions=2)
    _write_result(1e-3, 6.0, "done", "postln")
    _write_result(2e-3, 5.5, "done", "postln")
    assert bench.next_sweep_lr("t", cfg, "postln") == 4e-3
    _write_result(4e-3, 5.0, "done", "postln")
    assert bench.next_sweep_lr("t", cfg, "postln") == 8e-3
    _write_result(8e-3, 4.9, "done", "postln")
    assert bench.next_sweep_lr("t", cfg, "postln") is None  # two extensions: the budget of the sweep
    assert bench.chosen_lr("t", cfg, "postln") == 8e-3
    # every lr diverged: the sweep goes down, and no lr is chosen if all of it diverges
    for lr in (1e-3, 2e-3):
        _write_result(lr, None, "diverged", "noln")
    assert bench.next_sweep_lr("t", cfg, "noln") == 5e-4
    _write_result(5e-4, None, "diverged", "noln")
    _write_result(2.5e-4, None, "diverged", "noln")
    assert bench.next_sweep_lr("t", cfg, "noln") is None and bench.chosen_lr("t", cfg, "noln") is None


def test_missing_data_is_refused_with_the_command_that_makes_it(tmp_path):
    with pytest.raises(SystemExit, match="prepare_gettext --locale-dir /usr/share/locale --lang de"):
        bench.check_data(str(tmp_path / "nothing"), "de")


def test_a_method_may_start_from_its_own_lr_and_bad_method_lrs_are_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(bench, "RUNS", str(tmp_path))
    cfg = bench.Config(lrs=[1e-3, 2e-3], seeds=[1], max_extensions=1, method_lrs={"rescale": [4e-3]})
    assert cfg.grid("rescale") == [4e-3] and cfg.grid("postln") == [1e-3, 2e-3]
    bench.check_config("t", cfg)
    bench.check_config("t", bench.Config())  # the grids are not part of a tag's configuration
    _write_result(4e-3, None, "diverged")
    assert bench.next_sweep_lr("t", cfg, "rescale") == 2e-3  # diverged at its own lr: one step down
    _write_result(2e-3, 5.0, "done")
    assert bench.next_sweep_lr("t", cfg, "rescale") is None and bench.chosen_lr("t", cfg, "rescale") == 2e-3
    # with no extension the single lr is the choice, or none when it diverged
    only = bench.Config(seeds=[1], max_extensions=0, method_lrs={"dyt": [8e-3], "noln": [4e-3]})
    _write_result(8e-3, 5.2, "done", "dyt")
    _write_result(4e-3, None, "diverged", "noln")
    assert bench.next_sweep_lr("t", only, "dyt") is None and bench.chosen_lr("t", only, "dyt") == 8e-3
    assert bench.next_sweep_lr("t", only, "noln") is None and bench.chosen_lr("t", only, "noln") is None
    parser = bench.argparse.ArgumentParser()
    assert bench.parse_method_lrs(parser, ["postln=2e-3,1e-3", "dyt=8e-3"]) == {"postln": [2e-3, 1e-3], "dyt": [8e-3]}
    for bad in (["layernorm=1e-3"], ["rescale=fast"], ["rescale=-1e-3"], ["rescale"]):
        with pytest.raises(SystemExit):
            bench.parse_method_lrs(parser, bad)


def test_a_run_that_made_no_progress_fails_like_a_diverged_one(tmp_path, monkeypatch):
    # post-LN 6+6 at its 3+3 lr: valid loss 10.1 at update 100, 11.05 at the end, BLEU 0
    monkeypatch.setattr(bench, "RUNS", str(tmp_path))
    cfg = bench.Config(seeds=[1], max_extensions=1, method_lrs={"postln": [2e-3]})
    _write_result(2e-3, 11.05, "done", "postln")
    path = os.path.join(bench.run_dir("t", "postln", 2e-3, 1), "result.json")
    with open(path) as f:
        r = json.load(f)
    r["valid_curve"] = [[100, 10.1, 9.7], [200, 9.3, 8.9], [300, 11.05, 10.7]]
    with open(path, "w") as f:
        json.dump(r, f)
    assert bench.outcome(r) == "no progress"
    assert bench.next_sweep_lr("t", cfg, "postln") == 1e-3  # down, not up
    assert bench.chosen_lr("t", cfg, "postln") is None
    _write_result(1e-3, 6.0, "done", "postln")  # a curve that falls, or none recorded: done
    assert bench.chosen_lr("t", cfg, "postln") == 1e-3
    assert bench.outcome({"status": "done", "final_valid_loss": 6.0, "valid_curve": [[100, 9.0, 8.0], [200, 6.0, 5.0]]}) == "done"
    assert bench.outcome({"status": "diverged", "final_valid_loss": None}) == "diverged"


def test_the_depth_tables_extend_only_down(tmp_path, monkeypatch):
    monkeypatch.setattr(bench, "RUNS", str(tmp_path))
    cfg = bench.Config(seeds=[1], max_extensions=2, extend_up=False, method_lrs={"preln": [4e-3], "noln": [4e-3]})
    bench.check_config("t", cfg)
    bench.check_config("t", bench.Config(seeds=[1]))  # extend_up is not part of a tag's configuration
    _write_result(4e-3, 5.2, "done", "preln")  # trained: kept, not extended up
    assert bench.next_sweep_lr("t", cfg, "preln") is None and bench.chosen_lr("t", cfg, "preln") == 4e-3
    _write_result(4e-3, None, "diverged", "noln")
    assert bench.next_sweep_lr("t", cfg, "noln") == 2e-3
    _write_result(2e-3, None, "diverged", "noln")
    assert bench.next_sweep_lr("t", cfg, "noln") == 1e-3
    _write_result(1e-3, None, "diverged", "noln")
    assert bench.next_sweep_lr("t", cfg, "noln") is None and bench.chosen_lr("t", cfg, "noln") is None


def _write_curve(method, lr, curve):
    _write_result(lr, curve[-1][1], "done", method)
    path = os.path.join(bench.run_dir("t", method, lr, 1), "result.json")
    with open(path) as f:
        r = json.load(f)
    r["valid_curve"] = curve
    with open(path, "w") as f:
        json.dump(r, f)
    return r


def test_a_run_that_ends_on_the_word_frequency_plateau_fails_only_where_it_must_beat_it(tmp_path, monkeypatch):
    # DyT 18+18 at its 3+3 lr: 10.20 at update 100, then 10.08 at the end, the corpus's
    # word-frequency plateau (10.07): it learned the target frequencies and nothing else
    monkeypatch.setattr(bench, "RUNS", str(tmp_path))
    strict = bench.Config(seeds=[1], max_extensions=2, extend_up=False, must_beat=10.07 - 1, method_lrs={"dyt": [8e-3]})
    lenient = bench.Config(seeds=[1], max_extensions=2, extend_up=False, method_lrs={"dyt": [8e-3]})
    bench.check_config("t", strict)
    bench.check_config("t", lenient)  # must_beat is a sweep rule, not part of a tag's configuration
    stalled = _write_curve("dyt", 8e-3, [[100, 10.20, 9.85], [600, 10.09, 9.74], [1200, 10.08, 9.74]])
    assert bench.outcome(stalled) == "done" and bench.chosen_lr("t", lenient, "dyt") == 8e-3
    assert bench.outcome(stalled, 9.07) == "stalled"
    assert bench.chosen_lr("t", strict, "dyt") is None and bench.next_sweep_lr("t", strict, "dyt") == 4e-3
    _write_curve("dyt", 4e-3, [[100, 10.1, 9.8], [600, 7.4, 7.0], [1200, 6.9, 6.5]])  # slow, but learning
    # below a failed lr the low edge wins, so the sweep checks one more factor 2 down
    assert bench.next_sweep_lr("t", strict, "dyt") == 2e-3 and bench.chosen_lr("t", strict, "dyt") is None
    _write_curve("dyt", 2e-3, [[100, 10.3, 9.9], [600, 8.0, 7.6], [1200, 7.2, 6.8]])
    assert bench.next_sweep_lr("t", strict, "dyt") is None and bench.chosen_lr("t", strict, "dyt") == 4e-3
    # the bar itself fails; the no-progress rule comes first
    assert bench.outcome({"status": "done", "final_valid_loss": 9.07, "valid_curve": [[100, 10.0, 9.0], [200, 9.07, 8.0]]}, 9.07) == "stalled"
    assert bench.outcome({"status": "done", "final_valid_loss": 11.0, "valid_curve": [[100, 10.0, 9.0], [200, 11.0, 10.0]]}, 9.07) == "no progress"


def test_the_word_frequency_plateau_is_fairseqs_loss_of_the_best_context_free_model(tmp_path):
    pytest.importorskip("fairseq")
    import math

    import torch
    from fairseq.criterions.label_smoothed_cross_entropy import label_smoothed_nll_loss
    from fairseq.data import Dictionary

    train = ["a a a b", "a b c", "a"]
    valid = ["a b", "c c d"]  # "d" is not in the dictionary: <unk>
    vocab = Dictionary()
    for w in "abc":
        vocab.add_symbol(w)
    os.makedirs(tmp_path / "bpe")
    os.makedirs(tmp_path / "data-bin")
    vocab.save(str(tmp_path / "data-bin" / "dict.de.txt"))
    (tmp_path / "bpe" / "train.de").write_text("\n".join(train) + "\n")
    (tmp_path / "bpe" / "valid.de").write_text("\n".join(valid) + "\n")
    plateau = bench.word_frequency_plateau(str(tmp_path), "de")

    loaded = Dictionary.load(str(tmp_path / "data-bin" / "dict.de.txt"))
    target = torch.tensor([loaded.index(w) for line in valid for w in line.split() + ["</s>"]])
    counts = torch.zeros(len(loaded))
    for line in train:
        for w in line.split() + ["</s>"]:
            counts[loaded.index(w)] += 1

    def loss_of(q):
        lprobs = q.log().expand(len(target), -1)
        loss, _ = label_smoothed_nll_loss(lprobs, target.unsqueeze(-1), 0.1, reduce=True)
        return loss.item() / len(target) / math.log(2)

    v = len(loaded)
    best = (1 - 0.1 - 0.1 / (v - 1)) * counts / counts.sum() + 0.1 / (v - 1)
    assert plateau == pytest.approx(loss_of(best), rel=1e-6)
    # on text with the train frequencies no other context-free distribution does better
    (tmp_path / "bpe" / "valid.de").write_text("\n".join(train) + "\n")
    target = torch.tensor([loaded.index(w) for line in train for w in line.split() + ["</s>"]])
    plateau = bench.word_frequency_plateau(str(tmp_path), "de")
    assert plateau == pytest.approx(loss_of(best), rel=1e-6)
    for other in (counts / counts.sum() * 0.9 + 0.1 / v, torch.full((v,), 1.0 / v), (best + 0.01) / (best + 0.01).sum()):
        assert loss_of(other) > plateau


def test_valid_curve_counts_a_validation_repeated_by_a_resumed_sitting_once():
    resumed = TRAIN_LOG + f"\n{bench.RESUMED}\n" + TRAIN_LOG.replace("loss 8.5 |", "loss 8.25 |")
    assert bench.valid_curve(resumed) == [[100, 10.162, 9.846], [200, 8.25, 8.0]]
    # each sitting's own span of time stamps: 69 s, twice
    assert bench.sittings_seconds(TRAIN_LOG) == 69.0 and bench.sittings_seconds(resumed) == 138.0


def test_save_every_must_be_a_multiple_of_validate_every(capsys):
    with pytest.raises(SystemExit):
        bench.main(["--save-every", "150", "--validate-every", "100"])
    assert "multiple of --validate-every" in capsys.readouterr().err


def _corpus(tmp_path):
    """A French corpus made by prepare_gettext from generated catalogs (60 pairs, 8 valid, 8 test)."""
    pytest.importorskip("fairseq")
    pytest.importorskip("sentencepiece")
    from projects.translation import prepare_gettext
    from test_translation_gettext import _sentences, write_mo

    write_mo(str(tmp_path / "locale" / "fr" / "LC_MESSAGES" / "a.mo"), dict(_sentences()))
    data = tmp_path / "corpus"
    prepare_gettext.main(["--locale-dir", str(tmp_path / "locale"), "--lang", "fr", "--output", str(data),
                          "--valid", "8", "--test", "8", "--vocab-size", "60", "--seed", "3"])
    return data


def test_the_forward_at_init_blows_up_without_layernorm_and_not_with_rescaling(tmp_path, capsys):
    import translation_diagnose

    data = _corpus(tmp_path)
    translation_diagnose.main(["init", "--data", str(data), "--lang", "fr", "--layers", "6",
                               "--methods", "noln", "rescale", "preln"])
    rows = {line.split("|")[1].strip(): [float(x) for x in line.split("|")[2:4]]
            for line in capsys.readouterr().out.splitlines() if line.startswith("| ") and "method" not in line}
    assert set(rows) == {"noln", "rescale", "preln"}
    assert 0.5 < rows["rescale"][0] < 2 and 0.5 < rows["preln"][0] < 2  # logit sd
    assert rows["noln"][0] > 5 * rows["rescale"][0] and rows["noln"][1] > rows["rescale"][1]
    with pytest.raises(SystemExit):
        translation_diagnose.main(["init", "--data", str(tmp_path / "nowhere")])


def test_an_interrupted_run_resumes_from_its_checkpoint_and_scores_as_if_uninterrupted(tmp_path, monkeypatch):
    """--save-every: a run killed after update 5 (its checkpoint_last.pt from update 4) is
    resumed by the next call and ends with the uninterrupted run's curve and BLEU."""
    data = _corpus(tmp_path)
    monkeypatch.setattr(bench, "RUNS", str(tmp_path / "runs"))
    cfg = bench.Config(layers=1, dim=32, ffn=64, heads=2, max_update=8, warmup=2, validate_every=2,
                       max_tokens=128, lrs=[1e-3], seeds=[1], save_every=2)  # 4 updates an epoch
    injector = os.path.join(os.path.dirname(bench.__file__), "fault_injection")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (injector, os.environ.get("PYTHONPATH")) if p))
    monkeypatch.setenv("FAULT_INJECT", "after_step:5")
    with pytest.raises(RuntimeError):
        bench.train_and_score(str(data), "fr", "t", cfg, "rescale", 1e-3, 1, threads=1)
    out = bench.run_dir("t", "rescale", 1e-3, 1)
    assert os.path.exists(os.path.join(out, "checkpoint_last.pt")) and bench.load_result("t", "rescale", 1e-3, 1) is None
    monkeypatch.delenv("FAULT_INJECT")
    resumed = bench.train_and_score(str(data), "fr", "t", cfg, "rescale", 1e-3, 1, threads=1)
    whole = bench.train_and_score(str(data), "fr", "whole", cfg, "rescale", 1e-3, 1, threads=1)
    assert (resumed["sittings"], whole["sittings"]) == (2, 1)
    with open(os.path.join(out, "train.log")) as f:
        assert "@ 4 updates)" in f.read().split(bench.RESUMED)[1]  # fairseq's "Loaded checkpoint ..."
    assert [u for u, _, _ in whole["valid_curve"]] == [2, 4, 6, 8]
    assert resumed["valid_curve"] == whole["valid_curve"] and resumed["bleu"] == whole["bleu"]
    assert resumed["status"] == whole["status"] == "done"
    # without --save-every an interrupted run starts again from nothing
    plain = bench.Config(**{**bench.asdict(cfg), "save_every": 0})
    with open(os.path.join(out, "result.json")) as f:
        assert json.load(f)["sittings"] == 2
    os.remove(os.path.join(out, "result.json"))
    again = bench.train_and_score(str(data), "fr", "t", plain, "rescale", 1e-3, 1, threads=1)
    assert again["sittings"] == 1 and again["valid_curve"] == whole["valid_curve"]
    with open(os.path.join(out, "train.log")) as f:
        assert bench.RESUMED not in f.read()


def test_the_plot_draws_chosen_runs_failed_methods_dashed_and_names_the_diverged(tmp_path, monkeypatch):
    monkeypatch.setattr(bench, "RUNS", str(tmp_path))
    cfg = bench.Config(seeds=[1], max_extensions=1, extend_up=False, must_beat=9.0,
                       method_lrs={"rescale": [4e-3], "dyt": [8e-3], "noln": [4e-3]})

    def run(method, lr, status, curve, bleu):
        os.makedirs(bench.run_dir("t", method, lr, 1))
        with open(os.path.join(bench.run_dir("t", method, lr, 1), "result.json"), "w") as f:
            json.dump({"method": method, "lr": lr, "seed": 1, "status": status, "valid_curve": curve, "bleu": bleu,
                       "final_valid_loss": curve[-1][1] if curve else None, "wps": 1000.0, "train_seconds": 60.0}, f)

    run("rescale", 4e-3, "done", [[100, 9.6, 9.3], [200, 6.0, 5.7]], 20.0)
    run("dyt", 8e-3, "done", [[100, 10.2, 9.9], [200, 10.1, 9.7]], 0.0)
    run("dyt", 4e-3, "done", [[100, 10.2, 9.9], [200, 10.08, 9.7]], 0.0)
    run("noln", 4e-3, "diverged", [], None)
    args = argparse.Namespace(tag="t", methods=["rescale", "dyt", "noln"], target_loss=6.5, min_gain=1.0,
                              plot=str(tmp_path / "depth.png"), data="corpus")
    drawn = {}
    real_plot = bench.plot_curves
    monkeypatch.setattr(bench, "plot_curves", lambda curves, path, title, **kw: drawn.update(curves=curves, **kw))
    bench.print_tables(args, cfg)
    assert list(drawn["curves"]) == ["rescale"] and drawn["plateau"] == 10.0
    (dyt_run, dyt_label), = [drawn["stalled"][m] for m in ("dyt",)]
    assert list(drawn["stalled"]) == ["dyt"] and dyt_run["lr"] == 4e-3 and dyt_label == "stalled; failed at every lr"
    assert drawn["diverged"] == {"noln": "diverged, sweep under way"}  # its 2e-3 comes next
    monkeypatch.setattr(bench, "plot_curves", real_plot)
    bench.print_tables(args, cfg)
    assert (tmp_path / "depth.png").stat().st_size > 10000


# valid curves (update, loss) of recorded runs: DyT 18+18 at 2e-3 (stalled on the plateau,
# 9.88 at the end), post-LN 6+6 at 1e-3 (slow, but it trained: 7.74), pre-LN 18+18 at 4e-3
DYT_18_STALLED = [[100, 10.15], [200, 10.04], [300, 9.96], [400, 9.92], [500, 9.93], [600, 9.91], [700, 9.90],
                  [800, 9.91], [900, 9.91], [1000, 9.90], [1100, 9.88], [1200, 9.88]]
POSTLN_6_SLOW = [[100, 10.17], [200, 9.98], [300, 9.61], [400, 9.43], [500, 9.23], [600, 9.06], [700, 8.78],
                 [800, 8.55], [900, 8.36], [1000, 8.17], [1100, 7.90], [1200, 7.74]]
PRELN_18 = [[100, 9.98], [200, 9.53], [300, 8.95], [400, 8.60], [500, 8.31], [600, 8.00], [700, 7.80],
            [800, 7.59], [900, 7.45], [1000, 7.28], [1100, 7.03], [1200, 6.92]]


def test_stop_stalled_stops_a_run_only_where_its_own_pace_cannot_take_it_below_the_bar():
    cfg = bench.Config(max_update=1200, must_beat=9.07, stop_stalled=True)
    assert bench.hopeless_at(DYT_18_STALLED, cfg) == 600  # half the budget: checked from there on
    assert bench.hopeless_at(POSTLN_6_SLOW, cfg) is None and bench.hopeless_at(PRELN_18, cfg) is None
    assert bench.hopeless_at(DYT_18_STALLED, bench.Config(max_update=1200)) is None  # no bar, no rule
    # above the bar at 600 but on its way under it at its pace (-0.2 per 100 updates): goes on
    slow = [[u, 10.0 - 0.002 * (u - 300) if u >= 300 else 10.0] for u in range(100, 1300, 100)]
    assert slow[5] == [600, 9.4] and bench.hopeless_at(slow, cfg) is None
    # the same pace a step too slow to get under the bar by 1200: stopped
    slower = [[u, 10.0 - 0.0005 * (u - 300) if u >= 300 else 10.0] for u in range(100, 1300, 100)]
    assert bench.hopeless_at(slower, cfg) == 600
    # climbing past its first validation (post-LN past its lr ceiling): stopped at 600 as well
    climbing = [[100, 10.11], [200, 10.14], [300, 10.11], [400, 10.10], [500, 10.12], [600, 10.48], [700, 11.26]]
    assert bench.hopeless_at(climbing, cfg) == 600
    assert bench.hopeless_at(DYT_18_STALLED[:5], cfg) is None  # not yet at half the budget
    stopped = {"status": "stopped", "stopped_at": 600, "final_valid_loss": 9.91, "valid_curve": DYT_18_STALLED[:6]}
    assert bench.outcome(stopped, 9.07) == "stalled" and bench.status_text(stopped, 9.07) == "stalled (stopped at 600)"


def test_a_command_is_stopped_without_an_error_when_its_log_says_so(tmp_path):
    from projects.translation import toy_task

    script = "import sys, time\nfor i in range(50):\n    print(f'line {i}', flush=True)\n    time.sleep(0.1)\n"
    seen = []

    def stop(text):
        seen.append(text)
        return "line 3\n" in text

    out = toy_task.run([sys.executable, "-c", script], log=str(tmp_path / "a.log"), stop=stop, poll_seconds=0.05)
    assert "line 3\n" in out and "line 49" not in out
    assert all(t.endswith("\n") or not t for t in seen)  # complete lines only
    # a command that ends by itself: stop is asked, the output is whole; a failure still raises
    out = toy_task.run([sys.executable, "-c", "print('done')"], log=str(tmp_path / "b.log"), stop=lambda t: False)
    assert out == "done\n"
    with pytest.raises(RuntimeError, match="command failed"):
        toy_task.run([sys.executable, "-c", "raise SystemExit(3)"], log=str(tmp_path / "c.log"), stop=lambda t: False)
    import subprocess

    with pytest.raises(subprocess.TimeoutExpired):
        toy_task.run([sys.executable, "-c", "import time; time.sleep(30)"], log=str(tmp_path / "d.log"), timeout=0.5)
    with pytest.raises(ValueError, match="log=PATH"):
        toy_task.run([sys.executable, "-c", "print('done')"], stop=lambda t: True)


def _valid_line(update, loss):
    return (f"2026-12-06 10:00:00 | INFO | valid | epoch 001 | valid on 'valid' subset | loss {loss} | nll_loss {loss - 0.3:.2f}"
            f" | ppl 1 | wps 1 | wpb 1 | bsz 1 | num_updates {update}\n")


class _Generating(Exception):
    """Raised by the fake fairseq when the bench calls fairseq-generate."""


def test_a_stopped_run_is_recorded_as_stalled_with_the_curve_it_had_and_no_bleu(tmp_path, monkeypatch):
    from projects.translation import toy_task

    monkeypatch.setattr(bench, "RUNS", str(tmp_path))
    stops = []

    def fake_fairseq(cmd, env=None, timeout=None, log=None, append=False, stop=None):
        """fairseq-train writing the DyT curve; its stop check sees each validation from 700
        on (one validation logged between the rule firing at 600 and the stop landing)."""
        if "generate" in " ".join(cmd):
            raise _Generating
        stops.append(stop)
        text = ""
        for update, loss in DYT_18_STALLED:
            text += _valid_line(update, loss)
            if stop is not None and update > 600 and stop(text):
                break
        with open(log, "w") as f:
            f.write(text)
        return text

    monkeypatch.setattr(toy_task, "run", fake_fairseq)
    cfg = bench.Config(layers=50, max_update=1200, seeds=[1], must_beat=9.07, stop_stalled=True, save_every=100)
    r = bench.train_and_score(str(tmp_path / "corpus"), "de", "t", cfg, "dyt", 8e-3, 1, threads=1)
    assert (r["status"], r["stopped_at"], r["bleu"], r["final_valid_loss"]) == ("stopped", 600, None, 9.91)
    assert [u for u, _, _ in r["valid_curve"]] == [100, 200, 300, 400, 500, 600]
    assert bench.load_result("t", "dyt", 8e-3, 1) == r  # recorded; no fairseq-generate was called
    assert bench.outcome(r, cfg.must_beat) == "stalled"
    # without --stop-stalled the same run goes to the end and on to fairseq-generate
    plain = bench.Config(**{**bench.asdict(cfg), "stop_stalled": False})
    with pytest.raises(_Generating):
        bench.train_and_score(str(tmp_path / "corpus"), "de", "t2", plain, "dyt", 8e-3, 1, threads=1)
    assert stops[-1] is None
    with open(os.path.join(bench.run_dir("t2", "dyt", 8e-3, 1), "train.log")) as f:
        assert bench.valid_curve(f.read())[-1][0] == 1200


def test_stop_stalled_needs_min_gain(capsys):
    with pytest.raises(SystemExit):
        bench.main(["--stop-stalled"])
    assert "give --min-gain" in capsys.readouterr().err
