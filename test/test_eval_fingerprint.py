"""The frames' fingerprint (eval.fingerprint) and Table 5 rows given as earlier eval results
(`v2x-vlm experiments --ablation NAME=FILE.json`): what makes two results comparable, and
every way a file can fail to be."""

import copy
import json
from dataclasses import replace

import numpy as np
import pytest

from v2x_vlm_ros.cli import main
from v2x_vlm_ros.data.dair import DairV2XDataset
from v2x_vlm_ros.eval.experiments import ExperimentError, ExperimentOptions, Experiments, run_experiments
from v2x_vlm_ros.eval.fingerprint import SampleFingerprint, fingerprint, sample_digest


@pytest.fixture(scope="module")
def samples(world):
    ds = DairV2XDataset(world)
    return [ds[i] for i in range(len(ds))]


def test_the_order_frames_are_read_in_does_not_matter(samples):
    assert len(samples) > 100
    shuffled = list(samples)
    np.random.default_rng(0).shuffle(shuffled)
    assert fingerprint(shuffled) == fingerprint(samples)
    fp = SampleFingerprint()
    for s in reversed(samples):
        fp.update(s, "metric", "args", "ignored")
    assert fp.count == len(samples) and fp.hexdigest() == fingerprint(samples)


def test_a_centimetre_of_ground_truth_a_mask_bit_or_an_identity_changes_it(samples):
    base = fingerprint(samples)
    i = next(k for k, s in enumerate(samples) if np.asarray(s.future_mask).all())
    s = samples[i]
    xy = np.array(s.future_xy, dtype=np.float64)
    xy[9, 0] += 0.01
    mask = np.array(s.future_mask, dtype=bool)
    mask[9] = False
    for changed in (replace(s, future_xy=xy), replace(s, future_mask=mask),
                    replace(s, sample_id=s.sample_id + "x"), replace(s, sequence_id=f"{s.sequence_id}x")):
        assert fingerprint(samples[:i] + [changed] + samples[i + 1:]) != base
    assert fingerprint(samples[:-1]) != base  # a frame fewer
    # below the millimetre, and the sign of a zero, are not a different ground truth
    on_mm = replace(s, future_xy=np.round(np.array(s.future_xy, dtype=np.float64), 3))
    assert sample_digest(replace(on_mm, future_xy=on_mm.future_xy + 1e-5)) == sample_digest(on_mm)
    assert sample_digest(replace(on_mm, future_xy=on_mm.future_xy + 1e-3)) != sample_digest(on_mm)
    zero = replace(s, future_xy=np.zeros((10, 2)))
    assert sample_digest(replace(zero, future_xy=-np.zeros((10, 2)))) == sample_digest(zero)


def test_eval_writes_the_fingerprint_of_the_frames_it_scored(world, samples, tmp_path, capsys):
    out = tmp_path / "cv.json"
    assert main(["eval", str(world), "--quiet", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["num_samples"] == len(samples)
    assert result["dataset"]["fingerprint"] == fingerprint(samples)
    straight = tmp_path / "straight.json"
    assert main(["eval", str(world), "--scenario", "straight", "--quiet", "--json", str(straight)]) == 0
    assert json.loads(straight.read_text())["dataset"]["fingerprint"] != result["dataset"]["fingerprint"]


# -- Table 5 rows from earlier eval results --------------------------------------------------------


@pytest.fixture(scope="module")
def ablation_json(world, tiny_model_dir, tmp_path_factory):
    """The tiny model's `v2x-vlm eval --json` on the world, standing for an ablation's run."""
    out = tmp_path_factory.mktemp("ablation_eval") / "no_alignment.json"
    assert main(["eval", str(world), "--planner", "model", "--model", str(tiny_model_dir),
                 "--batch-size", "8",
                 "--quiet", "--json", str(out)]) == 0
    return out


def _table5(world, model, out, ablations):
    options = ExperimentOptions(root=str(world), model=str(model), out=str(out), tables=(5,),
                                ablations=ablations)
    result = run_experiments(options, progress=False)
    return {r["name"]: r for r in result["tables"]["table5"]["rows"]}, result


def test_an_imported_row_equals_the_row_evaluated_from_its_checkpoint(world, tiny_model_dir, ablation_json,
                                                                      tmp_path):
    evaluated, _ = _table5(world, tiny_model_dir, tmp_path / "a", {"no_alignment": str(tiny_model_dir)})
    imported, result = _table5(world, tiny_model_dir, tmp_path / "b", {"no_alignment": str(ablation_json)})
    row, ref = imported["no_alignment"], evaluated["no_alignment"]
    assert ref["status"] == "evaluated"
    assert row["status"] == f"evaluated earlier ({ablation_json})"
    assert row["model_dir"] == str(tiny_model_dir)
    for key in ("num_samples", "l2", "l2_valid_only", "collision", "hidden_hazard"):
        assert row[key] == ref[key], key
    assert row["hidden_hazard"]["num_samples"] > 0
    assert result["runs"]["ablation_no_alignment"]["imported_from"] == str(ablation_json)
    md = (tmp_path / "b" / "tables.md").read_text()
    assert f"evaluated earlier ({ablation_json})" in md


@pytest.fixture(scope="module")
def opened(world, tiny_model_dir, tmp_path_factory):
    """Experiments on the world with its frames read (what checking a file needs), no run yet."""
    ex = Experiments(ExperimentOptions(root=str(world), model=str(tiny_model_dir), tables=(5,),
                                       out=str(tmp_path_factory.mktemp("opened"))), progress=False)
    ex.open()
    return ex


def _mutated(path, tmp_path, change):
    data = json.loads(path.read_text())
    change(data)
    out = tmp_path / "mutated.json"
    out.write_text(json.dumps(data))
    return out


@pytest.mark.parametrize("change, message", [
    (lambda d: d["dataset"].update(fingerprint="0" * 64), "scored on other frames than the"),
    (lambda d: d.update(refine=False), "refinement set otherwise (refine False, these experiments True)"),
    (lambda d: d.update(collision_method="obb"), "another collision test (collision_method 'obb'"),
    (lambda d: d.update(protocol="univ2x"), "another protocol (protocol 'univ2x'"),
    (lambda d: d.update(token_choice_given="mean"), "--token-choice given"),
    (lambda d: d["ablation"].update(roadside="grey"),
     "planned with inputs ablated at inference ({'roadside': 'grey'})"),
    (lambda d: d.pop("refine"), "missing refine"),
    (lambda d: d.pop("model"), "missing model"),
])
def test_a_file_that_does_not_stand_for_a_run_is_refused_with_the_reason(opened, ablation_json, tmp_path,
                                                                         change, message):
    assert opened.imported("as_given", str(ablation_json))["num_samples"] == len(opened.samples)
    bad = _mutated(ablation_json, tmp_path, change)
    with pytest.raises(ExperimentError) as err:
        opened.imported("mutated", str(bad))
    assert str(bad) in str(err.value) and message in str(err.value)


def test_the_frames_of_another_selection_are_refused(opened, world, tiny_model_dir, tmp_path):
    # the same model on the straight sequences only: other frames, whatever the file says otherwise
    part = tmp_path / "straight.json"
    assert main(["eval", str(world), "--scenario", "straight", "--planner", "model", "--model",
                 str(tiny_model_dir), "--quiet", "--json", str(part)]) == 0
    with pytest.raises(ExperimentError, match="scored on other frames"):
        opened.imported("straight", str(part))


def test_unreadable_files_are_named(world, tiny_model_dir, ablation_json, tmp_path, capsys):
    cut = tmp_path / "cut.json"
    cut.write_text(ablation_json.read_text()[:200])
    gone = tmp_path / "gone.json"
    listed = tmp_path / "list.json"
    listed.write_text(json.dumps([copy.deepcopy(json.loads(ablation_json.read_text()))]))
    for path, message in ((cut, "not a readable eval JSON"), (gone, "not a readable eval JSON"),
                          (listed, "missing num_samples")):
        argv = ["experiments", str(world), "--model", str(tiny_model_dir), "--tables", "5", "--quiet",
                "--out", str(tmp_path / "out"), "--ablation", f"no_alignment={path}"]
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert str(path) in err and message in err, err
